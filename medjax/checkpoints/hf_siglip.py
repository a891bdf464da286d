"""Hugging Face SigLIP checkpoints -> medjax `ViT` / `TwoTower` configs and params.

Reads `config.json` and safetensors as `SiglipVisionModel` (vision tower) or `SiglipModel` (both towers,
logit scale and bias) save them, without torch. The layouts match one to one: patch conv + learned
position table, pre-LN blocks with biased attention and a GELU-tanh MLP, a final LayerNorm and the MAP
head (`vision_use_head`). The text tower pools the last position (SigLIP pads to max length; call it
without `input_mask`) and projects with `text_model.head` (TwoTower's `txt_head`). SigLIP has no image
projection, so TwoTower's `img_head` is loaded as the identity; `logit_scale` is TwoTower's `t_prime`.
"""

import dataclasses
import os

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from medjax.checkpoints.hf_llm import _ACTIVATIONS, _convert, _read_json, _require, _Tensors
from medjax.models.text_tower import TextConfig, TwoTower
from medjax.models.vit import ViT, ViTConfig
from medjax.parallel.sharding import strip_boxes

# transformers' defaults: hub configs often list only the fields that differ from them.
_VISION_DEFAULTS = dict(
  hidden_size=768,
  intermediate_size=3072,
  num_hidden_layers=12,
  num_attention_heads=12,
  num_channels=3,
  image_size=224,
  patch_size=16,
  hidden_act="gelu_pytorch_tanh",
  layer_norm_eps=1e-6,
  vision_use_head=True,
)
_TEXT_DEFAULTS = dict(
  vocab_size=32000,
  hidden_size=768,
  intermediate_size=3072,
  num_hidden_layers=12,
  num_attention_heads=12,
  max_position_embeddings=64,
  hidden_act="gelu_pytorch_tanh",
  layer_norm_eps=1e-6,
)
_MODEL_TYPES = ("siglip", "siglip_vision_model")
_IGNORED_TENSORS = ("position_ids",)


def _hf_config(path: str, model_types=_MODEL_TYPES) -> dict:
  """`path`/config.json, whose model_type must be one of `model_types`."""
  file = os.path.join(path, "config.json")
  if not os.path.exists(file):
    raise ValueError(f"path: expected a checkpoint directory containing config.json, got {path!r}")
  hf = _read_json(file)
  _require(hf, "model_type", model_types)
  return hf


def _section(hf: dict, name: str, defaults: dict) -> dict:
  """The vision/text section of a SiglipModel config (or the vision model's own config), with defaults."""
  section = hf if hf["model_type"] == "siglip_vision_model" else (hf.get(name) or {})
  section = {**defaults, **{k: v for k, v in section.items() if v is not None}}
  _require(section, "hidden_act", _ACTIVATIONS)
  return section


def load_siglip_vision_config(path: str, **overrides) -> ViTConfig:
  """config.json of a SiglipVisionModel or SiglipModel -> ViTConfig (`overrides` replace fields)."""
  hf = _section(_hf_config(path), "vision_config", _VISION_DEFAULTS)
  cfg = ViTConfig(
    image_size=hf["image_size"],
    patch_size=hf["patch_size"],
    channels=hf["num_channels"],
    width=hf["hidden_size"],
    depth=hf["num_hidden_layers"],
    heads=hf["num_attention_heads"],
    mlp_dim=hf["intermediate_size"],
    pool="map" if hf["vision_use_head"] else "none",
    posemb="learn",
    act=_ACTIVATIONS[hf["hidden_act"]],
    norm_eps=hf["layer_norm_eps"],
    input_range=_input_range(path),
  )
  return dataclasses.replace(cfg, **overrides)


def _input_range(path: str) -> tuple:
  """The pixel range the weights expect: [0, 1] normalised by preprocessor_config.json's mean / std
  (one value for every channel), SigLIP's (-1, 1) without that file."""
  file = os.path.join(path, "preprocessor_config.json")
  proc = _read_json(file) if os.path.exists(file) else {}
  mean, std = proc.get("image_mean", [0.5]), proc.get("image_std", [0.5])
  if len(set(mean)) != 1 or len(set(std)) != 1:
    raise ValueError(
      f"preprocessor_config.json: expected one image_mean and image_std for every channel, got "
      f"{mean} / {std} ({path})"
    )
  return ((0.0 - mean[0]) / std[0], (1.0 - mean[0]) / std[0])


