"""The training loop: learning, sharding equivalence, FSDP memory, resume, and clear errors."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import pytest
from fast_compile import DEFAULT, RUN
from scripts import script_env

from medjax import parallel
from medjax.train import loop
from medjax.train.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(workdir):
  return [m["train/loss"] for m in read_metrics(workdir)]


@pytest.mark.slow
def test_tiny_lm_learns_the_triage_task(lm_config, tmp_path):
  cfg = lm_config(
    train__steps=200,
    train__batch_size=32,
    train__eval_every=200,
    train__log_every=50,
    # the held-out loss and the checkpoint are not checked: one eval batch, no checkpoint
    train__eval_batches=1,
    train__checkpoint_every=0,
    data__test_size=64,
    train__compiler_options=RUN,  # 200 steps: XLA's defaults (tests/fast_compile.py)
  )
  result = loop.train(cfg, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])
  # configs/llm.py's docstring and the README promise ~85% held-out accuracy; chance is 0.25
  assert result["eval/answer_accuracy"] >= max(0.8, result["eval/chance"] + 0.5), result
  assert result["eval/unparseable"] <= 0.1


def test_sharded_losses_equal_single_device(lm_config, tmp_path):
  single = lm_config(train__steps=5, parallel__num_devices=1)
  sharded = lm_config(
    train__steps=5, parallel__mesh__data=2, parallel__mesh__fsdp=2, parallel__mesh__tensor=2
  )
  loop.train(single, str(tmp_path / "one"))
  loop.train(sharded, str(tmp_path / "eight"))
  np.testing.assert_allclose(
    _losses(str(tmp_path / "eight")), _losses(str(tmp_path / "one")), atol=1e-5
  )


def test_compiler_options_reach_the_train_and_eval_steps(lm_config, tmp_path):
  """`train.compiler_options` overrides XLA_FLAGS (the suite's level 0) for the loop's two step
  programs: XLA dumps exactly those two (`xla_dump_to`), each with the level it was given."""
  dump = tmp_path / "dump"
  options = f"xla_dump_to={dump} xla_backend_optimization_level=2"
  cfg = lm_config(
    train__steps=1, train__eval_every=1, train__eval_batches=1, train__compiler_options=options
  )
  loop.train(cfg, str(tmp_path / "run"))
  found = {
    f.split(".")[1]: (dump / f).read_text()
    for f in os.listdir(dump)
    if f.endswith(".debug_options")
  }
  assert set(found) == {"jit_step", "jit_eval_step"}, sorted(found)
  assert all("xla_backend_optimization_level: 2" in text for text in found.values()), found


def test_fsdp_shards_params_and_optimizer_state(lm_config):
  from medjax.parallel.sharding import strip_boxes

  cfg = lm_config(parallel__rules="fsdp", parallel__mesh__data=1, parallel__mesh__fsdp=8)
  mesh, rules, task, model = loop.setup(cfg)
  with jax.set_mesh(mesh), flax.linen.logical_axis_rules(rules):
    state, _, _, _ = loop.build_step(cfg, mesh, rules, task, model)
    # The state's init is compiled with INIT_CPU_COMPILER_OPTIONS: the params of XLA's defaults.
    init = lambda r: strip_boxes(task.init_params(model, r, task.dummy_batch(1)))
    rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
    default = jax.jit(init).lower(rng).compile(DEFAULT)(rng)
  assert all(map(np.array_equal, jax.tree.leaves(state.params), jax.tree.leaves(default)))
  trees = (state.params, state.opt_state)
  total = sum(x.nbytes for x in jax.tree.leaves(trees))
  per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(trees))
  assert per_device <= 1.1 * total / 8, (per_device, total)


def _run(args, **kw):
  return subprocess.Popen(
    [sys.executable, os.path.join(REPO, "experiments", "train.py"), *args],
    env=script_env(),  # with the session's compilation cache: one test's runs compile a step once
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kw,
  )


def _final_params(cfg, workdir):
  params, *_ = loop.trained_params(cfg, workdir)
  return jax.tree.map(np.asarray, params)


def _resume_flags(data_dir, steps=24):
  """The tiny LM run of the resume tests: `steps` steps, a checkpoint every 4."""
  return [
    "--config=" + os.path.join(REPO, "configs", "llm.py") + ":tiny",
    f"--config.data.data_dir={data_dir}",
    f"--config.train.steps={steps}",
    "--config.train.checkpoint_every=4",
    "--config.train.batch_size=16",
    "--config.train.log_every=1",
    "--config.data.test_size=0",
    "--config.train.eval_every=0",
  ]


def _kill_when(procs, ready, timeout=600, poll_s=0.05):
  """SIGKILLs every process of `procs` once `ready()` (asked every `poll_s`) is true; fails if one
  ended before."""
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs) and not ready():
    time.sleep(poll_s)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    p.wait()


def _finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  return out


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(lm_config, triage_data_dir, tmp_path):
  flags = _resume_flags(triage_data_dir)
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  _finish(_run(flags + [f"--workdir={full}"]))
  proc = _run(flags + [f"--workdir={killed}"])
  metrics = os.path.join(killed, "metrics.jsonl")
  _kill_when([proc], lambda: os.path.exists(metrics) and len(open(metrics).readlines()) >= 10)
  steps = [json.loads(l)["step"] for l in open(metrics)]
  assert 10 <= steps[-1] < 24
  assert "Resumed from step" in _finish(_run(flags + [f"--workdir={killed}"]))
  events = [f for f in os.listdir(os.path.join(full, "tensorboard")) if f.startswith("events.")]
  assert events and os.path.getsize(os.path.join(full, "tensorboard", events[0])) > 0
  cfg = lm_config(train__steps=24)
  a, b = _final_params(cfg, full), _final_params(cfg, killed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(x, y)


def test_tensorboard_writer_loads_without_torch():
  """tensorboardX would import torch (if installed) only to accept torch tensors: the metric writer
  loads it without, and torch still imports afterwards."""
  code = (
    "import sys; from medjax.train import metrics; metrics._tensorboardx(); "
    "assert 'torch' not in sys.modules, 'torch loaded'; import torch"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-2000:]


def test_unknown_config_key_names_the_nearest(tmp_path):
  proc = _run(
    [
      f"--config={os.path.join(REPO, 'configs', 'llm.py')}:tiny",
      f"--workdir={tmp_path}",
      "--config.train.stepz=3",
    ]
  )
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert "stepz" in out and 'Did you mean "steps"' in out


def test_bad_mesh_and_batch_errors(lm_config, tmp_path):
  with pytest.raises(ValueError, match=r"parallel.mesh.*do not divide the 8 devices"):
    parallel.make_mesh({"data": 3, "fsdp": -1})
  with pytest.raises(ValueError, match=r"parallel.mesh.*needs 4 devices, but 8"):
    parallel.make_mesh({"data": 2, "fsdp": 2})
  with pytest.raises(
    ValueError, match=r"train.batch_size: 12 is not divisible by the data-parallel size"
  ):
    loop.train(lm_config(train__batch_size=12, train__steps=1), str(tmp_path))


def test_corrupt_latest_checkpoint_falls_back(lm_config, tmp_path, caplog):
  cfg = lm_config(train__steps=4, train__checkpoint_every=2)
  loop.train(cfg, str(tmp_path))
  ckpts = tmp_path / "checkpoints"
  for f in (ckpts / "4" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with caplog.at_level(logging.WARNING):
    result = loop.train(lm_config(train__steps=6, train__checkpoint_every=2), str(tmp_path))
  assert "step 4" in caplog.text and "unreadable" in caplog.text
  assert result["step"] == 6
  assert any(p.name.startswith("4.corrupt-") for p in ckpts.iterdir())  # moved aside, not deleted
  steps = [m["step"] for m in read_metrics(str(tmp_path))]
  assert steps == [1, 2, 3, 4, 3, 4, 5, 6]  # resumed from step 2


def test_nan_loss_stops_with_the_step_and_keeps_checkpoints(lm_config, tmp_path):
  cfg = lm_config(
    train__steps=30,
    train__checkpoint_every=1,
    optim__lr=1e12,
    optim__grad_clip=0.0,
    optim__warmup_steps=0.0,
    optim__schedule="constant",
  )
  with pytest.raises(
    FloatingPointError, match=r"Non-finite loss .* at step (\d+).*last good checkpoint is step"
  ):
    loop.train(cfg, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints")


def test_checkpointer_accepts_a_relative_workdir(tmp_path, monkeypatch):
  from medjax.train.checkpoint import Checkpointer

  monkeypatch.chdir(tmp_path)
  state = {"w": np.arange(4.0, dtype=np.float32)}
  ckpt = Checkpointer("rel/checkpoints", use_async=False)
  ckpt.save(1, state, force=True)
  ckpt.wait()
  restored, step = ckpt.restore(
    jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  )
  ckpt.close()
  assert step == 1 and np.array_equal(restored["w"], state["w"])
  assert (tmp_path / "rel" / "checkpoints" / "1").is_dir()


def test_eval_ablation_rolls_the_task_inputs_and_is_refused_without_them(lm_config, tmp_path):
  from medjax.tasks import get_task
  from medjax.train.loop import train

  task = get_task(lm_config())
  task.ablation_keys = ("x",)
  batch = {"x": np.arange(6).reshape(3, 2), "y": np.arange(3)}
  out = task.ablate(batch)
  np.testing.assert_array_equal(out["x"], [[4, 5], [0, 1], [2, 3]])
  np.testing.assert_array_equal(out["y"], batch["y"])
  with pytest.raises(KeyError, match="ablation_keys"):
    task.ablate({"y": batch["y"]})
  task.ablation_keys = ("x", "y")  # one group, or each key alone (what a multi-input task adds)
  assert task.ablation_groups() == {"": ("x", "y")}
  only_y = task.ablate(batch, ("y",))
  np.testing.assert_array_equal(only_y["x"], batch["x"])
  np.testing.assert_array_equal(only_y["y"], [2, 0, 1])
  with pytest.raises(ValueError, match="train.eval_ablation"):
    train(lm_config(train__eval_ablation=True, train__steps=1), str(tmp_path))


def test_frozen_params_cost_no_weight_gradients_and_train_the_same(lm_config, monkeypatch):
  """optim.freeze: the step zeroes frozen gradients itself, so XLA drops their weight-gradient
  matmuls; the update is the one the optimizer's frozen branch gave before, and train/grad_norm
  is the trainable parameters' (the norm clipping uses)."""
  import flax.linen as nn

  from medjax.train.metrics import compiled_cost

  cfg = lm_config(parallel__num_devices=1)
  with cfg.unlocked():
    cfg.optim.freeze = ("^layer_0/",)
  runs = []
  for masked in (True, False):
    if not masked:  # the step as it was: every gradient computed, the optimizer zeroes frozen ones
      monkeypatch.setattr(loop, "trainable_mask", lambda params, patterns: None)
    mesh, rules, task, model = loop.setup(cfg)
    local = next(iter(task.train_data(batch_size=8, seed=0, shard_index=0, shard_count=1)))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state, _, jitted, _ = loop.build_step(cfg, mesh, rules, task, model)
      batch = parallel.global_batch(local, mesh)
      compiled = jitted.lower(state, batch).compile()
      before = jax.device_get(state.params)
      state, m = compiled(state, batch)
    runs.append((before, jax.device_get(state.params), float(m["train/grad_norm"])))
    runs[-1] += (compiled_cost(compiled)["flops"],)
  (start, masked_p, masked_norm, masked_flops), (_, full_p, full_norm, full_flops) = runs
  flat = lambda t: flax.traverse_util.flatten_dict(t, sep="/")
  for k, v in flat(masked_p).items():
    if k.startswith("layer_0/"):
      np.testing.assert_array_equal(v, flat(start)[k], err_msg=k)
    np.testing.assert_allclose(v, flat(full_p)[k], rtol=1e-6, atol=1e-7, err_msg=k)
  assert 0 < masked_norm < full_norm
  assert masked_flops < 0.97 * full_flops, (masked_flops, full_flops)
