"""Feed-forward blocks."""
import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


def dense(features, axes, name, dtype, param_dtype, use_bias=False, kernel_init=None):
  """nn.Dense whose kernel carries logical axis names `axes` (in, out)."""
  kernel_init = kernel_init or nn.initializers.lecun_normal()
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


class GatedMLP(nn.Module):
  """down(act(gate(x)) * up(x)) as in Llama (SiLU) and Gemma (GELU-tanh)."""
  hidden_dim: int
  act: str = "silu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    gate = dense(self.hidden_dim, ("embed", "mlp"), "gate", self.dtype, self.param_dtype)(x)
    up = dense(self.hidden_dim, ("embed", "mlp"), "up", self.dtype, self.param_dtype)(x)
    h = activation(self.act)(gate) * up
    h = nn.with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
    return dense(d, ("mlp", "embed"), "down", self.dtype, self.param_dtype)(h)
