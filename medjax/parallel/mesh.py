"""Mesh construction from config: axes (data, fsdp, tensor, sequence), one of them may be -1."""

import math

import jax
from absl import logging
from jax.sharding import AxisType

MESH_AXES = ("data", "fsdp", "tensor", "sequence")


def resolve_mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Sizes for MESH_AXES from a mapping; a -1 entry takes the remaining devices."""
  unknown = set(mesh_cfg) - set(MESH_AXES)
  if unknown:
    raise ValueError(
      f"parallel.mesh: unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}"
    )
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(
      f"parallel.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}"
    )
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(
      f"parallel.mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}"
    )
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(
        f"parallel.mesh: fixed axes {dict(zip(MESH_AXES, sizes))} (product {fixed}) do not divide "
        f"the {num_devices} devices"
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"parallel.mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
      f"but {num_devices} are available"
    )
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A GSPMD (Auto axis types) mesh over all devices, or `devices`."""
  devices = jax.devices() if devices is None else devices
  shape = resolve_mesh_shape(dict(mesh_cfg), len(devices))
  return jax.make_mesh(
    shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def initialize_distributed(
  enabled: bool,
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
):
  """jax.distributed.initialize() for multi-host runs (no-op when disabled)."""
  if not enabled:
    return
  kw = {}
  if coordinator:
    kw = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kw)
  logging.info(
    "process %d/%d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
