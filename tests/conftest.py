"""Test setup: 8 fake CPU devices, the suite's compiler options (tests/fast_compile.py) and a
persistent compilation cache, set before JAX starts."""

import json
import os
import shutil
import tempfile

from fast_compile import FAST_FLAGS

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_FLAGS}"
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


# Settings under which one training step leaves the params where they started: AdamW's update and
# its decoupled weight decay are both scaled by the learning rate, and an EMA of unmoved params is
# those params.
STEP0 = {
  "train.steps": 1,
  "optim.lr": 0.0,
  "optim.weight_decay": 0.0,
  "train.eval_every": 0,
  "train.async_checkpoints": False,
}


@pytest.fixture
def train_step0(tmp_path):
  """train_step0(config, overrides) runs `experiments/train.py --config=configs/<config>
  --config.<key>=<value> ...` in a subprocess (8 fake CPU devices, the session's compilation cache)
  for one step at which nothing moves (STEP0), then reads the run back through the restore layer
  (the config saved with the checkpoint) -> (params, model, task, config, the run's log)."""
  from scripts import run_script

  from medjax.train.loop import trained_params
  from medjax.train.restore import saved_config

  def run(config: str, overrides: dict):
    workdir = tmp_path / "step0"
    flags = [f"--config.{k}={v}" for k, v in {**overrides, **STEP0}.items()]
    out = run_script(
      "train.py",
      f"--workdir={workdir}",
      f"--config={os.path.join(REPO, 'configs', config)}",
      *flags,
    )
    assert "Initialised from public weights" in out.stderr, out.stderr[-3000:]
    config = saved_config(str(workdir))
    params, model, task, *_ = trained_params(config, str(workdir))
    return params, model, task, config, out.stderr

  return run


@pytest.fixture
def run_colab():
  """run_colab(name, parameters) executes colabs/<name>.ipynb with its parameters cell (tagged 'parameters' or
  starting with '# Parameters') replaced by `parameters`, in a kernel with the scripts' environment
  (tests/scripts.py); returns (all printed text, all outputs)."""

  def run(name: str, parameters: str, timeout: int = 600):
    import nbclient
    import nbformat
    from scripts import script_env

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
    ).execute(env=script_env())
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "\n".join(o.get("text", "") for o in outputs), outputs

  return run


# Scheduling under `-n 2`. Tests run one at a time from a shared queue, slow tests first, so that
# neither worker is left with a long test at the end; the tests of a module that use one of its
# module-scoped fixtures form one unit that a single worker runs, so the fixture is built once.
# (pytest-xdist's own `--dist loadgroup` reads groups from rewritten node ids, which pytest 9 no
# longer allows, so the workers pass the groups to the scheduler through a file.)
_GROUPS_DIR = "MEDJAX_TEST_GROUPS_DIR"


def pytest_configure(config):
  if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
    os.environ[_GROUPS_DIR] = tempfile.mkdtemp(prefix="pytest-groups-")


def pytest_unconfigure(config):
  if not hasattr(config, "workerinput") and _GROUPS_DIR in os.environ:
    shutil.rmtree(os.environ.pop(_GROUPS_DIR), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Orders slow tests and fixture-sharing groups first; workers record the groups."""
  groups = {}
  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    if info and any(d[-1].scope == "module" for d in info.name2fixturedefs.values()):
      groups[item.nodeid] = item.nodeid.split("::")[0]
  slow = {groups.get(i.nodeid, i.nodeid) for i in items if i.get_closest_marker("slow")}
  items.sort(key=lambda i: (groups.get(i.nodeid, i.nodeid) not in slow, i.nodeid not in groups))
  if hasattr(config, "workerinput") and _GROUPS_DIR in os.environ:
    path = os.path.join(os.environ[_GROUPS_DIR], config.workerinput["workerid"] + ".json")
    with open(path + ".tmp", "w") as f:
      json.dump(groups, f)
    os.replace(path + ".tmp", path)


def pytest_xdist_make_scheduler(config, log):
  """For the default `--dist load`: one test (or one fixture group) at a time, in collection order."""
  if config.getvalue("dist") != "load":
    return None
  from xdist.scheduler import LoadScopeScheduling

  class Scheduling(LoadScopeScheduling):
    groups = None

    def _split_scope(self, nodeid):
      if self.groups is None:  # every worker has collected (and recorded) before scheduling
        folder = os.environ[_GROUPS_DIR]
        name = min(n for n in os.listdir(folder) if n.endswith(".json"))
        with open(os.path.join(folder, name)) as f:
          self.groups = json.load(f)
      return self.groups.get(nodeid, nodeid)

  config.option.loadscopereorder = False
  return Scheduling(config, log)


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
