"""Hugging Face Llama-3.x / Gemma-3 text checkpoints -> `DecoderLM` config and params.

Reads `config.json` and `model.safetensors` (or a sharded `model.safetensors.index.json`) without
torch. Both the hub's config layout (`rope_theta`, `rope_scaling`, `rope_local_base_freq`,
`sliding_window_pattern`) and the transformers>=5 layout (`rope_parameters`, `layer_types`) are read.
"""

import dataclasses
import json
import os

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from medjax.checkpoints.host import LazyTensor, materialize
from medjax.data.tokenizers import HFTokenizer
from medjax.models.llm import DecoderLM, LMConfig
from medjax.parallel.sharding import strip_boxes

_ACTIVATIONS = {
  "silu": "silu",
  "gelu_pytorch_tanh": "gelu_tanh",
  "gelu_new": "gelu_tanh",
  "gelu": "gelu",
}
_ROPE_KEYS = {
  "linear": ("factor",),
  "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
_IGNORED_TENSORS = ("rotary_emb.inv_freq",)


def _read_json(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _require(hf: dict, field: str, expected, default=None):
  """Fails unless hf[field] (or `default` when absent) is in `expected`."""
  value = hf.get(field, default)
  if value not in expected:
    raise ValueError(
      f"config.json field {field!r}: expected one of {list(expected)}, got {value!r}"
    )
  return value


def _rope_scaling(params: dict | None, field: str):
  """HF rope parameters -> rope_scaling for `rope_frequencies` (None for the default rule)."""
  params = dict(params or {})
  kind = params.get("rope_type", params.get("type", "default"))
  if kind == "default":
    return None
  if kind not in _ROPE_KEYS:
    raise ValueError(
      f"config.json field '{field}.rope_type': expected one of "
      f"{['default'] + sorted(_ROPE_KEYS)}, got {kind!r}"
    )
  missing = [k for k in _ROPE_KEYS[kind] if k not in params]
  if missing:
    raise ValueError(
      f"config.json field {field!r}: rope_type {kind!r} needs {missing}, got {params}"
    )
  return {"rope_type": kind, **{k: params[k] for k in _ROPE_KEYS[kind]}}


def _global_rope(hf: dict, default_theta: float):
  """(theta, scaling) of the full-attention layers, from either config layout."""
  params = hf.get("rope_parameters")
  if isinstance(params, dict) and "full_attention" in params:
    params = params["full_attention"]
  if params is not None:
    return float(params.get("rope_theta", default_theta)), _rope_scaling(params, "rope_parameters")
  return float(hf.get("rope_theta", default_theta)), _rope_scaling(
    hf.get("rope_scaling"), "rope_scaling"
  )


def _global_every(layer_types: list[str]) -> int | None:
  """Gemma-3 `layer_types` -> LMConfig.global_every (0: all local; None: all global)."""
  kinds = {"sliding_attention": True, "full_attention": False}
  for t in layer_types:
    if t not in kinds:
      raise ValueError(
        f"config.json field 'layer_types': expected entries in {sorted(kinds)}, got {t!r}"
      )
  local = [kinds[t] for t in layer_types]
  if all(local):
    return 0
  if not any(local):
    return None
  n = local.index(False) + 1
  if local != [(i + 1) % n != 0 for i in range(len(local))]:
    raise ValueError(
      f"config.json field 'layer_types': expected every n-th layer to be global, got {layer_types}"
    )
  return n


def _common_fields(hf: dict) -> dict:
  heads = hf["num_attention_heads"]
  return dict(
    vocab_size=hf["vocab_size"],
    embed_dim=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=heads,
    num_kv_heads=hf.get("num_key_value_heads") or heads,
    head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
    mlp_dim=hf["intermediate_size"],
    max_seq_len=hf.get("max_position_embeddings", 8192),
  )


def _llama_fields(hf: dict) -> dict:
  _require(hf, "attention_bias", (False,), False)
  _require(hf, "mlp_bias", (False,), False)
  act = _require(hf, "hidden_act", _ACTIVATIONS, "silu")
  theta, scaling = _global_rope(hf, 10_000.0)
  return dict(
    activation=_ACTIVATIONS[act],
    norm_eps=hf.get("rms_norm_eps", 1e-6),
    rope_theta=theta,
    rope_scaling=scaling,
    tie_embeddings=hf.get("tie_word_embeddings", False),
  )


def _gemma3_fields(hf: dict) -> dict:
  _require(hf, "attention_bias", (False,), False)
  _require(hf, "use_bidirectional_attention", (False, None), False)
  act = _require(hf, "hidden_activation", _ACTIVATIONS, hf.get("hidden_act", "gelu_pytorch_tanh"))
  theta, scaling = _global_rope(hf, 1_000_000.0)
  local = (hf.get("rope_parameters") or {}).get("sliding_attention")
  if local is not None:
    if _rope_scaling(local, "rope_parameters.sliding_attention") is not None:
      raise ValueError(
        f"config.json field 'rope_parameters.sliding_attention': expected the default rope_type, "
        f"got {local}"
      )
    local_theta = float(local.get("rope_theta", 10_000.0))
  else:
    local_theta = float(hf.get("rope_local_base_freq", 10_000.0))
  layers = hf["num_hidden_layers"]
  layer_types = hf.get("layer_types")
  if layer_types is None:
    pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
    layer_types = [
      "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)
    ]
  if len(layer_types) != layers:
    raise ValueError(
      f"config.json field 'layer_types': expected {layers} entries, got {len(layer_types)}"
    )
  global_every = _global_every(layer_types)
  window = hf.get("sliding_window") if global_every is not None else None
  return dict(
    activation=_ACTIVATIONS[act],
    norm_eps=hf.get("rms_norm_eps", 1e-6),
    norm_zero_centered=True,
    post_norms=True,
    qk_norm=True,
    rope_theta=theta,
    rope_scaling=scaling,
    rope_local_theta=local_theta,
    sliding_window=window,
    global_every=global_every or 0,
    query_scale=float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
    # transformers' Gemma-3 attention never applies attn_logit_softcapping (null in Google's configs).
    attn_softcap=None,
    final_softcap=hf.get("final_logit_softcapping"),
    tie_embeddings=hf.get("tie_word_embeddings", True),
    scale_embeddings=True,
  )


_ARCHITECTURES = {"llama": _llama_fields, "gemma3_text": _gemma3_fields}


def load_hf_config(path: str, **overrides) -> LMConfig:
  """`path`/config.json of a Llama-3.x or Gemma-3 text model -> LMConfig (`overrides` replace fields,
  e.g. dtype="bfloat16", scan_layers=True)."""
  file = os.path.join(path, "config.json")
  if not os.path.exists(file):
    raise ValueError(f"path: expected a checkpoint directory containing config.json, got {path!r}")
  hf = _read_json(file)
  model_type = hf.get("model_type")
  if model_type not in _ARCHITECTURES:
    raise ValueError(
      f"config.json field 'model_type': expected one of {sorted(_ARCHITECTURES)}, got "
      f"{model_type!r} (architectures={hf.get('architectures')})"
    )
  fields = {**_common_fields(hf), **_ARCHITECTURES[model_type](hf)}
  return dataclasses.replace(LMConfig(**fields), **overrides)


# ---------------------------------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------------------------------
class _Tensors:
  """Lazy access to the tensors of a single-file or sharded safetensors checkpoint, as numpy arrays."""

  def __init__(self, path: str, stem: str = "model"):
    index = os.path.join(path, f"{stem}.safetensors.index.json")
    single = os.path.join(path, f"{stem}.safetensors")
    if os.path.exists(index):
      self.files = {k: os.path.join(path, f) for k, f in _read_json(index)["weight_map"].items()}
    elif os.path.exists(single):
      with safe_open(single, "np") as f:
        self.files = dict.fromkeys(f.keys(), single)
    else:
      raise ValueError(
        f"path: expected {stem}.safetensors or {stem}.safetensors.index.json in {path!r}"
      )
    self._open = {}

  def _file(self, name: str):
    if name not in self.files:
      raise ValueError(f"checkpoint: expected a tensor named {name!r}, not found")
    file = self.files[name]
    if file not in self._open:
      # The numpy backend has no bfloat16; the flax one does. Keep the arrays on the host.
      self._open[file] = safe_open(file, "flax")
    return self._open[file]

  def shape(self, name: str) -> tuple:
    """From the file's header: nothing is read."""
    return tuple(self._file(name).get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    f = self._file(name)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      return np.asarray(f.get_tensor(name))


def _layer_names(cfg: LMConfig) -> dict:
  """medjax param path (inside one layer) -> (HF tensor name suffix, layout).

  layout None: copied as is; n > 0: an nn.Linear weight [out, in] whose medjax kernel has n leading
  input axes (1 for [embed, heads, head_dim], 2 for the output projection [heads, head_dim, embed]).
  """
  names = {
    ("attn", "q", "kernel"): ("self_attn.q_proj.weight", 1),
    ("attn", "k", "kernel"): ("self_attn.k_proj.weight", 1),
    ("attn", "v", "kernel"): ("self_attn.v_proj.weight", 1),
    ("attn", "o", "kernel"): ("self_attn.o_proj.weight", 2),
    ("mlp", "gate", "kernel"): ("mlp.gate_proj.weight", 1),
    ("mlp", "up", "kernel"): ("mlp.up_proj.weight", 1),
    ("mlp", "down", "kernel"): ("mlp.down_proj.weight", 1),
    ("attn_norm", "scale"): ("input_layernorm.weight", None),
  }
  if cfg.post_norms:  # Gemma: post_attention_layernorm is applied to the attention output
    names[("attn_post_norm", "scale")] = ("post_attention_layernorm.weight", None)
    names[("mlp_norm", "scale")] = ("pre_feedforward_layernorm.weight", None)
    names[("mlp_post_norm", "scale")] = ("post_feedforward_layernorm.weight", None)
  else:  # Llama: post_attention_layernorm is the pre-MLP norm
    names[("mlp_norm", "scale")] = ("post_attention_layernorm.weight", None)
  if cfg.qk_norm:
    names[("attn", "q_norm", "scale")] = ("self_attn.q_norm.weight", None)
    names[("attn", "k_norm", "scale")] = ("self_attn.k_norm.weight", None)
  return names


def _check_shape(got: tuple, name: str, n_in: int | None, shape: tuple):
  want = tuple(shape) if n_in is None else (int(np.prod(shape[n_in:])), int(np.prod(shape[:n_in])))
  if tuple(got) != want:
    raise ValueError(
      f"checkpoint tensor {name!r}: expected shape {want} for the config, got {tuple(got)}"
    )


def _convert(w: np.ndarray, name: str, n_in: int | None, shape: tuple, dtype) -> np.ndarray:
  """An HF tensor -> the medjax layout `shape` (see `_layer_names` for `n_in`)."""
  _check_shape(w.shape, name, n_in, shape)
  w = w if n_in is None else w.T
  return np.ascontiguousarray(w.reshape(shape)).astype(dtype)


def _abstract_params(cfg: LMConfig) -> dict:
  init = lambda: DecoderLM(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"]
  return flax.traverse_util.flatten_dict(strip_boxes(jax.eval_shape(init)))


def load_hf_params(path: str, cfg: LMConfig, dtype=None, lazy: bool = False) -> dict:
  """Reads the safetensors weights in `path` into the param tree of `DecoderLM(cfg)` (layers stacked
  under layers/layer when cfg.scan_layers). `dtype` defaults to cfg.param_dtype.

  `lazy`: every name and shape is checked from the files' headers, and the leaves are
  `LazyTensor`s that read (and stack) their tensors only when materialised."""
  dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
  expected = _abstract_params(cfg)
  tensors = _Tensors(path)
  used = set()

  def read(key, name, n_in, layer_axis=False):
    if key not in expected:
      raise ValueError(f"checkpoint tensor {name!r}: DecoderLM has no param {'/'.join(key)}")
    used.add(name)
    shape = expected[key].shape[1:] if layer_axis else expected[key].shape
    if lazy:
      _check_shape(tensors.shape(name), name, n_in, shape)
      return LazyTensor(tuple(shape), lambda: _convert(tensors.get(name), name, n_in, shape, dtype))
    return _convert(tensors.get(name), name, n_in, shape, dtype)

  def stack(parts):
    if not lazy:
      return np.stack(parts)
    return LazyTensor((len(parts),) + parts[0].shape, lambda: np.stack([p.read() for p in parts]))

  flat = {
    ("embed", "embedding"): read(("embed", "embedding"), "model.embed_tokens.weight", None),
    ("final_norm", "scale"): read(("final_norm", "scale"), "model.norm.weight", None),
  }
  if not cfg.tie_embeddings:
    flat[("head", "kernel")] = read(("head", "kernel"), "lm_head.weight", 1)
  for sub, (suffix, n_in) in _layer_names(cfg).items():
    if cfg.scan_layers:
      key = ("layers", "layer") + sub
      flat[key] = stack(
        [
          read(key, f"model.layers.{i}.{suffix}", n_in, layer_axis=True)
          for i in range(cfg.num_layers)
        ]
      )
    else:
      for i in range(cfg.num_layers):
        flat[(f"layer_{i}",) + sub] = read(
          (f"layer_{i}",) + sub, f"model.layers.{i}.{suffix}", n_in
        )
  if (
    cfg.tie_embeddings and "lm_head.weight" in tensors.files
  ):  # tolerated only as a copy of the embedding
    head = _convert(
      tensors.get("lm_head.weight"),
      "lm_head.weight",
      None,
      flat[("embed", "embedding")].shape,
      dtype,
    )
    if np.array_equal(head, materialize(flat[("embed", "embedding")])):
      used.add("lm_head.weight")
  unused = sorted(n for n in set(tensors.files) - used if not n.endswith(_IGNORED_TENSORS))
  if unused:
    raise ValueError(
      f"checkpoint: {len(unused)} tensors have no place in the config, e.g. {unused[:5]}"
    )
  missing = sorted("/".join(k) for k in set(expected) - set(flat))
  if missing:
    raise ValueError(f"checkpoint: the model expects params that were not read: {missing[:5]}")
  return flax.traverse_util.unflatten_dict(flat)  # host arrays: callers place them


def load_hf_model(path: str, **overrides):
  """-> (DecoderLM, params, tokenizer) from a HF checkpoint directory; the tokenizer is an
  HFTokenizer when `path` holds tokenizer.json, else None. `overrides` replace LMConfig fields."""
  cfg = load_hf_config(path, **overrides)
  params = jax.device_put(load_hf_params(path, cfg))  # on the default device, for inference
  tokenizer = (
    HFTokenizer.from_dir(path) if os.path.exists(os.path.join(path, "tokenizer.json")) else None
  )
  return DecoderLM(cfg), params, tokenizer
