"""Starts a training job on a Cloud TPU VM slice and keeps it running through spot preemptions.

Every worker of a slice runs the same `experiments/train.py` command; `jax.distributed.initialize()`
finds the coordinator from the TPU VM's metadata, and the shared `gs://` workdir is where each
worker writes its checkpoint shards, so a relaunch after a preemption resumes where it stopped.
The steps are gcloud commands run by a `Runner`; `DryRun` prints them instead (and is what the
tests check).
"""

import dataclasses
import shlex
import subprocess
import sys
import time

from medjax.parallel.topology import Topology, parse_topology

REMOTE_DIR = "medjax"  # under each worker's home directory
CODE_ARCHIVE = "medjax-code.tar.gz"
LOG = "medjax-train.log"
EXIT_MARK = "medjax-exit"  # the job's last log line: "medjax-exit <status>"
GONE = ("PREEMPTED", "TERMINATED", "STOPPED", "FAILED")  # states a relaunch recreates


@dataclasses.dataclass(frozen=True)
class Slice:
  """The TPU VM slice: its name, zone, topology and software version."""

  name: str
  zone: str
  topology: Topology
  project: str = ""
  runtime_version: str = ""  # default: the generation's (medjax.parallel.topology.CHIPS)
  spot: bool = False

  @property
  def version(self) -> str:
    return self.runtime_version or self.topology.chip.runtime_version


@dataclasses.dataclass(frozen=True)
class Job:
  """What every worker runs: a config, its overrides and the shared workdir."""

  config: str
  workdir: str
  overrides: tuple[str, ...] = ()
  env: tuple[str, ...] = ()  # KEY=VALUE set for the training process


def make_slice(name, zone, topology, project="", runtime_version="", spot=False) -> Slice:
  for field, value in (("name", name), ("zone", zone)):
    if not value:
      raise ValueError(f"--{field}: expected a non-empty TPU VM {field}, got {value!r}")
  return Slice(name, zone, parse_topology(topology), project, runtime_version, spot)


def make_job(config, workdir, s: Slice, overrides=(), env=()) -> Job:
  """Checks what the job needs before anything is created or compiled."""
  topology = s.topology
  if not config:
    raise ValueError("--config: expected a config file, e.g. configs/llm.py:llama-3.2-1b, got ''")
  if not workdir.startswith("gs://") and (topology.hosts > 1 or s.spot):
    why = (
      f"a {topology.name} slice has {topology.hosts} workers, which share checkpoints only "
      "through a bucket"
      if topology.hosts > 1
      else "a spot VM's disk is lost when it is preempted"
    )
    raise ValueError(f"--workdir: {why}: expected gs://BUCKET/PATH, got {workdir!r}")
  for o in overrides:
    if not o.startswith("--config."):
      raise ValueError(f"override: expected --config.FIELD=VALUE, got {o!r}")
  for e in env:
    if "=" not in e or not e.split("=", 1)[0].isidentifier():
      raise ValueError(f"--env: expected KEY=VALUE, got {e!r}")
  if topology.hosts > 1:
    overrides = (*overrides, "--config.parallel.distributed=True")
  return Job(config, workdir, tuple(overrides), tuple(env))


# ----------------------------------------------------------------------------- commands


def _gcloud(s: Slice, verb: str, *args: str) -> list[str]:
  project = [f"--project={s.project}"] if s.project else []
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={s.zone}", *project]


def create_command(s: Slice) -> list[str]:
  return _gcloud(
    s,
    "create",
    s.name,
    f"--accelerator-type={s.topology.accelerator_type}",
    f"--version={s.version}",
    *(["--spot"] if s.spot else []),
  )


def state_command(s: Slice) -> list[str]:
  return _gcloud(s, "describe", s.name, "--format=value(state)")


def delete_command(s: Slice) -> list[str]:
  return _gcloud(s, "delete", s.name, "--quiet")


def ssh_command(s: Slice, worker: str, command: str) -> list[str]:
  return _gcloud(s, "ssh", s.name, f"--worker={worker}", f"--command={command}")


def copy_command(s: Slice, archive: str) -> list[str]:
  return _gcloud(s, "scp", archive, f"{s.name}:~/{CODE_ARCHIVE}", "--worker=all")


def archive_command(archive: str) -> list[str]:
  """The committed tree (HEAD) as a tarball: what every worker installs."""
  return ["git", "archive", "--format=tar.gz", f"--output={archive}", "HEAD"]


def aot_command(job: Job, topology: Topology) -> list[str]:
  """The fit check, compiled on this machine for the slice before anything is created."""
  return [
    sys.executable,
    "experiments/aot_compile.py",
    f"--config={job.config}",
    f"--topology={topology.name}",
    *(o for o in job.overrides if not o.startswith("--config.parallel.distributed")),
  ]


def install_script() -> str:
  """Unpacks the code and installs it with the TPU build of jax into a venv on each worker."""
  d = f"~/{REMOTE_DIR}"
  return (
    "set -e; if pgrep -f experiments/train.py > /dev/null; then "
    "echo 'a medjax job already runs on this worker (launch with --attach to follow it)' >&2; "
    f"exit 3; fi; rm -rf {d} && mkdir -p {d} && tar -xzf ~/{CODE_ARCHIVE} -C {d} && cd {d} && "
    "python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && "
    ".venv/bin/pip install -q -e '.[tpu]'"
  )


