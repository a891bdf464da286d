"""T5 encoder (T5 v1.1, as used by PixArt / Open-Sora for captions) in Flax.

Pre-norm blocks with T5's RMS layer norm (no mean, no bias): self-attention without 1/sqrt(d) scaling
whose logits get a learned bucketed relative-position bias (one table shared by all layers), then a
gated-GELU feed-forward (wi_0 -> GELU-tanh, times wi_1, -> wo); a final RMS norm. Token embeddings are
not scaled. tokens [B, L] int, mask [B, L] (1 = real token) -> hidden states [B, L, d_model].
"""

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from medjax.nn.attention import Attention
from medjax.nn.mlp import MLP
from medjax.nn.norms import RMSNorm


@dataclasses.dataclass(frozen=True)
class T5Config:
  vocab_size: int = 32128
  d_model: int = 4096
  d_kv: int = 64
  num_heads: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  activation: str = "gelu_tanh"
  dtype: str = "float32"
  param_dtype: str = "float32"


PRESETS = {  # encoders of google/t5-v1_1-*; XXL is Open-Sora / Bora's text encoder (4.76B params)
  "t5-v1_1-xxl": T5Config(),
  "t5-v1_1-base": T5Config(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12),
}


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """[length, length] bidirectional buckets of key - query positions (float32 arithmetic, as in Mesh TF)."""
  rel = np.arange(length)[None, :] - np.arange(length)[:, None]
  half = num_buckets // 2
  buckets = (rel > 0).astype(np.int64) * half
  rel = np.abs(rel)
  max_exact = half // 2
  ratio = np.maximum(rel, 1).astype(np.float32) / np.float32(
    max_exact
  )  # rel < max_exact is exact below
  large = (
    np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
  )
  large = np.minimum(max_exact + large.astype(np.int64), half - 1)
  return buckets + np.where(rel < max_exact, rel, large)


class T5Block(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x, bias, mask):
    cfg = self.config
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    norm = lambda name: RMSNorm(
      cfg.layer_norm_epsilon, dtype=dtype, param_dtype=pdtype, axis_name="embed", name=name
    )
    attn = Attention(
      cfg.num_heads,
      head_dim=cfg.d_kv,
      query_scale=1.0,  # T5 folds 1/sqrt(d) into its initialisation
      dtype=dtype,
      param_dtype=pdtype,
      name="attn",
    )
    key_mask = mask[:, None, None, :].astype(bool)
    x = x + attn(norm("attn_norm")(x), mask=key_mask, bias=bias)
    mlp = MLP(cfg.d_ff, cfg.activation, gated=True, dtype=dtype, param_dtype=pdtype, name="mlp")
    x = x + mlp(norm("mlp_norm")(x))
    return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))


class T5Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, tokens, mask):
    cfg = self.config
    if tokens.ndim != 2 or mask.shape != tokens.shape:
      raise ValueError(
        f"tokens, mask: expected equal shapes [B, L], got {tuple(tokens.shape)} and "
        f"{tuple(mask.shape)}"
      )
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    embed = self.param(
      "embed",
      nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
      (cfg.vocab_size, cfg.d_model),
      pdtype,
    )
    table = self.param(
      "relative_attention_bias",
      nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "heads")),
      (cfg.relative_attention_num_buckets, cfg.num_heads),
      pdtype,
    )
    buckets = relative_position_buckets(
      tokens.shape[1], cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
    )
    bias = jnp.transpose(table.astype(jnp.float32)[buckets], (2, 0, 1))[None]  # [1, N, L, L]
    x = jnp.take(embed, tokens, axis=0).astype(dtype)
    for i in range(cfg.num_layers):
      x = T5Block(cfg, name=f"block_{i}")(x, bias, mask)
    return RMSNorm(
      cfg.layer_norm_epsilon,
      dtype=jnp.float32,
      param_dtype=pdtype,
      axis_name="embed",
      name="final_norm",
    )(x)
