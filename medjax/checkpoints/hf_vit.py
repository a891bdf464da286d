"""Hugging Face ViT checkpoints (`ViTModel`, `ViTForImageClassification`) -> medjax `ViT` params.

Reads config.json and safetensors without torch. ViT-B/16 (Dosovitskiy et al.; e.g. the ImageNet-21k
`vit-base-patch16-224-in21k`) is medjax's `b16` preset: class token, learned positions, pre-LN blocks
with biased attention and an exact-GELU MLP, a final LayerNorm. HF adds its position table to the
class token as well; medjax adds positions to the patches only, so the class token is loaded as
`cls_token + position_embeddings[0]` (the same sum). The pooler (`pooler.dense`) and a classifier
head are unused by design. A tower with one input channel reads an RGB kernel summed over its
channels (a grey image replicated to RGB gives the same patch embeddings).
"""

import dataclasses

import flax.traverse_util
import jax.numpy as jnp
import numpy as np

from medjax.checkpoints.hf_llm import _ACTIVATIONS, _Tensors
from medjax.checkpoints.hf_siglip import (
  _abstract,
  _hf_config,
  _input_range,
  _linear,
  _norm,
  _read,
  _require,
  _to_medjax,
)
from medjax.models.vit import ViT, ViTConfig

_DEFAULTS = dict(
  hidden_size=768,
  num_hidden_layers=12,
  num_attention_heads=12,
  intermediate_size=3072,
  hidden_act="gelu",
  layer_norm_eps=1e-12,
  image_size=224,
  patch_size=16,
  num_channels=3,
  qkv_bias=True,
)
UNUSED_BY_DESIGN = ("pooler.", "classifier.")
_SPECIAL = {("cls",), ("pos_embedding",), ("patch_embed", "kernel")}  # read by hand below


def load_vit_config(path: str, **overrides) -> ViTConfig:
  """config.json of a ViTModel / ViTForImageClassification -> ViTConfig (class-token pooling)."""
  hf = {**_DEFAULTS, **{k: v for k, v in _hf_config(path, ("vit",)).items() if v is not None}}
  _require(hf, "hidden_act", _ACTIVATIONS)
  _require(hf, "qkv_bias", (True,))
  cfg = ViTConfig(
    image_size=hf["image_size"],
    patch_size=hf["patch_size"],
    channels=hf["num_channels"],
    width=hf["hidden_size"],
    depth=hf["num_hidden_layers"],
    heads=hf["num_attention_heads"],
    mlp_dim=hf["intermediate_size"],
    pool="cls",
    posemb="learn",
    act=_ACTIVATIONS[hf["hidden_act"]],
    norm_eps=hf["layer_norm_eps"],
    input_range=_input_range(path),
  )
  return dataclasses.replace(cfg, **overrides)


def _names(cfg: ViTConfig, p: str) -> list:
  out = [(("patch_embed", "bias"), f"{p}embeddings.patch_embeddings.projection.bias", None)]
  for i in range(cfg.depth):
    k, n = ("encoder", f"block_{i}"), f"{p}encoder.layer.{i}."
    for proj, name in zip("qkv", ("query", "key", "value")):
      out += _linear(k + ("attn", proj), f"{n}attention.attention.{name}", flat_bias=True)
    out += _linear(k + ("attn", "o"), f"{n}attention.output.dense", 2)
    out += _norm(k + ("ln1",), f"{n}layernorm_before") + _norm(k + ("ln2",), f"{n}layernorm_after")
    out += _linear(k + ("mlp", "up"), f"{n}intermediate.dense")
    out += _linear(k + ("mlp", "down"), f"{n}output.dense")
  return out + _norm(("encoder", "final_norm"), f"{p}layernorm")


def load_vit_params(path: str, cfg: ViTConfig, dtype=None) -> tuple[dict, tuple]:
  """-> (params of `ViT(cfg)` as host arrays, tensor names unused by design)."""
  if cfg.pool != "cls":
    raise ValueError(
      f"pool: expected 'cls' for a ViT checkpoint (its class token), got {cfg.pool!r}"
    )
  dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
  tensors = _Tensors(path)
  p = "vit." if any(n.startswith("vit.") for n in tensors.files) else ""
  expected = _abstract(ViT(cfg), jnp.zeros((1,) + cfg.input_shape))
  special = {
    p + "embeddings.cls_token",
    p + "embeddings.position_embeddings",
    p + "embeddings.patch_embeddings.projection.weight",
  }
  unused = tuple(n for n in tensors.files if n.startswith(UNUSED_BY_DESIGN))
  rest = {k: v for k, v in expected.items() if k not in _SPECIAL}
  flat = _read(tensors, _names(cfg, p), rest, dtype, p, skip=(*special, *UNUSED_BY_DESIGN))
  pos = tensors.get(p + "embeddings.position_embeddings")
  n = int(np.prod(expected[("pos_embedding",)].shape[1:2]))
  if pos.shape[1:] != (n + 1, cfg.width):
    raise ValueError(
      f"checkpoint tensor {p}embeddings.position_embeddings: expected shape (1, {n + 1}, "
      f"{cfg.width}) (class token + {n} patches), got {tuple(pos.shape)}"
    )
  pos = np.asarray(pos, np.float32)
  cls = np.asarray(tensors.get(p + "embeddings.cls_token"), np.float32) + pos[:, :1]
  flat[("cls",)] = cls.astype(dtype)
  flat[("pos_embedding",)] = pos[:, 1:].astype(dtype)
  name = p + "embeddings.patch_embeddings.projection.weight"
  kernel = tensors.get(name)
  if cfg.channels == 1 and kernel.ndim == 4 and kernel.shape[1] == 3:
    kernel = np.asarray(kernel, np.float32).sum(1, keepdims=True)
  shape = expected[("patch_embed", "kernel")].shape
  flat[("patch_embed", "kernel")] = _to_medjax(kernel, name, "conv", shape, dtype)
  return flax.traverse_util.unflatten_dict(flat), unused
