"""Flamingo gated cross-attention: text tokens attend to the media (e.g. series) preceding them."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.attention import Attention
from medjax.nn.mlp import MLP
from medjax.nn.norms import layer_norm


def feed_forward(x, mult, dtype, param_dtype, name):
  """LN -> Dense(mult * d) -> exact GELU -> Dense(d), bias-free (Flamingo / Perceiver style)."""
  h = layer_norm(f"{name}_norm", 1e-5, dtype, param_dtype)(x)
  return MLP(x.shape[-1] * mult, "gelu", dtype=dtype, param_dtype=param_dtype, name=name)(h)


class GatedCrossAttentionBlock(nn.Module):
  """x += tanh(g_attn) * xattn(LN(x), media); x += tanh(g_ff) * FF(LN(x)); gates start at 0.

  __call__(x [B,T,E], media [B,M,L,C], media_mask [B,T,M] bool) -> [B,T,E]. Token t attends to the
  L tokens of every medium m with media_mask[b, t, m]; tokens that may attend to no medium are left
  unchanged (zero update), so padding media and text before the first medium never leak in.
  """

  num_heads: int = 8
  head_dim: int = 64
  ff_mult: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  gate_init: float = 0.0  # Flamingo: 0, so the block starts as the identity

  @nn.compact
  def __call__(self, x, media, media_mask):
    b, t, _ = x.shape
    if media.ndim != 4 or media.shape[0] != b:
      raise ValueError(f"media: expected [batch={b}, media, tokens, dim], got {media.shape}")
    m, l = media.shape[1], media.shape[2]
    if media_mask.shape != (b, t, m):
      raise ValueError(f"media_mask: expected {(b, t, m)}, got {media_mask.shape}")
    media_mask = media_mask.astype(bool)
    context = media.reshape(b, m * l, media.shape[-1]).astype(self.dtype)
    mask = jnp.repeat(media_mask, l, axis=-1)[:, None]
    has_media = jnp.any(media_mask, axis=-1, keepdims=True)
    gate = lambda name: jnp.tanh(
      self.param(
        name,
        nn.with_logical_partitioning(nn.initializers.constant(self.gate_init), ()),
        (),
        self.param_dtype,
      )
    ).astype(self.dtype)
    h = Attention(
      self.num_heads,
      head_dim=self.head_dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="xattn",
    )(layer_norm("xattn_norm", 1e-5, self.dtype, self.param_dtype)(x), context, mask)
    x = x + gate("attn_gate") * jnp.where(has_media, h, 0)
    h = feed_forward(x, self.ff_mult, self.dtype, self.param_dtype, "ff")
    x = x + gate("ff_gate") * jnp.where(has_media, h, 0)
    return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
