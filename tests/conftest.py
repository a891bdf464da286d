"""Test setup: 8 fake CPU devices and a persistent compilation cache, set before JAX starts."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def triage_data_dir(tmp_path_factory):
  """The embedded triage task built once per test session as TFDS array_record files."""
  from medjax.data.synthetic import tfds_builder

  path = str(tmp_path_factory.mktemp("tfds"))
  tfds_builder.get_builder(path)
  return path


@pytest.fixture
def lm_config(triage_data_dir):
  """configs/llm.py:tiny made small enough for tests; pass overrides as dotted keys."""
  import sys

  sys.path.insert(0, REPO)
  from configs import llm

  def make(**overrides):
    c = llm.get_config("tiny")
    c.data.data_dir = triage_data_dir
    c.update_from_flattened_dict(
      {
        "train.batch_size": 16,
        "train.eval_every": 0,
        "train.log_every": 1,
        "train.async_checkpoints": False,
        "data.test_size": 0,
        **{k.replace("__", "."): v for k, v in overrides.items()},
      }
    )
    return c

  return make


@pytest.fixture
def run_colab():
  """run_colab(name, parameters) executes colabs/<name>.ipynb with its parameters cell (tagged 'parameters' or
  starting with '# Parameters') replaced by `parameters`; returns (all printed text, all outputs)."""

  def run(name: str, parameters: str, timeout: int = 600):
    import nbclient
    import nbformat

    nb = nbformat.read(os.path.join(REPO, "colabs", f"{name}.ipynb"), as_version=4)
    cell = next(
      c
      for c in nb.cells
      if c.cell_type == "code"
      and ("parameters" in c.metadata.get("tags", []) or c.source.startswith("# Parameters"))
    )
    cell.source = parameters
    nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": REPO}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "\n".join(o.get("text", "") for o in outputs), outputs

  return run


def pytest_sessionfinish(session, exitstatus):
  """Under CI=true a skipped test is a failure: CI installs every optional dependency (torch,
  transformers, diffusers, libtpu), so a skip there means a parity or AOT check silently did not run."""
  if os.environ.get("CI", "").lower() != "true" or exitstatus != 0:
    return
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  skipped = reporter.stats.get("skipped", []) if reporter else []
  if skipped:
    for r in skipped:
      reporter.write_line(f"SKIPPED under CI=true: {r.nodeid} ({r.longrepr[-1]})", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
