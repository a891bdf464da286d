"""LoRA (arXiv 2106.09685): a low-rank update `x @ A @ B * alpha / rank` beside a frozen projection.

A projection opts in through its `lora` field (a LoRAConfig, or None: off and no extra params). The
adapter's params `lora_a` (random, fan-in scaled as in PEFT) and `lora_b` (zeros) sit beside the
projection's `kernel`, so at initialisation the output equals the base projection's, and
`FROZEN_BASE` freezes every other parameter of a subtree through the optimizer mask.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # attention and gated-MLP projections
FROZEN_BASE = r"^{prefix}(?!.*/lora_[ab]$)"  # regex: params under prefix except the adapters


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  rank: int
  alpha: float = 16.0
  targets: tuple = TARGETS

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if self.rank < 1:
      raise ValueError(f"lora rank: expected >= 1, got {self.rank}")
    unknown = sorted(set(self.targets) - set(TARGETS))
    if unknown or not self.targets:
      raise ValueError(
        f"lora targets: expected a non-empty subset of {TARGETS}, got {self.targets}"
      )

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def for_target(lora: LoRAConfig | None, name: str) -> LoRAConfig | None:
  """The config if projection `name` is one of its targets, else None."""
  return lora if lora is not None and name in lora.targets else None


def frozen_base(prefix: str) -> str:
  """Freeze pattern for `optim.freeze`: everything under `prefix` (e.g. "lm/") except LoRA params."""
  return FROZEN_BASE.format(prefix=prefix)


def delta(
  module: nn.Module,
  x,
  spec: str,
  kernel_shape: tuple,
  fan_in_axes: tuple,
  kernel_axes: tuple,
  lora: LoRAConfig,
  dtype: Any,
  param_dtype: Any,
):
  """The LoRA update of the projection `einsum(spec, x, kernel)`; creates the params on `module`.

  The kernel's fan-in dims are contracted by A [*fan_in, r], then B [r, *fan_out] produces the output.
  """
  lhs, rest = spec.split(",")
  kernel, out = rest.split("->")
  r = next(c for c in "rzyxwvu" if c not in spec)
  fan = "".join(kernel[i] for i in fan_in_axes)
  outs = [i for i in range(len(kernel)) if i not in fan_in_axes]
  mid = "".join(c for c in lhs if c not in fan) + r
  pick = lambda seq, idx: tuple(seq[i] for i in idx)
  a_init = nn.initializers.variance_scaling(
    1 / 3, "fan_in", "uniform", in_axis=tuple(range(len(fan))), out_axis=-1
  )  # PEFT: kaiming_uniform(a=sqrt(5))
  a = module.param(
    "lora_a",
    nn.with_logical_partitioning(a_init, pick(kernel_axes, fan_in_axes) + (None,)),
    pick(kernel_shape, fan_in_axes) + (lora.rank,),
    param_dtype,
  )
  b = module.param(
    "lora_b",
    nn.with_logical_partitioning(nn.initializers.zeros, (None,) + pick(kernel_axes, outs)),
    (lora.rank,) + pick(kernel_shape, outs),
    param_dtype,
  )
  h = jnp.einsum(f"{lhs},{fan}{r}->{mid}", x.astype(dtype), a.astype(dtype))
  y = jnp.einsum(f"{mid},{r}{''.join(pick(kernel, outs))}->{out}", h, b.astype(dtype))
  return y * jnp.asarray(lora.scale, dtype)


class Dense(nn.Dense):
  """nn.Dense with an optional LoRA adapter (params `kernel` [, `bias`], `lora_a`, `lora_b`)."""

  lora: LoRAConfig | None = None
  kernel_axes: tuple = (None, None)

  @nn.compact
  def __call__(self, x):
    y = super().__call__(x)
    if self.lora is None:
      return y
    shape = (x.shape[-1], self.features)
    return y + delta(
      self,
      x,
      "...i,io->...o",
      shape,
      (0,),
      self.kernel_axes,
      self.lora,
      self.dtype or x.dtype,
      self.param_dtype,
    ).astype(y.dtype)
