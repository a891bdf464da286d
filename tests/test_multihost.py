"""Multi-host input: every host count gives the same global batches, and a host's iterator resumes.

The launcher here starts `experiments/train.py` as N processes sharing 8 CPU devices; the
multi-process training run itself (2 processes x 4 devices SIGKILLed, resumed, and equal to 1 process
x 8 devices) runs in tests/test_gcs.py, on the storage a pod slice uses."""

import itertools
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from scripts import script_env

from medjax.data import pipeline, tokenizers

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


def _launch(workdir, num_processes, flags):
  """Starts experiments/train.py with `flags` as `num_processes` processes sharing 8 CPU devices."""
  args = [
    sys.executable,
    os.path.join(ROOT, "experiments", "train.py"),
    *flags,
    f"--workdir={workdir}",
  ]
  env = script_env(devices=8 // num_processes)
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
