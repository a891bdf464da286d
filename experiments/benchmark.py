"""Training-step benchmark: step time, tokens/s, TFLOP/s per device, MFU and compiled memory.

python experiments/benchmark.py --configs=configs/llm.py:tiny,configs/llm.py:tiny-gemma --steps=10
Any config of any family works (its task defines the batch); --set applies overrides to every config,
e.g. --set=train.batch_size=8,data.seq_len=128; --config adds one config with its own overrides, e.g.
--config="configs/llm.py:llama-3.2-1b data.tokenizer=byte train.batch_size=8 model.attention_impl=cudnn".
MFU uses the analytic model FLOPs (6 N T + attention for decoders and STDiT; no remat recomputation) where the
family has them, else XLA's count of the compiled step (which includes recomputation: closer to HFU; on GPU
XLA's count misses cuBLAS/cuDNN calls, so MFU is left out there). benchmarks/gpu_mfu.sh runs the GPU table.
"""

import json
import time

import jax
import numpy as np
from absl import app, flags

from medjax.config_lib import config_from_file

flags.DEFINE_list(
  "configs", ["configs/llm.py:tiny", "configs/llm.py:tiny-gemma"], "Config files with variants."
)
flags.DEFINE_integer(
  "steps", 10, "Timed steps per config (after one warm-up step); 0: compile only."
)
flags.DEFINE_list("set", [], "Overrides key=value applied to every config.")
flags.DEFINE_multi_string(
  "config", [], "One config and its own overrides: 'path:variant key=value ...'."
)
flags.DEFINE_string("json_out", "", "Also append each result as a JSON line to this file.")
flags.DEFINE_integer("data_batches", 20, "Batches drawn to time the input pipeline (0 to skip).")
FLAGS = flags.FLAGS


def _fill(x, rng):
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.floating):
    return rng.standard_normal(x.shape).astype(x.dtype)
  return np.ones_like(x)


def benchmark(config, steps: int, data_batches: int = 0) -> dict:
  """Compiles and times the real training step of `config` on synthetic inputs of the right shapes."""
  import flax.linen as nn

  from medjax import parallel
  from medjax.train import loop
  from medjax.train.metrics import compiled_cost, peak_flops

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


def main(argv):
  del argv
  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}")
  runs = [(spec, list(FLAGS.set)) for spec in FLAGS.configs]
  runs += [(item.split()[0], list(FLAGS.set) + item.split()[1:]) for item in FLAGS.config]
  width = [max(12, len(c) + 1) for c in COLUMNS]
  header = "config".ljust(34) + "".join(c.rjust(w) for c, w in zip(COLUMNS, width))
  rows = []
  for spec, overrides in runs:
    try:
      r = benchmark(config_from_file(spec, overrides), FLAGS.steps, FLAGS.data_batches)
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
    if FLAGS.json_out:
      with open(FLAGS.json_out, "a") as f:
        f.write(json.dumps(r) + "\n")
  print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
  app.run(main)
