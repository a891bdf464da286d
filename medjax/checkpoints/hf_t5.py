"""Hugging Face T5 (v1.1) checkpoints -> `T5Encoder`, and a caption encoder with its tokenizer.

Reads `config.json` and `model.safetensors` (or a sharded index) without torch, from a `T5EncoderModel`
or a full `T5ForConditionalGeneration` directory (its decoder and LM head are skipped).
"""

import dataclasses
import os
from collections.abc import Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from medjax import config_lib
from medjax.checkpoints.hf_llm import _ACTIVATIONS, _convert, _read_json, _require, _Tensors
from medjax.data.captions import preprocess_caption
from medjax.data.tokenizers import HFTokenizer
from medjax.models.t5 import T5Config, T5Encoder
from medjax.parallel.sharding import strip_boxes

_SKIPPED = ("decoder.", "lm_head.")
_EMBED_NAMES = ("shared.weight", "encoder.embed_tokens.weight")
# medjax param path inside block_i -> (HF name suffix after encoder.block.{i}., n_in for `_convert`).
_BLOCK = {
  ("attn_norm", "scale"): ("layer.0.layer_norm.weight", None),
  ("attn", "q", "kernel"): ("layer.0.SelfAttention.q.weight", 1),
  ("attn", "k", "kernel"): ("layer.0.SelfAttention.k.weight", 1),
  ("attn", "v", "kernel"): ("layer.0.SelfAttention.v.weight", 1),
  ("attn", "o", "kernel"): ("layer.0.SelfAttention.o.weight", 2),
  ("mlp_norm", "scale"): ("layer.1.layer_norm.weight", None),
  ("mlp", "gate", "kernel"): ("layer.1.DenseReluDense.wi_0.weight", 1),
  ("mlp", "up", "kernel"): ("layer.1.DenseReluDense.wi_1.weight", 1),
  ("mlp", "down", "kernel"): ("layer.1.DenseReluDense.wo.weight", 1),
}
_TOP = {
  ("relative_attention_bias",): (
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    None,
  ),
  ("final_norm", "scale"): ("encoder.final_layer_norm.weight", None),
}


def load_t5_config(path: str, **overrides) -> T5Config:
  """`path`/config.json of a T5 v1.1 model -> T5Config (`overrides` replace fields, e.g. dtype="bfloat16")."""
  file = os.path.join(path, "config.json")
  if not os.path.exists(file):
    raise ValueError(f"path: expected a checkpoint directory containing config.json, got {path!r}")
  hf = _read_json(file)
  _require(hf, "model_type", ("t5",))
  proj = hf.get("feed_forward_proj", "relu")
  act = proj.split("-", 1)[-1]
  act = "gelu_new" if proj == "gated-gelu" else act  # transformers' alias: gated-gelu is GELU-tanh
  if not proj.startswith("gated-") or act not in _ACTIVATIONS:
    raise ValueError(
      f"config.json field 'feed_forward_proj': expected a gated activation "
      f"{['gated-gelu'] + ['gated-' + a for a in _ACTIVATIONS]}, got {proj!r}"
    )
  fields = dict(
    vocab_size=hf["vocab_size"],
    d_model=hf["d_model"],
    d_kv=hf["d_kv"],
    num_heads=hf["num_heads"],
    d_ff=hf["d_ff"],
    num_layers=hf["num_layers"],
    relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
    relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
    layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
    activation=_ACTIVATIONS[act],
  )
  return dataclasses.replace(T5Config(**fields), **overrides)


def _hf_names(cfg: T5Config) -> dict:
  """medjax param path -> (HF tensor name, n_in), the embedding excepted."""
  names = dict(_TOP)
  for i in range(cfg.num_layers):
    names.update(
      {(f"block_{i}",) + k: (f"encoder.block.{i}.{s}", n) for k, (s, n) in _BLOCK.items()}
    )
  return names


def load_t5_params(path: str, cfg: T5Config, dtype=None) -> dict:
  """Reads the safetensors weights in `path` into `T5Encoder(cfg)`'s params (dtype: cfg.param_dtype)."""
  dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
  init = lambda: T5Encoder(cfg).init(
    jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1))
  )
  expected = flax.traverse_util.flatten_dict(strip_boxes(jax.eval_shape(init))["params"])
  tensors = _Tensors(path)
  present = [n for n in _EMBED_NAMES if n in tensors.files]
  if not present:
    raise ValueError(f"checkpoint: expected a tensor named one of {list(_EMBED_NAMES)}, not found")
  embeds = [_convert(tensors.get(n), n, None, expected[("embed",)].shape, dtype) for n in present]
  if len(embeds) == 2 and not np.array_equal(*embeds):
    raise ValueError(
      f"checkpoint: {_EMBED_NAMES[0]!r} and {_EMBED_NAMES[1]!r} differ; expected tied embeddings"
    )
  flat = {("embed",): embeds[0]}
  for key, (name, n_in) in _hf_names(cfg).items():
    flat[key] = _convert(tensors.get(name), name, n_in, expected[key].shape, dtype)
  used = set(present) | {n for n, _ in _hf_names(cfg).values()}
  unused = sorted(n for n in set(tensors.files) - used if not n.startswith(_SKIPPED))
  if unused:
    raise ValueError(
      f"checkpoint: {len(unused)} tensors have no place in the config, e.g. {unused[:5]}"
    )
  return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


class T5TextEncoder:
  """Captions -> (embeddings [N, max_len, d_model] float32, mask [N, max_len] int32), tokenized as Open-Sora's
  T5 embedder: cleaned and lower-cased (`medjax.data.captions.preprocess_caption`) when `clean`,
  truncated to max_len - 1 tokens, then eos, right-padded with pad."""

  def __init__(self, model: T5Encoder, params, tokenizer, max_len: int, clean: bool = True):
    if max_len < 2:
      raise ValueError(f"max_len: expected at least 2 (a token and eos), got {max_len}")
    self.model, self.params, self.tokenizer, self.max_len = model, params, tokenizer, max_len
    self.clean = clean
    self._apply = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask))

  @property
  def width(self) -> int:
    return self.model.config.d_model

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(captions, str) or not len(captions):
      raise ValueError(f"captions: expected a non-empty list of strings, got {captions!r}")
    tok, n = self.tokenizer, self.max_len
    ids, mask = (
      np.full((len(captions), n), tok.pad_id, np.int32),
      np.zeros((len(captions), n), np.int32),
    )
    for i, text in enumerate(captions):
      row = tok.encode(preprocess_caption(text) if self.clean else text)[: n - 1] + [tok.eos_id]
      ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask

  def __call__(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = self.tokenize(captions)
    return np.asarray(self._apply(self.params, ids, mask), np.float32), mask


def t5_directory(source: str) -> str:
  """The directory of a T5 encoder source: `hf:DIR` (training's init syntax) or a bare DIR."""
  fmt, sep, rest = source.partition(":")
  if sep and fmt == "hf":
    return rest
  if sep and fmt in config_lib.INIT_FORMATS:
    raise ValueError(f"text_encoder: expected hf:DIR or a T5 directory, got {source!r}")
  return source


def load_t5_encoder(
  path: str, max_len: int = 120, clean: bool = True, **overrides
) -> T5TextEncoder:
  """A `T5TextEncoder` from a HF T5 directory holding tokenizer.json, given as DIR or hf:DIR
  (Open-Sora: 120 tokens, captions cleaned)."""
  path = t5_directory(path)
  cfg = load_t5_config(path, **overrides)
  return T5TextEncoder(
    T5Encoder(cfg), load_t5_params(path, cfg), HFTokenizer.from_dir(path), max_len, clean
  )
