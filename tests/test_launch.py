"""The TPU VM launcher: slice arithmetic, argument checks, and the command sequence it runs.

The commands are checked through the launcher's dry run and a scripted runner (no cloud access):
a fit check first, a missing slice created, a preempted one recreated and the same job relaunched
against the same workdir, a dropped log stream followed again without a second job.
"""

import io
import os
import shlex
import subprocess
import sys

import pytest

from medjax.launch import tpu_vm
from medjax.parallel.topology import parse_topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = "gs://bucket/runs/llama-1b"


@pytest.mark.parametrize(
  "name, accelerator, chips, hosts",
  [
    ("v5p-64", "v5p-64", 32, 8),
    ("v5p-8", "v5p-8", 4, 1),
    ("v4-8", "v4-8", 4, 1),
    ("v4-128", "v4-128", 64, 16),
    ("v5e-8", "v5litepod-8", 8, 1),
    ("v5litepod-16", "v5litepod-16", 16, 4),
    ("v6e-256", "v6e-256", 256, 64),
  ],
)
def test_slice_workers(name, accelerator, chips, hosts):
  topo = parse_topology(name)
  assert (topo.accelerator_type, topo.chips, topo.hosts) == (accelerator, chips, hosts)


def _slice(topology="v5p-64", spot=True):
  return tpu_vm.make_slice("run-1b", "us-east5-a", topology, spot=spot)


def test_bad_arguments_are_named_before_anything_runs():
  with pytest.raises(ValueError, match=r"--workdir: a v5p-64 slice has 8 workers.*gs://"):
    tpu_vm.make_job("configs/llm.py:tiny", "/tmp/run", _slice())
  with pytest.raises(ValueError, match=r"--workdir: a spot VM's disk"):
    tpu_vm.make_job("configs/llm.py:tiny", "runs/x", _slice("v5p-8"))
  tpu_vm.make_job("configs/llm.py:tiny", "runs/x", _slice("v5p-8", spot=False))  # one VM, kept
  with pytest.raises(ValueError, match=r"override: expected --config.FIELD=VALUE, got '--steps=3'"):
    tpu_vm.make_job("configs/llm.py:tiny", WORKDIR, _slice(), ["--steps=3"])
  with pytest.raises(ValueError, match=r"--env: expected KEY=VALUE, got 'XLA'"):
    tpu_vm.make_job("configs/llm.py:tiny", WORKDIR, _slice(), env=["XLA"])
  with pytest.raises(ValueError, match=r"--zone: expected a non-empty"):
    tpu_vm.make_slice("run", "", "v5p-64")
  with pytest.raises(ValueError, match=r"topology: expected <generation>-<count>"):
    tpu_vm.make_slice("run", "us-east5-a", "v5q-64")


class Scripted(tpu_vm.DryRun):
  """A runner whose slice states and log endings follow a script; it records every command."""

  def __init__(self, states, log_ends, fit=0):
    super().__init__(out=io.StringIO())
    self.states, self.log_ends, self.fit, self.commands = list(states), list(log_ends), fit, []

  def run(self, cmd, check=True):
    self.commands.append(cmd)
    if cmd[4:5] == ["describe"]:
      state = self.states.pop(0)
      return (0, state) if state else (1, "")
    return 0, ""

  def stream(self, cmd):
    self.commands.append(cmd)
    if "aot_compile.py" in " ".join(cmd):
      return self.fit, ""
    return 0, self.log_ends.pop(0)

  def verbs(self):
    """Each command in short: a script name, git-archive, a gcloud verb or ssh:<what>:<worker>."""
    out = []
    for c in self.commands:
      if c[0] == "git":
        out.append("git-archive")
      elif c[0] != "gcloud":
        out.append(c[1].split("/")[-1])
      elif c[4] == "ssh":
        script = next(a for a in c if a.startswith("--command="))
        what = (
          "install" if "pip install" in script else "train" if "train.py" in script else "follow"
        )
        worker = next(a for a in c if a.startswith("--worker=")).split("=")[1]
        out.append(f"ssh:{what}:{worker}")
      else:
        out.append(c[4])
    return out