def train_script(job: Job) -> str:
  """Starts training detached from the ssh session; the log ends with `medjax-exit <status>`."""
  argv = [
    ".venv/bin/python",
    "experiments/train.py",
    f"--config={job.config}",
    f"--workdir={job.workdir}",
    *job.overrides,
  ]
  run = " ".join([*job.env, shlex.join(argv)])
  inner = f'{run}; echo "{EXIT_MARK} $?"'
  return (
    f"cd ~/{REMOTE_DIR} && nohup setsid bash -c {shlex.quote(inner)} > ~/{LOG} 2>&1 < /dev/null &"
  )


def follow_script() -> str:
  """Prints worker 0's log as it grows and returns once the job has written its exit line."""
  return (
    f"touch ~/{LOG}; tail -n +1 -F ~/{LOG} & t=$!; "
    f"until grep -q '^{EXIT_MARK} ' ~/{LOG}; do sleep 10; done; sleep 2; kill $t"
  )


# ----------------------------------------------------------------------------- running


class Runner:
  """Runs commands; `stream` prints a command's output live and returns (status, its last line)."""

  def run(self, cmd: list[str], check: bool = True) -> tuple[int, str]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
      raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.returncode, p.stdout.strip()

  def stream(self, cmd: list[str]) -> tuple[int, str]:
    last = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
      for line in p.stdout:
        sys.stdout.write(line)
        last = line.strip() or last
    return p.returncode, last

  def sleep(self, seconds: float):
    time.sleep(seconds)


class DryRun(Runner):
  """Prints each command instead of running it; the slice does not exist and the job succeeds."""

  def __init__(self, out=sys.stdout):
    self.out = out

  def run(self, cmd, check=True):
    print(f"$ {shlex.join(cmd)}", file=self.out)
    if cmd[4:5] == ["describe"]:  # first look: no slice yet; after create: READY
      self._created = getattr(self, "_created", False)
      return (0, "READY") if self._created else (1, "")
    if cmd[4:5] == ["create"]:
      self._created = True
    return 0, ""

  def stream(self, cmd):
    print(f"$ {shlex.join(cmd)}", file=self.out)
    return 0, f"{EXIT_MARK} 0"

  def sleep(self, seconds):
    pass


def slice_state(runner: Runner, s: Slice) -> str:
  """READY, CREATING, PREEMPTED, ... or '' when the slice does not exist."""
  code, out = runner.run(state_command(s), check=False)
  return out.strip() if code == 0 else ""


def ensure_slice(runner: Runner, s: Slice, poll_s: float = 30, timeout_s: float = 3600):
  """Reuses a READY slice, recreates a preempted one, creates a missing one; waits for READY."""
  state = slice_state(runner, s)
  if state in GONE:
    runner.run(delete_command(s))
    state = ""
  if not state:
    runner.run(create_command(s))
  waited = 0.0
  while (state := slice_state(runner, s)) != "READY":
    if state in GONE or waited >= timeout_s:
      raise RuntimeError(f"TPU VM {s.name}: state {state or 'missing'} after {waited:.0f} s")
    runner.sleep(poll_s)
    waited += poll_s


def start_job(runner: Runner, s: Slice, job: Job, archive: str):
  """Copies the code to every worker, installs it and starts the same command on all of them."""
  runner.run(copy_command(s, archive))
  runner.run(ssh_command(s, "all", install_script()))
  runner.run(ssh_command(s, "all", train_script(job)))


def launch(
  runner: Runner,
  s: Slice,
  job: Job,
  archive: str,
  check_fit: bool = True,
  max_restarts: int = 5,
  poll_s: float = 30,
  attach: bool = False,
) -> int:
  """Fit check, slice, code, job; follows worker 0's log and relaunches after a preemption.

  `attach` follows a job an earlier launch started instead of starting one. Returns the job's exit
  status. A relaunch runs the same command against the same workdir, so the
  trainer resumes from the newest checkpoint every worker wrote there.
  """
  if check_fit and not attach:
    code, _ = runner.stream(aot_command(job, s.topology))
    if code:
      raise RuntimeError(
        f"the train step does not fit a {s.topology.name} chip (see the report above); nothing "
        "was created"
      )
  runner.run(archive_command(archive))
  for attempt in range(max_restarts + 1):
    if not (attach and attempt == 0):
      ensure_slice(runner, s, poll_s)
      start_job(runner, s, job, archive)
    while True:
      _, last = runner.stream(ssh_command(s, "0", follow_script()))
      if last.startswith(EXIT_MARK):
        return int(last.split()[1])
      state = slice_state(runner, s)
      if state != "READY":
        break
      runner.sleep(poll_s)  # the log stream dropped but the slice runs on: follow it again
    print(
      f"TPU VM {s.name} is {state or 'gone'} (attempt {attempt + 1} of {max_restarts + 1}); "
      f"relaunching, the job resumes from {job.workdir}",
      file=sys.stderr,
    )
  raise RuntimeError(f"TPU VM {s.name}: gave up after {max_restarts} relaunches")
