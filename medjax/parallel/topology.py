"""Cloud TPU slices by name: chips, torus bounds, hosts, and the names gcloud and libtpu use.

Slice names follow Cloud TPU: v4-N / v5p-N count TensorCores (2 per chip), v5e-N (v5litepod-N) and
v6e-N count chips. Pure Python, shared by the launcher and the AOT compiler.
"""

import dataclasses
import math
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_gib: float
  dims: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
  cores_per_chip: int  # TensorCores counted in the slice name
  chip_config: str  # libtpu chip config: megacore chips are one JAX device
  accelerator: str  # gcloud's --accelerator-type prefix
  runtime_version: str  # default TPU VM software version for the generation
  single_host_chips: int  # the largest slice served by one VM; larger slices have 4 chips per VM


CHIPS = {
  "v4": Chip(32, 3, 2, "megacore", "v4", "tpu-ubuntu2204-base", 4),
  "v5p": Chip(95, 3, 2, "megacore", "v5p", "v2-alpha-tpuv5", 4),
  "v5e": Chip(16, 2, 1, "default", "v5litepod", "v2-alpha-tpuv5-lite", 8),
  "v6e": Chip(32, 2, 1, "default", "v6e", "v2-alpha-tpuv6e", 8),
}
CHIPS_PER_HOST = 4  # every multi-host slice of these generations


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice: generation, its name (e.g. v5p-128), chips and their physical bounds."""

  generation: str
  name: str
  chips: int
  bounds: tuple[int, ...]

  @property
  def chip(self) -> Chip:
    return CHIPS[self.generation]

  @property
  def libtpu_name(self) -> str:
    return f"{self.generation}:{'x'.join(map(str, self.bounds))}"

  @property
  def accelerator_type(self) -> str:
    """gcloud's --accelerator-type, e.g. v5p-64, v5litepod-16."""
    return f"{self.chip.accelerator}-{self.chips * self.chip.cores_per_chip}"

  @property
  def hosts(self) -> int:
    """TPU VMs (workers) of the slice: one process each in a multi-host run."""
    return 1 if self.chips <= self.chip.single_host_chips else self.chips // CHIPS_PER_HOST


def _bounds(chips: int, dims: int) -> tuple[int, ...]:
  """Most cubic power-of-two torus for `chips` (64 -> 4x4x4, 4 -> 2x2x1; 2-D: 8 -> 2x4, 256 -> 16x16)."""
  sizes = [1] * dims
  for i in range(int(math.log2(chips))):
    sizes[(dims - 1 - i) % dims] *= 2
  return tuple(sorted(sizes, key=lambda s: (s == 1, s)))  # unit axes last: 2x2x1, not 1x2x2


def parse_topology(name: str) -> Topology:
  """'v5p-128' -> Topology(v5p, 64 chips, 4x4x4); accepts v4-, v5p-, v5e- (or v5litepod-) and v6e- names."""
  m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", name.strip().lower())
  if not m:
    raise ValueError(
      f"topology: expected <generation>-<count> with generation in {sorted(CHIPS)} "
      f"(e.g. v5p-128, v5e-256), got {name!r}"
    )
  gen = "v5e" if m.group(1) == "v5litepod" else m.group(1)
  count, chip = int(m.group(2)), CHIPS[gen]
  chips = count // chip.cores_per_chip
  if count % chip.cores_per_chip or chips < 1 or chips & (chips - 1):
    raise ValueError(
      f"topology: {name!r} must count a power of two of chips ({chip.cores_per_chip} "
      f"TensorCore(s) per {gen} chip), got {count}"
    )
  return Topology(gen, name, chips, _bounds(chips, chip.dims))
