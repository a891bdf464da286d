"""adaLN-single modulation (PixArt-alpha / Open-Sora): timestep embedding, scale-shift tables, modulate."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.nn.mlp import dense


def modulate(x, shift, scale):
  """t2i_modulate: x * (1 + scale) + shift (shift/scale broadcast over the token axis)."""
  return x * (1.0 + scale) + shift


def layer_norm_modulate(x, shift, scale, eps: float = 1e-6, dtype=None):
  """modulate(LayerNorm(x) without scale or bias, shift, scale) in float32, rounded to `dtype` (x's
  by default) once; the statistics as flax's LayerNorm computes them (E[x^2] - E[x]^2)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.maximum(jnp.mean(x32 * x32, axis=-1, keepdims=True) - mean * mean, 0.0)
  mul = jax.lax.rsqrt(var + eps) * (1.0 + scale.astype(jnp.float32))
  return ((x32 - mean) * mul + shift.astype(jnp.float32)).astype(dtype or x.dtype)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B]: [cos, sin] halves."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedder(nn.Module):
  """t [B] -> Linear(SiLU(Linear(sinusoid(t)))) [B, hidden]."""

  hidden: int
  freq_dim: int = 256
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t):
    if t.ndim != 1:
      raise ValueError(f"timesteps: expected shape [B], got {t.shape}")
    init = nn.initializers.normal(0.02)
    h = dense(self.hidden, (None, "mlp"), "fc1", self.dtype, self.param_dtype, True, init)(
      timestep_embedding(t, self.freq_dim)
    )
    return dense(self.hidden, ("mlp", "embed"), "fc2", self.dtype, self.param_dtype, True, init)(
      jax.nn.silu(h)
    )


class ScaleShiftTable(nn.Module):
  """A learned (n, C) table plus a per-example conditioning -> n arrays [B, 1, C] (shift, scale, gate...).

  cond is [B, n*C] (adaLN-single's t0, split into n rows) or, with `shared=True`, [B, C] added to
  every row (the T2I final layer's use of the timestep embedding).
  """

  n: int
  shared: bool = False

  @nn.compact
  def __call__(self, cond):
    if cond.ndim != 2 or (not self.shared and cond.shape[-1] % self.n):
      raise ValueError(
        f"cond: expected [B, {'C' if self.shared else f'{self.n}*C'}], got {cond.shape}"
      )
    c = cond.shape[-1] if self.shared else cond.shape[-1] // self.n
    init = lambda key, shape, dtype: jax.random.normal(key, shape, dtype) / math.sqrt(shape[-1])
    table = self.param(
      "table", nn.with_logical_partitioning(init, (None, "embed")), (self.n, c), jnp.float32
    )
    cond = cond[:, None] if self.shared else cond.reshape(cond.shape[0], self.n, c)
    mod = table[None].astype(cond.dtype) + cond
    return tuple(mod[:, i : i + 1] for i in range(self.n))
