"""Flamingo gated cross-attention: text tokens attend to the media (e.g. series) preceding them."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.nn.attention import Einsum, dot_product_attention
from medjax.nn.mlp import dense


def layer_norm(name, dtype=jnp.float32, param_dtype=jnp.float32, eps=1e-5):
  """nn.LayerNorm whose scale and bias carry the logical axis name "norm"."""
  return nn.LayerNorm(
    epsilon=eps,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


class FeedForward(nn.Module):
  """LayerNorm -> Dense(mult * d) -> GELU -> Dense(d), bias-free (Flamingo / Perceiver style)."""

  mult: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    h = layer_norm("norm", self.dtype, self.param_dtype)(x)
    h = dense(d * self.mult, ("embed", "mlp"), "up", self.dtype, self.param_dtype)(h)
    h = nn.with_logical_constraint(
      jax.nn.gelu(h, approximate=False), ("act_batch", "act_length", "act_mlp")
    )
    return dense(d, ("mlp", "embed"), "down", self.dtype, self.param_dtype)(h)


class CrossAttention(nn.Module):
  """Multi-head attention of queries x [B,T,E] over context [B,S,C] with mask [B,1,T,S] -> [B,T,E]."""

  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _proj(self, name):
    return Einsum(
      "bte,ehd->bthd",
      (None, self.num_heads, self.head_dim),
      ("embed", "heads", "head_dim"),
      self.dtype,
      self.param_dtype,
      name=name,
    )

  @nn.compact
  def __call__(self, x, context, mask):
    q, k, v = self._proj("q")(x), self._proj("k")(context), self._proj("v")(context)
    q = nn.with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
    out = dot_product_attention(q, k, v, mask, scale=self.head_dim**-0.5)
    out = nn.with_logical_constraint(out, ("act_batch", "act_length", "act_heads", None))
    return Einsum(
      "bthd,hde->bte",
      (self.num_heads, self.head_dim, x.shape[-1]),
      ("heads", "head_dim", "embed"),
      self.dtype,
      self.param_dtype,
      fan_in_axes=(0, 1),
      name="o",
    )(out)


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
        name, nn.with_logical_partitioning(nn.initializers.zeros, ()), (), self.param_dtype
      )
    ).astype(self.dtype)
    h = CrossAttention(self.num_heads, self.head_dim, self.dtype, self.param_dtype, name="xattn")(
      layer_norm("xattn_norm", self.dtype, self.param_dtype)(x), context, mask
    )
    x = x + gate("attn_gate") * jnp.where(has_media, h, 0)
    h = FeedForward(self.ff_mult, self.dtype, self.param_dtype, name="ff")(x)
    x = x + gate("ff_gate") * jnp.where(has_media, h, 0)
    return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
