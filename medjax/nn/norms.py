"""Normalisation layers."""

import flax.linen as nn
import jax.numpy as jnp


class RMSNorm(nn.Module):
  """RMSNorm computed in float32. `zero_centered` stores w and scales by (1 + w) (Gemma)."""

  eps: float = 1e-6
  zero_centered: bool = False
  axis_name: str = "norm"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.zero_centered else nn.initializers.ones
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(init, (self.axis_name,)),
      (x.shape[-1],),
      self.param_dtype,
    )
    x32 = x.astype(jnp.float32)
    y = x32 * jnp.reciprocal(jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps))
    scale = scale.astype(jnp.float32)
    y = y * (1.0 + scale if self.zero_centered else scale)
    return y.astype(self.dtype)