def load_siglip_text_config(path: str, **overrides) -> tuple[TextConfig, int]:
  """config.json of a SiglipModel -> (TextConfig, embed_dim = text_config.projection_size)."""
  hf = _hf_config(path)
  if hf["model_type"] != "siglip":
    raise ValueError(
      f"config.json field 'model_type': expected 'siglip' (a SiglipModel with a text tower), "
      f"got {hf['model_type']!r}"
    )
  t = _section(hf, "text_config", _TEXT_DEFAULTS)
  cfg = TextConfig(
    vocab_size=t["vocab_size"],
    max_len=t["max_position_embeddings"],
    width=t["hidden_size"],
    depth=t["num_hidden_layers"],
    heads=t["num_attention_heads"],
    mlp_dim=t["intermediate_size"],
    pool="last",
    act=_ACTIVATIONS[t["hidden_act"]],
    norm_eps=t["layer_norm_eps"],
  )
  return dataclasses.replace(cfg, **overrides), int(t.get("projection_size") or t["hidden_size"])


# ---------------------------------------------------------------------------------------------------
# Parameters: (medjax key, HF tensor name, layout) triples.
# Layouts: None copies; "flat" reshapes a tensor of the same size (biases [E] -> [heads, head_dim]);
# n > 0 is an nn.Linear weight [out, in] (see hf_llm._layer_names); "conv" is a Conv2d weight
# [D, C, ph, pw] -> [ph, pw, C, D]; ("fused", i, layout) takes block i of a fused q/k/v tensor.
# ---------------------------------------------------------------------------------------------------
def _linear(key, name, n_in=1, flat_bias=False):
  bias = "flat" if flat_bias else None
  return [(key + ("kernel",), f"{name}.weight", n_in), (key + ("bias",), f"{name}.bias", bias)]


def _norm(key, name):
  return [(key + ("scale",), f"{name}.weight", None), (key + ("bias",), f"{name}.bias", None)]


def _mlp(key, name):
  return _linear(key + ("up",), f"{name}.fc1") + _linear(key + ("down",), f"{name}.fc2")


def _encoder_names(key, prefix, depth, final_norm):
  out = []
  for i in range(depth):
    k, n = key + (f"block_{i}",), f"{prefix}encoder.layers.{i}."
    for proj in "qkv":
      out += _linear(k + ("attn", proj), f"{n}self_attn.{proj}_proj", flat_bias=True)
    out += _linear(k + ("attn", "o"), f"{n}self_attn.out_proj", 2)
    out += _norm(k + ("ln1",), f"{n}layer_norm1") + _norm(k + ("ln2",), f"{n}layer_norm2")
    out += _mlp(k + ("mlp",), f"{n}mlp")
  return out + _norm(key + ("final_norm",), f"{prefix}{final_norm}")


def _vision_names(cfg: ViTConfig, key: tuple, prefix: str) -> list:
  out = [
    (key + ("patch_embed", "kernel"), f"{prefix}embeddings.patch_embedding.weight", "conv"),
    (key + ("patch_embed", "bias"), f"{prefix}embeddings.patch_embedding.bias", None),
    (key + ("pos_embedding",), f"{prefix}embeddings.position_embedding.weight", "flat"),
  ]
  out += _encoder_names(key + ("encoder",), prefix, cfg.depth, "post_layernorm")
  if cfg.pool == "map":
    h, n = key + ("head",), f"{prefix}head."
    out.append((h + ("probe",), f"{n}probe", None))
    for i, proj in enumerate("qkv"):
      out += [
        (h + ("attn", proj, "kernel"), f"{n}attention.in_proj_weight", ("fused", i, 1)),
        (h + ("attn", proj, "bias"), f"{n}attention.in_proj_bias", ("fused", i, "flat")),
      ]
    out += _linear(h + ("attn", "o"), f"{n}attention.out_proj", 2)
    out += _norm(h + ("ln",), f"{n}layernorm") + _mlp(h + ("mlp",), f"{n}mlp")
  elif cfg.pool != "none":
    raise ValueError(
      f"pool: expected 'map' (vision_use_head) or 'none' for a SigLIP checkpoint, got {cfg.pool!r}"
    )
  return out


def _text_names(cfg: TextConfig) -> list:
  p = "text_model."
  out = [
    (("txt", "embed", "embedding"), f"{p}embeddings.token_embedding.weight", None),
    (("txt", "pos_embedding"), f"{p}embeddings.position_embedding.weight", None),
  ]
  out += _encoder_names(("txt", "encoder"), p, cfg.depth, "final_layer_norm")
  return out + _linear(("txt_head",), f"{p}head")


