"""Hugging Face BERT checkpoints (BertModel, BertForMaskedLM, ...) -> medjax `Bert` configs and params.

Reads `config.json` and safetensors without torch. The layouts match one to one: word, position and
token-type tables and their LayerNorm, then per layer q/k/v/output projections with biases, the
post-attention LayerNorm, the exact-GELU MLP (`intermediate` / `output`) and its LayerNorm. Heads
the encoder does not use (`pooler.*`, a masked-LM `cls.*`) are returned as unused by design.
"""

import dataclasses

import flax.traverse_util
import jax.numpy as jnp
import numpy as np

from medjax.checkpoints.hf_llm import _ACTIVATIONS, _require, _Tensors
from medjax.checkpoints.hf_siglip import _abstract, _hf_config, _linear, _norm, _read
from medjax.models.bert import Bert, BertConfig

_DEFAULTS = dict(
  vocab_size=30_522,
  hidden_size=768,
  num_hidden_layers=12,
  num_attention_heads=12,
  intermediate_size=3072,
  hidden_act="gelu",
  max_position_embeddings=512,
  type_vocab_size=2,
  layer_norm_eps=1e-12,
  position_embedding_type="absolute",
)
UNUSED_HEADS = ("pooler.", "cls.")  # the [CLS] pooler and masked-LM head: not part of the encoder


def load_bert_config(path: str, **overrides) -> BertConfig:
  """config.json of a BERT-family checkpoint -> BertConfig (`overrides` replace fields)."""
  hf = {**_DEFAULTS, **{k: v for k, v in _hf_config(path, ("bert",)).items() if v is not None}}
  _require(hf, "position_embedding_type", ("absolute",))
  _require(hf, "hidden_act", ("gelu",))
  cfg = BertConfig(
    vocab_size=hf["vocab_size"],
    width=hf["hidden_size"],
    depth=hf["num_hidden_layers"],
    heads=hf["num_attention_heads"],
    mlp_dim=hf["intermediate_size"],
    max_len=hf["max_position_embeddings"],
    type_vocab_size=hf["type_vocab_size"],
    act=_ACTIVATIONS[hf["hidden_act"]],
    norm_eps=hf["layer_norm_eps"],
  )
  return dataclasses.replace(cfg, **overrides)


def _names(cfg: BertConfig, prefix: str) -> list:
  e = f"{prefix}embeddings."
  out = [
    (("embed", "embedding"), f"{e}word_embeddings.weight", None),
    (("type_embedding",), f"{e}token_type_embeddings.weight", None),
  ]
  out += _norm(("embed_norm",), f"{e}LayerNorm")
  for i in range(cfg.depth):
    k, n = (f"layer_{i}",), f"{prefix}encoder.layer.{i}."
    for proj, hf in zip("qkv", ("query", "key", "value")):
      out += _linear(k + ("attn", proj), f"{n}attention.self.{hf}", flat_bias=True)
    out += _linear(k + ("attn", "o"), f"{n}attention.output.dense", 2)
    out += _norm(k + ("ln_attn",), f"{n}attention.output.LayerNorm")
    out += _linear(k + ("mlp", "up"), f"{n}intermediate.dense")
    out += _linear(k + ("mlp", "down"), f"{n}output.dense")
    out += _norm(k + ("ln_mlp",), f"{n}output.LayerNorm")
  return out


def load_bert_params(path: str, cfg: BertConfig, dtype=None) -> tuple[dict, tuple]:
  """-> (host params of `Bert(cfg)`, names of the checkpoint's unused-by-design head tensors).

  A `cfg.max_len` below the checkpoint's max_position_embeddings keeps the first max_len rows of
  its position table (the positions a shorter input uses)."""
  dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
  tensors = _Tensors(path)
  # BertModel saves its tensors at the top level; BertFor* models nest the encoder under `bert.`.
  prefix = "bert." if any(n.startswith("bert.") for n in tensors.files) else ""
  heads = tuple(sorted(n for n in tensors.files if n.startswith(UNUSED_HEADS)))
  expected = _abstract(Bert(cfg), jnp.zeros((1, 1), jnp.int32))
  pos_key, pos_name = ("pos_embedding",), f"{prefix}embeddings.position_embeddings.weight"
  want = expected.pop(pos_key).shape
  flat = _read(tensors, _names(cfg, prefix), expected, dtype, prefix, (*UNUSED_HEADS, pos_name))
  pos = tensors.get(pos_name)
  if pos.ndim != 2 or pos.shape[0] < want[0] or pos.shape[1] != want[1]:
    raise ValueError(
      f"checkpoint tensor {pos_name!r}: expected at least {want[0]} positions of width {want[1]} "
      f"(text.max_len, text.width), got shape {tuple(pos.shape)}"
    )
  flat[pos_key] = np.ascontiguousarray(pos[: want[0]]).astype(dtype)
  return flax.traverse_util.unflatten_dict(flat), heads
