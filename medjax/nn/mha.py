"""Biased multi-head self/cross attention (ViT/DiT style) over `dot_product_attention`."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.attention import Einsum, dot_product_attention
from medjax.nn.norms import RMSNorm
from medjax.nn.rope import apply_rope


class MultiHeadAttention(nn.Module):
  """Queries from x [B,T,E], keys/values from `context` [B,S,Ec] (x itself if None).

  mask: bool, broadcastable to [B,1,T,S] (None: all visible). Projections carry biases, as in
  timm/PixArt; optional QK RMS-norm and RoPE (`positions` [B,T] with `inv_freq`, self-attention only).
  """

  num_heads: int
  qk_norm: bool = False
  norm_eps: float = 1e-6
  implementation: str = "xla"
  zero_init_out: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _proj(self, x, name, heads_dim):
    y = Einsum(
      "bte,ehd->bthd",
      (None, self.num_heads, heads_dim),
      ("embed", "heads", "head_dim"),
      self.dtype,
      self.param_dtype,
      name=name,
    )(x)
    b = self.param(
      f"{name}_bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "head_dim")),
      (self.num_heads, heads_dim),
      self.param_dtype,
    )
    return y + b.astype(self.dtype)

  @nn.compact
  def __call__(self, x, context=None, mask=None, positions=None, inv_freq=None):
    e = x.shape[-1]
    if e % self.num_heads:
      raise ValueError(f"x: embedding dim {e} is not divisible by num_heads={self.num_heads}")
    d = e // self.num_heads
    ctx = x if context is None else context
    q, k, v = self._proj(x, "q", d), self._proj(ctx, "k", d), self._proj(ctx, "v", d)
    if self.qk_norm:
      norm = lambda name: RMSNorm(
        self.norm_eps, False, "head_dim", self.dtype, self.param_dtype, name=name
      )
      q, k = norm("q_norm")(q), norm("k_norm")(k)
    if inv_freq is not None:
      if context is not None:
        raise ValueError(
          "inv_freq: RoPE is only supported for self-attention (context must be None)"
        )
      q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    if mask is None:
      mask = jnp.ones((1, 1, 1, 1), bool)
    out = dot_product_attention(q, k, v, mask, scale=d**-0.5, implementation=self.implementation)
    init = (
      nn.initializers.zeros
      if self.zero_init_out
      else nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2
      )
    )
    kernel = self.param(
      "o",
      nn.with_logical_partitioning(init, ("heads", "head_dim", "embed")),
      (self.num_heads, d, e),
      self.param_dtype,
    )
    bias = self.param(
      "o_bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (e,),
      self.param_dtype,
    )
    return jnp.einsum("bthd,hde->bte", out, kernel.astype(self.dtype)) + bias.astype(self.dtype)