def _launch(runner, **kw):
  s = _slice()
  job = tpu_vm.make_job(
    "configs/llm.py:llama-3.2-1b", WORKDIR, s, ["--config.model.remat=full"], ["A=1"]
  )
  return tpu_vm.launch(runner, s, job, "code.tar.gz", poll_s=0, **kw)


def test_preempted_slice_is_recreated_and_the_same_job_resumes():
  # missing -> created (CREATING, READY); job runs; preempted; recreated; job finishes with 0
  runner = Scripted(
    states=["", "CREATING", "READY", "PREEMPTED", "PREEMPTED", "READY"],
    log_ends=["Connection to worker 0 closed by remote host.", "medjax-exit 0"],
  )
  assert _launch(runner) == 0
  assert runner.verbs() == [
    "aot_compile.py",
    "git-archive",
    "describe",
    "create",
    "describe",
    "describe",
    "scp",
    "ssh:install:all",
    "ssh:train:all",
    "ssh:follow:0",
    "describe",  # the stream ended without the exit line: PREEMPTED
    "describe",
    "delete",
    "create",
    "describe",
    "scp",
    "ssh:install:all",
    "ssh:train:all",
    "ssh:follow:0",
  ]
  trains = [c for c in runner.commands if "nohup" in " ".join(c)]
  assert trains[0] == trains[1]  # the relaunch is the same command against the same workdir
  script = next(a for a in trains[0] if a.startswith("--command=")).split("=", 1)[1]
  train = shlex.split(script)
  inner = train[train.index("-c") + 1]
  assert f"--workdir={WORKDIR}" in inner and "--config.parallel.distributed=True" in inner
  assert inner.startswith("A=1 .venv/bin/python experiments/train.py")
  create = runner.commands[3]
  assert "--accelerator-type=v5p-64" in create and "--spot" in create


def test_dropped_log_stream_is_followed_again_without_a_second_job():
  runner = Scripted(states=["READY", "READY", "READY"], log_ends=["", "medjax-exit 3"])
  assert _launch(runner) == 3  # the job's own status comes back
  assert runner.verbs().count("ssh:train:all") == 1
  assert runner.verbs().count("ssh:follow:0") == 2


def test_attach_only_follows():
  runner = Scripted(states=[], log_ends=["medjax-exit 0"])
  assert _launch(runner, attach=True) == 0
  assert runner.verbs() == ["git-archive", "ssh:follow:0"]


def test_a_step_that_does_not_fit_stops_before_any_slice_exists():
  runner = Scripted(states=[], log_ends=[], fit=1)
  with pytest.raises(RuntimeError, match="does not fit a v5p-64 chip.*nothing was created"):
    _launch(runner)
  assert runner.verbs() == ["aot_compile.py"]


def test_dry_run_script_prints_the_v5p_64_job():
  out = subprocess.run(
    [
      sys.executable,
      "experiments/launch_tpu.py",
      "--dry_run",
      "--name=run-1b",
      "--zone=us-east5-a",
      "--topology=v5p-64",
      "--spot",
      "--config=configs/llm.py:llama-3.2-1b",
      f"--workdir={WORKDIR}",
      "--",
      "--config.parallel.mesh.fsdp=-1",
    ],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    check=True,
  )
  assert "32 chips on 8 worker(s)" in out.stderr
  lines = out.stdout.splitlines()
  assert "aot_compile.py" in lines[0] and "--topology=v5p-64" in lines[0]
  assert any(
    "tpu-vm create run-1b --accelerator-type=v5p-64 --version=v2-alpha-tpuv5" in x for x in lines
  )
  assert "--worker=0" in lines[-1]
