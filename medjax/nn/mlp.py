"""Feed-forward blocks."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.nn import lora as lora_lib

ACTIVATIONS = {
  "silu": jax.nn.silu,
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


def dense(features, axes, name, dtype, param_dtype, use_bias=False, kernel_init=None, lora=None):
  """nn.Dense whose kernel carries logical axis names `axes` (in, out); with a LoRA adapter if `lora`."""
  kernel_init = kernel_init or nn.initializers.lecun_normal()
  kw = dict(
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
  )
  return (
    nn.Dense(features, **kw)
    if lora is None
    else lora_lib.Dense(features, lora=lora, kernel_axes=axes, **kw)
  )


class GatedMLP(nn.Module):
  """down(act(gate(x)) * up(x)) as in Llama (SiLU) and Gemma (GELU-tanh); `lora` adapts gate/up/down."""

  hidden_dim: int
  act: str = "silu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  lora: lora_lib.LoRAConfig | None = None

  @nn.compact
  def __call__(self, x):
    proj = lambda n, axes, name: dense(
      n, axes, name, self.dtype, self.param_dtype, lora=lora_lib.for_target(self.lora, name)
    )
    gate = proj(self.hidden_dim, ("embed", "mlp"), "gate")(x)
    up = proj(self.hidden_dim, ("embed", "mlp"), "up")(x)
    h = activation(self.act)(gate) * up
    h = nn.with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
    return proj(x.shape[-1], ("mlp", "embed"), "down")(h)
