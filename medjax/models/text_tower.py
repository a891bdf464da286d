"""A small bidirectional text encoder and the SigLIP two-tower model built on it and the ViT."""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.vit import ViT, ViTConfig
from medjax.nn.dtypes import DTYPES
from medjax.nn.embed import token_embedding
from medjax.nn.mlp import dense
from medjax.nn.transformer import Encoder, MAPHead
from medjax.objectives.contrastive import SIGLIP_BIAS_INIT, SIGLIP_T_PRIME_INIT


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int = 264
  max_len: int = 96
  width: int = 64
  depth: int = 2
  heads: int = 4
  mlp_dim: int = 128
  pool: str = "mean"  # mean (over real tokens) | last (last real token, SigLIP) | map
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.pool not in ("mean", "last", "map"):
      raise ValueError(f"pool: expected one of ['mean', 'last', 'map'], got {self.pool!r}")


class TextEncoder(nn.Module):
  """tokens [B,T] (+ input_mask [B,T]) -> {"tokens": [B,T,D], "pooled": [B,D]}; padding is masked."""

  cfg: TextConfig

  @nn.compact
  def __call__(self, tokens, input_mask=None):
    cfg = self.cfg
    d, pd = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
    if tokens.ndim != 2 or tokens.shape[1] > cfg.max_len:
      raise ValueError(f"tokens: expected [batch, length <= {cfg.max_len}], got {tokens.shape}")
    valid = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask.astype(bool)
    x = token_embedding(cfg.vocab_size, cfg.width, 0.02, dtype=d, param_dtype=pd)(tokens)
    pos = self.param(
      "pos_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (cfg.max_len, cfg.width),
      pd,
    )
    x = x + pos[: tokens.shape[1]].astype(d)
    mask = jnp.broadcast_to(valid[:, None, None, :], (x.shape[0], 1, x.shape[1], x.shape[1]))
    x = Encoder(
      cfg.depth, cfg.heads, cfg.mlp_dim, cfg.act, cfg.norm_eps, False, d, pd, name="encoder"
    )(x, mask)
    if cfg.pool == "mean":
      w = valid[..., None].astype(x.dtype)
      pooled = jnp.sum(x * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
    elif cfg.pool == "last":
      last = jnp.maximum(jnp.sum(valid, 1) - 1, 0)
      pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    else:
      pooled = MAPHead(cfg.heads, cfg.mlp_dim, cfg.act, cfg.norm_eps, d, pd, name="head")(x, valid)
    return {"tokens": x, "pooled": pooled}


def _l2norm(x):
  x = x.astype(jnp.float32)
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class TwoTower(nn.Module):
  """SigLIP: (images, text tokens) -> {"zimg", "ztxt"} (L2-normalised [B, embed_dim]), "t_prime", "bias"."""

  vision: ViTConfig
  text: TextConfig
  embed_dim: int = 64

  @nn.compact
  def __call__(self, images, tokens, input_mask=None):
    img = ViT(self.vision, name="img")(images)["pooled"]
    if img is None:
      raise ValueError(
        "vision.pool: expected a pooling ('map', 'gap' or 'cls') for the image tower, got 'none'"
      )
    txt = TextEncoder(self.text, name="txt")(tokens, input_mask)["pooled"]
    zimg = dense(self.embed_dim, ("embed", "mlp"), "img_head", jnp.float32, jnp.float32, True)(img)
    ztxt = dense(self.embed_dim, ("embed", "mlp"), "txt_head", jnp.float32, jnp.float32, True)(txt)
    t_prime = self.param(
      "t_prime", nn.with_logical_partitioning(nn.initializers.constant(SIGLIP_T_PRIME_INIT), ()), ()
    )
    bias = self.param(
      "bias", nn.with_logical_partitioning(nn.initializers.constant(SIGLIP_BIAS_INIT), ()), ()
    )
    return {"zimg": _l2norm(zimg), "ztxt": _l2norm(ztxt), "t_prime": t_prime, "bias": bias}
