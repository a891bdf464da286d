"""Feed-forward blocks: one MLP, plain (up -> act -> down) or gated (SwiGLU / GeGLU)."""

from typing import Any, Callable

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


class MLP(nn.Module):
  """`down(act(up(x)))`, or with `gated` `down(act(gate(x)) * up(x))`.

  Gated: Llama (SiLU), Gemma and T5 v1.1 (GELU-tanh). Plain: ViT/SigLIP (GELU-tanh, biases,
  Xavier init), Flamingo/Perceiver (exact GELU, no bias), STDiT. `lora` adapts gate/up/down.
  """

  hidden_dim: int
  act: str = "gelu_tanh"
  gated: bool = False
  use_bias: bool = False
  kernel_init: Callable | None = None  # None: LeCun normal
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  lora: lora_lib.LoRAConfig | None = None

  @nn.compact
  def __call__(self, x):
    proj = lambda n, axes, name: dense(
      n,
      axes,
      name,
      self.dtype,
      self.param_dtype,
      self.use_bias,
      self.kernel_init,
      lora_lib.for_target(self.lora, name),
    )
    if self.gated:
      gate = proj(self.hidden_dim, ("embed", "mlp"), "gate")(x)
      h = activation(self.act)(gate) * proj(self.hidden_dim, ("embed", "mlp"), "up")(x)
    else:
      h = activation(self.act)(proj(self.hidden_dim, ("embed", "mlp"), "up")(x))
    h = nn.with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
    return proj(x.shape[-1], ("mlp", "embed"), "down")(h)
