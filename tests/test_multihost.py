"""Multi-host training: 2 processes x 4 CPU devices form one global mesh and match 1 process x 8 devices."""

import itertools
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from medjax.data import pipeline, tokenizers
from medjax.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hosts(n, batch_size, **kw):
  source = [{"q": f"question {i}"} for i in range(40)]
  return [
    pipeline.dataset(
      source,
      pipeline.lm_encoder(lambda ex: (ex["q"], "answer"), tokenizers.ByteTokenizer(), seq_len=24),
      batch_size=batch_size // n,
      seed=3,
      shard_index=i,
      shard_count=n,
      **kw,
    )
    for i in range(n)
  ]


@pytest.mark.parametrize("num_epochs", [None, 1])
def test_global_batch_does_not_depend_on_host_count(num_epochs):
  """Host i's batch is the i-th slice of the global batch, for 1, 2 or 4 hosts, across epochs."""

  def global_batches(n):
    per_host = [list(itertools.islice(ds, 6)) for ds in _hosts(n, 8, num_epochs=num_epochs)]
    assert len({len(b) for b in per_host}) == 1  # every host runs the same number of steps
    return [np.concatenate([b[k]["tokens"] for b in per_host]) for k in range(len(per_host[0]))]

  one = global_batches(1)
  assert len(one) == (6 if num_epochs is None else 5)
  for n in (2, 4):
    np.testing.assert_array_equal(np.stack(global_batches(n)), np.stack(one))


def test_per_host_iterator_resumes():
  it = iter(_hosts(2, 8)[1])
  for _ in range(3):
    next(it)
  state, want = it.get_state(), [next(it)["tokens"] for _ in range(4)]
  fresh = iter(_hosts(2, 8)[1])
  fresh.set_state(state)
  np.testing.assert_array_equal(np.stack([next(fresh)["tokens"] for _ in range(4)]), np.stack(want))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _flags(steps):
  """The multi-host test's tiny LM run of `steps` steps."""
  return [
    "--config=configs/llm.py:tiny",
    f"--config.train.steps={steps}",
    "--config.train.batch_size=16",
    "--config.train.eval_every=0",
    "--config.data.test_size=0",
    "--config.train.checkpoint_every=2",
    "--config.train.log_every=1",
    "--config.train.async_checkpoints=False",
    "--config.optim.schedule=constant",
    "--config.optim.warmup_steps=0",
  ]  # the same lr whatever `steps` is


def _launch(workdir, num_processes, flags):
  """Starts experiments/train.py with `flags` as `num_processes` processes sharing 8 CPU devices."""
  args = [
    sys.executable,
    os.path.join(ROOT, "experiments", "train.py"),
    *flags,
    f"--workdir={workdir}",
  ]
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"),
    XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // num_processes}",
  )
  if num_processes > 1:
    args += [
      "--config.parallel.distributed=True",
      f"--config.parallel.coordinator=127.0.0.1:{_free_port()}",
      f"--config.parallel.num_processes={num_processes}",
    ]
  return [
    subprocess.Popen(
      args + ([f"--config.parallel.process_id={i}"] if num_processes > 1 else []),
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]


def _wait(procs):
  """Waits for every process of a run; fails with the log of one that failed. -> their outputs."""
  try:
    outs = [p.communicate(timeout=400)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def _train(workdir, steps, num_processes):
  """Runs experiments/train.py as `num_processes` processes sharing 8 CPU devices; waits for all."""
  return _wait(_launch(workdir, num_processes, _flags(steps)))


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(tmp_path):
  from medjax.data.synthetic import tfds_builder

  tfds_builder.get_builder()  # prepare the dataset once, before several processes read it
  two = tmp_path / "two"
  _train(two, 2, 2)  # steps 1-2 on 2 processes, checkpoint at step 2
  outs = _train(two, 4, 2)  # both processes restore step 2 (state + their data iterators)
  assert all("Resumed from step 2" in out for out in outs)
  _train(tmp_path / "one", 4, 1)
  loss = lambda w: {m["step"]: m["train/loss"] for m in metrics_lib.read_metrics(w)}
  want, got = loss(tmp_path / "one"), loss(two)
  assert sorted(got) == sorted(want) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)], rtol=0, atol=1e-5
  )
  assert want[4] < want[1]