def _to_medjax(w: np.ndarray, name: str, layout, shape: tuple, dtype) -> np.ndarray:
  if isinstance(layout, tuple):  # ("fused", i, layout): block i of 3 along the first axis
    _, i, layout = layout
    if w.shape[0] % 3:
      raise ValueError(
        f"checkpoint tensor {name!r}: expected a fused q/k/v tensor (first axis a multiple of 3), "
        f"got shape {tuple(w.shape)}"
      )
    n = w.shape[0] // 3
    w, name = w[i * n : (i + 1) * n], f"{name}[{'qkv'[i]}]"
  if layout == "conv":
    if w.ndim != 4:
      raise ValueError(
        f"checkpoint tensor {name!r}: expected a Conv2d weight [out, in, ph, pw], got {w.shape}"
      )
    return _convert(w.transpose(2, 3, 1, 0), name, None, shape, dtype)
  if layout == "flat":
    if w.size != int(np.prod(shape)):
      raise ValueError(
        f"checkpoint tensor {name!r}: expected {int(np.prod(shape))} values (for shape {shape}), "
        f"got shape {tuple(w.shape)}"
      )
    return np.array(w.reshape(shape), dtype)  # (ascontiguousarray would turn a scalar into [1])
  return _convert(w, name, layout, shape, dtype)


def _abstract(module, *inputs) -> dict:
  init = lambda: module.init(jax.random.PRNGKey(0), *inputs)["params"]
  return flax.traverse_util.flatten_dict(strip_boxes(jax.eval_shape(init)))


def _read(tensors: _Tensors, names: list, expected: dict, dtype, scope: str, skip=()) -> dict:
  """Reads `names` into a flat param dict; every param of `expected` and every tensor under `scope`
  (but those starting with a `skip` prefix) is used."""
  flat, used = {}, set()
  for key, name, layout in names:
    if key not in expected:
      raise ValueError(f"checkpoint tensor {name!r}: the model has no param {'/'.join(key)}")
    flat[key] = _to_medjax(tensors.get(name), name, layout, expected[key].shape, dtype)
    used.add(name)
  unused = sorted(
    n
    for n in tensors.files
    if n.startswith(scope)
    and n not in used
    and not n.endswith(_IGNORED_TENSORS)
    and not n.startswith(tuple(skip))
  )
  if unused:
    raise ValueError(
      f"checkpoint: {len(unused)} tensors have no place in the config, e.g. {unused[:5]}"
    )
  missing = sorted("/".join(k) for k in set(expected) - set(flat))
  if missing:
    raise ValueError(f"checkpoint: the model expects params that were not read: {missing[:5]}")
  return flat


def _vision_prefix(tensors: _Tensors) -> str:
  """SiglipModel and older SiglipVisionModel files nest the tower under `vision_model.`."""
  return "vision_model." if any(n.startswith("vision_model.") for n in tensors.files) else ""


def load_siglip_vision_params(path: str, cfg: ViTConfig, dtype=None) -> dict:
  """The vision tower of a SiglipVisionModel or SiglipModel checkpoint -> params of `ViT(cfg)`.
  `dtype` defaults to cfg.param_dtype. A 3D encoder can then be made with `inflate_2d_to_3d`."""
  dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
  tensors = _Tensors(path)
  prefix = _vision_prefix(tensors)
  expected = _abstract(ViT(cfg), jnp.zeros((1,) + cfg.input_shape))
  flat = _read(tensors, _vision_names(cfg, (), prefix), expected, dtype, prefix)
  return flax.traverse_util.unflatten_dict(flat)  # host arrays: callers place them


def load_siglip_params(
  path: str, vision: ViTConfig, text: TextConfig, embed_dim: int, dtype=None
) -> dict:
  """A SiglipModel checkpoint -> params of `TwoTower(vision, text, embed_dim)`."""
  if vision.width != embed_dim:
    raise ValueError(
      f"embed_dim: SigLIP has no image projection, so expected the vision width {vision.width}, "
      f"got {embed_dim}"
    )
  dtype = np.dtype(jnp.dtype(dtype or vision.param_dtype))
  tensors = _Tensors(path)
  model = TwoTower(vision, text, embed_dim)
  expected = _abstract(
    model, jnp.zeros((1,) + vision.input_shape), jnp.zeros((1, text.max_len), jnp.int32)
  )
  names = _vision_names(vision, ("img",), "vision_model.") + _text_names(text)
  names += [(("t_prime",), "logit_scale", "flat"), (("bias",), "logit_bias", "flat")]
  flat = {
    ("img_head", "kernel"): np.eye(embed_dim, dtype=dtype),
    ("img_head", "bias"): np.zeros(embed_dim, dtype),
  }
  flat.update(
    _read(tensors, names, {k: v for k, v in expected.items() if k[0] != "img_head"}, dtype, "")
  )
  return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def load_siglip_model(path: str, dtype: str = "float32"):
  """-> (module, params): `ViT` for a SiglipVisionModel directory, `TwoTower` for a SiglipModel one.
  `dtype` is the compute dtype of every tower (params stay float32)."""
  vision = load_siglip_vision_config(path, dtype=dtype)
  if _hf_config(path)["model_type"] == "siglip_vision_model":
    return ViT(vision), jax.device_put(load_siglip_vision_params(path, vision))
  text, embed_dim = load_siglip_text_config(path, dtype=dtype)
  return TwoTower(vision, text, embed_dim), load_siglip_params(path, vision, text, embed_dim)
