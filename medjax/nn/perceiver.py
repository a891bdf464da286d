"""Perceiver resampler (Flamingo): a variable number of input tokens -> a fixed set of latents."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.attention import Attention
from medjax.nn.gated_xattn import feed_forward
from medjax.nn.norms import layer_norm


class PerceiverLayer(nn.Module):
  """latents += attn(LN(latents), [LN(x); LN(latents)]); latents += FF(latents)."""

  num_heads: int
  head_dim: int
  ff_mult: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, latents, mask):
    x = layer_norm("input_norm", 1e-5, self.dtype, self.param_dtype)(x)
    q = layer_norm("latent_norm", 1e-5, self.dtype, self.param_dtype)(latents)
    kv = jnp.concatenate([x, q], axis=1)
    latents = latents + Attention(
      self.num_heads,
      head_dim=self.head_dim,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="attn",
    )(q, kv, mask)
    return latents + feed_forward(latents, self.ff_mult, self.dtype, self.param_dtype, "ff")


class PerceiverResampler(nn.Module):
  """x [B,N,D] with padding mask [B,N] (True = real) -> latents [B,num_latents,D].

  Keys/values are the inputs concatenated with the latents; padded inputs are never attended to,
  so the output does not depend on how much padding follows the real tokens.
  """

  num_layers: int = 6
  num_latents: int = 64
  num_heads: int = 8
  head_dim: int = 64
  ff_mult: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    if x.ndim != 3:
      raise ValueError(f"x: expected [batch, tokens, dim], got {x.shape}")
    b, n, d = x.shape
    mask = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
    if mask.shape != (b, n):
      raise ValueError(f"mask: expected {(b, n)}, got {mask.shape}")
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed"))
    latents = self.param("latents", init, (self.num_latents, d), self.param_dtype).astype(
      self.dtype
    )
    latents = jnp.broadcast_to(latents, (b, self.num_latents, d))
    kv_valid = jnp.concatenate([mask, jnp.ones((b, self.num_latents), bool)], axis=1)
    attn_mask = jnp.broadcast_to(
      kv_valid[:, None, None], (b, 1, self.num_latents, n + self.num_latents)
    )
    x = x.astype(self.dtype)
    for i in range(self.num_layers):
      latents = PerceiverLayer(
        self.num_heads, self.head_dim, self.ff_mult, self.dtype, self.param_dtype, name=f"layer_{i}"
      )(x, latents, attn_mask)
    return layer_norm("norm", 1e-5, self.dtype, self.param_dtype)(latents)
