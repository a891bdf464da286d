"""The one training loop: every model family runs through `train(config, workdir)`."""

import copy
import signal
import time

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medjax import config_lib, parallel, paths, tasks
from medjax.checkpoints import init as init_lib
from medjax.parallel.sharding import batch_sharding, data_parallel_size
from medjax.train import metrics as metrics_lib
from medjax.train.best import METRIC as BEST_METRIC
from medjax.train.best import BestParams, load_params
from medjax.train.checkpoint import Checkpointer
from medjax.train.optim import make_optimizer, trainable_mask
from medjax.train.state import create_train_state
from medjax.train.step import make_eval_step, make_train_step


class _Preemption:
  """Turns SIGTERM into a flag checked after each step (the loop then saves and exits)."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not on the main thread (e.g. some notebook kernels)
      self._old = None
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting.")
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def any_process(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def check_batch_size(batch_size: int, mesh, grad_accum: int = 1) -> int:
  """Validates the global batch against the mesh; returns the per-host batch size."""
  dp = data_parallel_size(mesh)
  if batch_size % (dp * grad_accum):
    raise ValueError(
      f"train.batch_size: {batch_size} is not divisible by the data-parallel size "
      f"(data x fsdp = {dp}) x train.grad_accum ({grad_accum}) = {dp * grad_accum}"
    )
  if batch_size % jax.process_count():
    raise ValueError(
      f"train.batch_size: {batch_size} is not divisible by the {jax.process_count()} processes"
    )
  return batch_size // jax.process_count()


def setup(config, devices=None):
  """Mesh (over `devices` if given), rules, task, model; shared by training, benchmarks and AOT."""
  n = config.parallel.num_devices
  if n < 0 or n > jax.device_count():
    raise ValueError(f"parallel.num_devices: expected 0 (all) to {jax.device_count()}, got {n}")
  if devices is None:
    devices = jax.devices()[:n] if n else None
  mesh = parallel.make_mesh(config.parallel.mesh, devices)
  rules = parallel.logical_rules(config.parallel.rules)
  task = tasks.get_task(config)
  return mesh, rules, task, task.build_model()


def build_step(config, mesh, rules, task, model, rng=None, abstract_only=False):
  """Sharded state + the jitted train step, not yet compiled -> (state, shardings, jitted, schedule).

  `abstract_only`: the state is ShapeDtypeStructs with shardings (nothing allocated; for AOT).
  """
  t = config.train
  holder = {}

  def make_tx(abstract_params):
    tx, holder["schedule"] = make_optimizer(config.optim, abstract_params, t.steps)
    holder["trainable"] = trainable_mask(abstract_params, config.optim.freeze)
    return tx

  rng = jax.random.PRNGKey(config.seed) if rng is None else rng
  state, shardings, tx = create_train_state(
    task,
    model,
    make_tx,
    rng,
    task.dummy_batch(1),
    mesh,
    rules,
    ema=t.ema_decay > 0,
    abstract_only=abstract_only,
  )
  step = make_train_step(
    task, model, tx, holder["schedule"], t.grad_accum, t.ema_decay, holder["trainable"]
  )
  dummy = task.dummy_batch(t.batch_size)
  b_shard = jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), dummy)
  jitted = jax.jit(
    step,
    in_shardings=(shardings, b_shard),
    out_shardings=(shardings, NamedSharding(mesh, P())),
    donate_argnums=(0,),
  )
  return state, shardings, jitted, holder["schedule"]


def compile_step(config, jitted, state, task, mesh):
  """The jitted train step compiled for `state` and a global batch, with `train.compiler_options`
  (inside the mesh and rules context); shared by training, AOT and the step benchmark."""
  batch = abstract_batch(task, config.train.batch_size, mesh)
  return jitted.lower(state, batch).compile(config_lib.compiler_options(config.train))


def abstract_batch(task, batch_size, mesh):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      np.shape(x), np.asarray(x).dtype, sharding=batch_sharding(mesh, np.ndim(x))
    ),
    task.dummy_batch(batch_size),
  )


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _finite(x) -> bool:
  return bool(np.all(np.isfinite(x)))


def evaluate(config, task, model, params, mesh, rules, eval_fn, ablate=(), group: str = "") -> dict:
  """Averaged eval metrics over the task's eval set plus the task's own evaluation, named
  `eval/...`; with `ablate` (keys of the batch, or True for all the task's `ablation_keys`), the
  same on those inputs rolled across the batch (`Task.ablate`), named `eval_ablated[_group]/...`."""
  prefix = ("eval_ablated" + (f"_{group}" if group else "")) if ablate else "eval"
  out = {}
  per_host = config.train.eval_batch_size // jax.process_count()
  data = task.eval_data(
    batch_size=per_host, shard_index=jax.process_index(), shard_count=jax.process_count()
  )
  if data is not None:
    sums = {}
    for i, batch in enumerate(data):
      if i >= config.train.eval_batches > 0:
        break
      batch = task.ablate(batch, ablate) if ablate else batch
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        res = jax.device_get(eval_fn(params, parallel.global_batch(batch, mesh)))
      for k, (s, c) in res.items():
        a, b = sums.get(k, (0.0, 0.0))
        sums[k] = (a + float(s), b + float(c))
    out.update({f"{prefix}/{k}": s / max(c, 1e-9) for k, (s, c) in sums.items()})
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out.update({f"{prefix}/{k}": v for k, v in task.evaluate(model, params, ablate).items()})
  return out


def epochs_to_steps(config, task):
  """With `train.epochs` > 0, a copy of `config` that trains that many epochs of the task's training
  split, ceil(examples / batch_size) steps each (the step count of a PyTorch DataLoader that keeps
  the last partial batch; here batches are full and run on into the next, reshuffled epoch), and
  evaluates after every epoch, so that keep_best and early_stop_patience act per epoch."""
  epochs = config.train.get("epochs", 0)
  if not epochs:
    return config
  n = len(task.source("train"))
  per_epoch = -(-n // config.train.batch_size)
  config = copy.deepcopy(config)
  config.train.steps, config.train.eval_every = epochs * per_epoch, per_epoch
  logging.info(
    "%d epochs of %d examples: %d steps, eval every %d", epochs, n, config.train.steps, per_epoch
  )
  return config


def _with_params(state, params):
  """`state` starting from `params`; the EMA (if any) gets its own copy, as the train step donates
  both buffers."""
  ema = jax.tree.map(jax.numpy.copy, params) if state.ema_params is not None else None
  return state.replace(params=params, ema_params=ema)


def train(config, workdir: str) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the last train and eval metrics.

  `train.keep_best` keeps the params of the lowest eval loss in `workdir/best`; `train.early_stop_patience`
  (> 0) also stops after that many evaluations without improvement; `train.init_from` (a `best`
  directory of another run) initialises a fresh run's params from it (e.g. curriculum stages).
  """
  config_lib.validate(config, workdir, jax.device_count())  # a workdir it cannot write fails here
  workdir = paths.resolve(workdir)  # local or gs://
  t = config.train
  if (t.keep_best or t.early_stop_patience) and not (t.eval_every or t.get("epochs", 0)):
    raise ValueError(
      "train.eval_every: expected > 0 with train.keep_best or train.early_stop_patience, got 0"
    )
  mesh, rules, task, model = setup(config)
  config = epochs_to_steps(config, task)
  t = config.train
  if t.eval_ablation and not task.ablation_keys:
    raise ValueError(
      f"train.eval_ablation: the {config.task!r} task has no non-text input to ablate "
      "(Task.ablation_keys is empty); expected False"
    )
  per_host = check_batch_size(t.batch_size, mesh, t.grad_accum)  # and the process count
  logging.info(
    "mesh %s, rules %s, %d processes", dict(mesh.shape), config.parallel.rules, jax.process_count()
  )

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, shardings, jitted, _ = build_step(config, mesh, rules, task, model)
    compiled = compile_step(config, jitted, state, task, mesh)
  cost = metrics_lib.compiled_cost(compiled)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info(
    "%.2fM parameters; per-device step: %.3f GFLOP, %.1f MiB",
    n_params / 1e6,
    cost["flops"] / 1e9,
    cost.get("total_bytes", 0) / 2**20,
  )
  eval_fn = jax.jit(make_eval_step(task, model), compiler_options=config_lib.compiler_options(t))

  ckpt = Checkpointer(
    workdir / "checkpoints", keep=t.keep_checkpoints, use_async=t.async_checkpoints
  )
  train_iter = iter(
    task.train_data(
      batch_size=per_host,
      seed=config.seed,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )
  )
  restored, restored_step = ckpt.restore(_abstract(state), train_iter)
  if restored is not None:
    state = restored
    logging.info("Resumed from step %d in %s", restored_step, workdir)
  elif t.init_from:
    params, n = load_params(t.init_from, state.params)
    state = _with_params(state, params)
    logging.info("Initialised %d param arrays from %s", n, t.init_from)
  if restored is None and config_lib.init_sources(config.get("init", {})):
    params, reports = init_lib.load(state.params, task.init_slots(), config.init, donate=True)
    state = _with_params(state, params)
    logging.info("Initialised from public weights:\n%s", init_lib.format_report(reports))
  best = (
    BestParams(workdir / "best", t.early_stop_patience)
    if (t.keep_best or t.early_stop_patience)
    else None
  )
  start = int(jax.device_get(state.step))
  end = t.steps
  if best is not None and best.stop:
    logging.info(
      "This run early-stopped before (best %s at step %s); not training further.",
      BEST_METRIC,
      best.record["step"],
    )
    end = start
  writer = metrics_lib.MetricWriter(workdir)
  peak = metrics_lib.peak_flops()
  progress = metrics_lib.Progress(start, t.steps)
  last = {}
  last_saved = restored_step
  with _Preemption() as preempt:
    tick = time.time()
    for step in range(start, end):
      local = next(train_iter)
      batch = parallel.global_batch(local, mesh)
      state, m = compiled(state, batch)
      m = jax.device_get(m)
      if not _finite(m["train/loss"]):
        ckpt.wait()
        writer.flush()
        raise FloatingPointError(
          f"Non-finite loss ({m['train/loss']}) at step {step + 1}; stopping. The last good checkpoint is "
          f"step {last_saved} in {ckpt.directory} (restart to resume from it, e.g. with a lower optim.lr)."
        )
      now = time.time()
      dt, tick = now - tick, now
      m = {k: float(v) for k, v in m.items()}
      m["perf/step_time_s"] = dt
      m["perf/examples_per_s"] = t.batch_size / dt
      m["perf/tokens_per_s"] = task.count_tokens(local) * jax.process_count() / dt
      m["perf/tflops_per_device"] = cost["flops"] / dt / 1e12
      if peak:
        m["perf/mfu"] = cost["flops"] / dt / peak
      done = step + 1
      if t.eval_every and (done % t.eval_every == 0 or done == t.steps):
        params = state.ema_params if state.ema_params is not None else state.params
        m.update(evaluate(config, task, model, params, mesh, rules, eval_fn))
        if t.eval_ablation:
          for group, keys in task.ablation_groups().items():
            m.update(evaluate(config, task, model, params, mesh, rules, eval_fn, keys, group))
        if best is not None:
          if BEST_METRIC not in m:
            raise ValueError(
              f"train.keep_best / train.early_stop_patience: the task's eval gives no {BEST_METRIC}"
            )
          best.update(done, m[BEST_METRIC], params)
        tick = time.time()
      writer.write(done, m)
      last.update(m)
      if done % t.log_every == 0 or done == t.steps:
        logging.info(
          "%s | loss %.4f | %.3fs/step %.0f tok/s %s",
          progress.line(done),
          m["train/loss"],
          dt,
          m["perf/tokens_per_s"],
          " ".join(f"{k}={v:.4g}" for k, v in m.items() if k.startswith("eval/")),
        )
      stop = preempt.any_process() if (done % t.log_every == 0 or preempt.requested) else False
      early = best is not None and best.stop
      if (
        done == t.steps or stop or early or (t.checkpoint_every and done % t.checkpoint_every == 0)
      ):
        ckpt.save(done, state, train_iter, config, force=True)
        writer.flush()  # a cloud workdir's metrics.jsonl keeps up with its checkpoints
        last_saved = done
      if stop:
        logging.warning("Preempted at step %d: checkpoint saved, exiting.", done)
        last["preempted"] = 1.0
        break
      if early:
        logging.info(
          "Early stop at step %d: no %s improvement in %d evaluations (best %.4f at step %d).",
          done,
          BEST_METRIC,
          t.early_stop_patience,
          best.record["loss"],
          best.record["step"],
        )
        break
  ckpt.close()
  writer.close()
  last["step"] = float(jax.device_get(state.step))
  if best is not None:
    last.update(
      {
        "best/step": float(best.record["step"] or 0),
        "best/eval_loss": best.record["loss"],
        "best/early_stopped": float(best.stop),
      }
    )
  return last


def trained_params(config, workdir: str):
  """Loads the newest checkpoint's params (EMA if present) for evaluation, with their model and task."""
  mesh, rules, task, model = setup(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, _, _, _ = build_step(config, mesh, rules, task, model, abstract_only=True)
  ckpt = Checkpointer(
    paths.resolve(workdir) / "checkpoints", keep=config.train.keep_checkpoints, use_async=False
  )
  restored, step = ckpt.restore(_abstract(state))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"--workdir: no checkpoint under {workdir}/checkpoints")
  params = restored.ema_params if restored.ema_params is not None else restored.params
  return params, model, task, mesh, rules, step
