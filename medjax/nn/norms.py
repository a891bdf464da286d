"""Normalisation layers: LayerNorm (affine or not) and RMSNorm (plain or Gemma's (1 + w))."""

import flax.linen as nn
import jax.numpy as jnp


def layer_norm(name, eps=1e-6, dtype=jnp.float32, param_dtype=jnp.float32, affine=True):
  """nn.LayerNorm whose scale and bias carry the logical axis name "norm".

  `affine=False`: no scale or bias (adaLN modulation supplies them).
  """
  return nn.LayerNorm(
    epsilon=eps,
    dtype=dtype,
    param_dtype=param_dtype,
    use_bias=affine,
    use_scale=affine,
    name=name,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


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
