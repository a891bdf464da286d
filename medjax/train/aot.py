"""Ahead-of-time compilation of the real sharded train step for a TPU slice, without TPUs.

libtpu (PyPI) describes a slice, e.g. `v5p:4x4x4`, as compile-only devices; the config's mesh is laid
over them, the train state is built abstractly (shapes + shardings, nothing allocated) and
`jit(step).lower(...).compile()` yields the per-chip memory and FLOPs of the partitioned program.
Slices are named as Cloud TPU names them (`medjax.parallel.topology`).
It sits above the loop (it compiles the loop's own step); libtpu is loaded only when a slice is
described, so importing this module never initialises it.
"""

import math
import os
import re

import flax.linen as nn
import jax

from medjax.parallel.mesh import MESH_AXES, resolve_mesh_shape
from medjax.parallel.topology import Topology, parse_topology
from medjax.tasks.base import Task
from medjax.train import loop
from medjax.train import metrics as metrics_lib

GiB = 2**30


def topology_devices(topology: Topology) -> list:
  """Compile-only JAX devices of the slice (needs libtpu; no TPU has to be attached)."""
  from jax.experimental import topologies

  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to guard
  os.environ["TPU_ACCELERATOR_TYPE"] = topology.accelerator_type
  try:
    desc = topologies.get_topology_desc(
      topology.libtpu_name, "tpu", chip_config_name=topology.chip.chip_config
    )
  except Exception as e:  # noqa: BLE001 - libtpu missing or refusing the slice; say which
    raise RuntimeError(
      f"Cannot describe TPU topology {topology.libtpu_name} ({topology.name}): "
      f"{type(e).__name__}: {e}. Is libtpu installed (pip install libtpu)?"
    ) from e
  if len(desc.devices) != topology.chips:
    raise RuntimeError(
      f"libtpu gave {len(desc.devices)} devices for {topology.libtpu_name}, "
      f"expected {topology.chips}"
    )
  return desc.devices


def compile_train_step(config, devices):
  """Lowers and compiles the training loop's own train step over `devices` -> (compiled, state, mesh, task, model)."""
  mesh, rules, task, model = loop.setup(config, devices=devices)
  loop.check_batch_size(config.train.batch_size, mesh, config.train.grad_accum)
  # Outside set_mesh: the rng is made eagerly on the host (compile-only devices cannot run anything).
  state, _, jitted, _ = loop.build_step(config, mesh, rules, task, model, abstract_only=True)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = loop.compile_step(config, jitted, state, task, mesh)
  return compiled, state, mesh, task, model


def analyze(config, topology_name: str) -> dict:
  """Compiles `config`'s train step for the slice; per-chip memory, FLOPs and the peak-FLOP/s bounds."""
  topo = parse_topology(topology_name)
  try:
    compiled, state, mesh, task, model = compile_train_step(config, topology_devices(topo))
  except jax.errors.JaxRuntimeError as e:  # XLA:TPU refuses programs that exceed HBM
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    need = re.search(r"\(([\d.]+)G\) exceeds", str(e))
    return {
      "topology": topo.name,
      "libtpu_topology": topo.libtpu_name,
      "chips": topo.chips,
      "mesh": dict(zip(MESH_AXES, resolve_mesh_shape(dict(config.parallel.mesh), topo.chips))),
      "rules": config.parallel.rules,
      "hbm_gib": topo.chip.hbm_gib,
      "fits": False,
      "total_gib": None,
      "temp_gib": float(need.group(1)) if need else None,
      "compiler_error": str(e).splitlines()[0],
    }
  cost = metrics_lib.compiled_cost(compiled)
  params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
  b = config.train.batch_size
  batch = task.dummy_batch(b)
  tokens = Task.count_tokens(task, batch)  # all positions, padding too
  analytic = task.flops_per_step(model, batch, params)
  peak = metrics_lib.PEAK_FLOPS[topo.generation]
  step_s = (analytic / topo.chips if analytic else cost["flops"]) / peak
  hbm = topo.chip.hbm_gib * GiB
  used = cost["argument_bytes"] + cost["temp_bytes"] + cost["output_bytes"] - cost["alias_bytes"]
  return {
    "topology": topo.name,
    "libtpu_topology": topo.libtpu_name,
    "chips": topo.chips,
    "mesh": {k: v for k, v in mesh.shape.items()},
    "rules": config.parallel.rules,
    "params": params,
    "batch_size": config.train.batch_size,
    "tokens_per_step": tokens,
    "argument_gib": cost["argument_bytes"] / GiB,
    "temp_gib": cost["temp_bytes"] / GiB,
    "output_gib": cost["output_bytes"] / GiB,
    "alias_gib": cost["alias_bytes"] / GiB,
    "total_gib": used / GiB,
    "hbm_gib": topo.chip.hbm_gib,
    "fits": used <= hbm,
    "xla_tflops_per_chip": cost["flops"] / 1e12,
    "model_tflops_total": analytic / 1e12 if analytic else None,
    "peak_tflops_per_chip": peak / 1e12,
    "min_step_s": step_s,
    "max_tokens_per_s": tokens / step_s if step_s else float("inf"),
  }


def format_report(r: dict) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
  if "compiler_error" in r:
    return (
      f"{r['topology']} ({r['libtpu_topology']}, {r['chips']} chips), mesh {mesh}, rules {r['rules']}: "
      f"DOES NOT FIT in {r['hbm_gib']} GiB per chip\n  XLA: {r['compiler_error']}"
    )
  return "\n".join(
    [
      f"{r['topology']} ({r['libtpu_topology']}, {r['chips']} chips), mesh {mesh}, rules {r['rules']}",
      f"  {r['params'] / 1e6:,.1f}M params, batch {r['batch_size']} ({r['tokens_per_step']} tokens/step)",
      f"  HBM per chip: arguments {r['argument_gib']:.3f} GiB + temporaries {r['temp_gib']:.3f} GiB "
      f"+ outputs {r['output_gib']:.3f} GiB - aliased {r['alias_gib']:.3f} GiB = {r['total_gib']:.3f} GiB "
      f"of {r['hbm_gib']} GiB ({100 * r['total_gib'] / r['hbm_gib']:.0f}%): {'fits' if r['fits'] else 'DOES NOT FIT'}",
      f"  FLOPs per step: XLA {r['xla_tflops_per_chip']:.4g} TFLOP per chip, "
      f"{r['xla_tflops_per_chip'] * r['chips']:.4g} total (a while loop, e.g. scanned layers, counts once)",
      *(
        [
          f"  model FLOPs per step (6*N*T + attention): {r['model_tflops_total'] / r['chips']:.4g} TFLOP per chip, "
          f"{r['model_tflops_total']:.4g} total"
        ]
        if r["model_tflops_total"]
        else []
      ),
      f"  at peak {r['peak_tflops_per_chip']:.0f} TFLOP/s per chip: step >= {r['min_step_s'] * 1e3:.4g} ms, "
      f"<= {r['max_tokens_per_s']:,.0f} tokens/s",
    ]
  )
