"""Training-step benchmark: step time, tokens/s, TFLOP/s per device, MFU and compiled memory.

`benchmark` compiles and times the real training step of any config on synthetic inputs of the
right shapes (its task defines the batch). MFU uses the analytic model FLOPs (6 N T + attention for
decoders and STDiT; no remat recomputation) where the family has them, else XLA's count of the
compiled step (which includes recomputation: closer to HFU; on GPU XLA's count misses cuBLAS/cuDNN
calls, so MFU is left out there). `run` benchmarks several configs and prints one table.
"""

import gc
import json
import time

import flax.linen as nn
import jax
import numpy as np

from medjax import parallel
from medjax.benchmarks import profile_summary
from medjax.config_lib import config_from_file
from medjax.train import loop
from medjax.train.metrics import compiled_cost, peak_flops


def _fill(x, rng):
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.floating):
    return rng.standard_normal(x.shape).astype(x.dtype)
  return np.ones_like(x)


def benchmark(config, steps: int, data_batches: int = 0, profile_dir: str = "") -> dict:
  """Compiles and times the real training step of `config` on synthetic inputs of the right shapes;
  with `profile_dir`, then traces two more steps there (jax.profiler)."""
  t = config.train
  mesh, rules, task, model = loop.setup(config)
  per_host = loop.check_batch_size(t.batch_size, mesh, t.grad_accum)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, _, jitted, _ = loop.build_step(config, mesh, rules, task, model, abstract_only=not steps)
    t0 = time.time()
    compiled = loop.compile_step(config, jitted, state, task, mesh)
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
    if profile_dir:
      state = profile_summary.trace_steps(compiled, state, batch, profile_dir)
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


def run(
  runs, steps: int, data_batches: int, json_out: str = "", *, columns=COLUMNS, budget_s: float = 0
) -> list[dict]:
  """Benchmarks each of `runs`, printing each result as it comes and the table of all at the end; a
  run that fails (e.g. out of memory) is reported and skipped. Returns the results.

  A run is (config spec, overrides), (label, config spec, overrides), or (label, fn) with fn() -> a
  result dict (e.g. a sampling time). With `budget_s` > 0, runs not started within that many seconds
  are reported as skipped, so that the rows measured so far still make the table.
  """
  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}")
  start = time.time()
  named = [r if len(r) == 3 or callable(r[1]) else (r[0], r[0], r[1]) for r in runs]
  name_w = max([34] + [len(r[0]) + 2 for r in named])
  width = [max(12, len(c) + 1) for c in columns]
  header = "row".ljust(name_w) + "".join(c.rjust(w) for c, w in zip(columns, width))
  rows, results = [], []
  for label, *what in named:
    desc = label if callable(what[0]) else f"{what[0]} {' '.join(what[1])}"
    if budget_s and time.time() - start > budget_s:
      print(f"{desc}: SKIPPED (budget of {budget_s:.0f} s spent)", flush=True)
      continue
    try:
      if callable(what[0]):
        r = what[0]()
      else:
        r = benchmark(config_from_file(what[0], what[1]), steps, data_batches)
        r.update(config=what[0], overrides=what[1])
    except Exception as e:  # one config out of memory must not lose the others' figures
      first = (str(e).splitlines() or [""])[0][:300]
      print(f"{desc}: FAILED {type(e).__name__}: {first}", flush=True)
      continue
    finally:  # the run's state and buffers go before the next run allocates its own
      gc.collect()
    r["row"] = label
    results.append(r)
    rows.append(
      label.ljust(name_w)
      + "".join(f"{r.get(c, float('nan')):{w}.4g}" for c, w in zip(columns, width))
    )
    print(f"{desc} ({time.time() - start:.0f} s)\n{header}\n{rows[-1]}", flush=True)
    if json_out:
      with open(json_out, "a") as f:
        f.write(json.dumps(r) + "\n")
  print("\n" + header + "\n" + "\n".join(rows), flush=True)
  return results
