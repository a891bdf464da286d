"""Training-step benchmark: step time, tokens/s, TFLOP/s per device, MFU and compiled memory.

`benchmark` compiles and times the real training step of any config on synthetic inputs of the
right shapes (its task defines the batch). MFU uses the analytic model FLOPs (6 N T + attention for
decoders and STDiT; no remat recomputation) where the family has them, else XLA's count of the
compiled step (which includes recomputation: closer to HFU; on GPU XLA's count misses cuBLAS/cuDNN
calls, so MFU is left out there). `run` benchmarks several configs and prints one table.
"""

import json
import time

import flax.linen as nn
import jax
import numpy as np

from medjax import parallel
from medjax.config_lib import config_from_file
from medjax.train import loop
from medjax.train.metrics import compiled_cost, peak_flops


def _fill(x, rng):
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.floating):
    return rng.standard_normal(x.shape).astype(x.dtype)
  return np.ones_like(x)


def benchmark(config, steps: int, data_batches: int = 0) -> dict:
  """Compiles and times the real training step of `config` on synthetic inputs of the right shapes."""
  t = config.train
  mesh, rules, task, model = loop.setup(config)
  per_host = loop.check_batch_size(t.batch_size, mesh, t.grad_accum)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, _, jitted, _ = loop.build_step(config, mesh, rules, task, model, abstract_only=not steps)
    t0 = time.time()
    compiled = jitted.lower(state, loop.abstract_batch(task, t.batch_size, mesh)).compile()
    compile_s = time.time() - t0
  cost = compiled_cost(compiled)
  rng = np.random.default_rng(0)
  local = jax.tree.map(lambda x: _fill(x, rng), task.dummy_batch(per_host))
  dt = float("nan")
  if steps:
    batch = parallel.global_batch(local, mesh)
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.time()
    for _ in range(steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    dt = (time.time() - t0) / steps
  peak = peak_flops()
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  tokens = task.count_tokens(local) * jax.process_count()
  analytic = task.flops_per_step(model, task.dummy_batch(t.batch_size), params)
  # XLA:GPU's cost analysis leaves out library calls (cuBLAS GEMMs, cuDNN attention), so without an analytic
  # count there is no trustworthy MFU on GPU; on TPU/CPU XLA's count is used (it includes recomputation).
  flops = (
    analytic / mesh.size
    if analytic
    else (cost["flops"] if jax.default_backend() != "gpu" else float("nan"))
  )
  out = {
    "params_M": params / 1e6,
    "devices": mesh.size,
    "compile_s": compile_s,
    "step_ms": dt * 1e3,
    "examples_per_s": t.batch_size / dt,
    "tokens_per_s": tokens / dt,
    "xla_tflops_per_device": cost["flops"] / dt / 1e12,
    "model_tflops_per_device": analytic / mesh.size / dt / 1e12 if analytic else float("nan"),
    "mfu": flops / dt / peak if peak else float("nan"),
    "mem_MiB_per_device": cost.get("total_bytes", 0) / 2**20,
  }
  if data_batches and steps:
    it = iter(task.train_data(batch_size=per_host, seed=0, shard_index=0, shard_count=1))
    next(it)
    t0 = time.time()
    for _ in range(data_batches):
      next(it)
    out["data_batches_per_s"] = data_batches / (time.time() - t0)
    out["data_headroom"] = out["data_batches_per_s"] * dt  # > 1: the pipeline keeps up
  return out


COLUMNS = (
  "params_M",
  "devices",
  "compile_s",
  "step_ms",
  "examples_per_s",
  "tokens_per_s",
  "xla_tflops_per_device",
  "model_tflops_per_device",
  "mfu",
  "mem_MiB_per_device",
  "data_batches_per_s",
  "data_headroom",
)


def run(runs, steps: int, data_batches: int, json_out: str = ""):
  """Benchmarks each (config spec, overrides) of `runs`, printing each result as it comes and
  the table of all at the end; a config that fails (e.g. out of memory) is reported and skipped."""
  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}")
  width = [max(12, len(c) + 1) for c in COLUMNS]
  header = "config".ljust(34) + "".join(c.rjust(w) for c, w in zip(COLUMNS, width))
  rows = []
  for spec, overrides in runs:
    try:
      r = benchmark(config_from_file(spec, overrides), steps, data_batches)
    except Exception as e:  # one config out of memory must not lose the others' figures
      print(
        f"{spec} {' '.join(overrides)}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}",
        flush=True,
      )
      continue
    r.update(config=spec, overrides=overrides)
    rows.append(
      spec.ljust(34) + "".join(f"{r.get(c, float('nan')):{w}.4g}" for c, w in zip(COLUMNS, width))
    )
    print(f"{spec} {' '.join(overrides)}\n{header}\n{rows[-1]}", flush=True)
    if json_out:
      with open(json_out, "a") as f:
        f.write(json.dumps(r) + "\n")
  print("\n" + header + "\n" + "\n".join(rows))
