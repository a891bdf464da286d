"""Running the scripts of experiments/ in a subprocess, as a user would, on CPU."""

import os
import subprocess
import sys

import jax
from fast_compile import FAST_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env(devices: int = 8) -> dict:
  """The environment of a script subprocess: CPU with `devices` fake devices, the repository on the
  path, the session's compilation cache (tests/conftest.py), so runs share compiled steps, and the
  suite's compiler options (tests/fast_compile.py: the scripts and notebooks the tests run train a
  few steps, so compiling dominates), so a subprocess computes what the test process does."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )
  fake = f"--xla_force_host_platform_device_count={devices} " if devices > 1 else ""
  env["XLA_FLAGS"] = fake + FAST_FLAGS
  return env


def run_script(name: str, *args, devices: int = 8, timeout: int = 600):
  """Runs experiments/<name> with `args` to completion in `script_env(devices)`; fails with its log
  unless it exits 0. -> the CompletedProcess (text stdout / stderr)."""
  out = subprocess.run(
    [sys.executable, os.path.join(ROOT, "experiments", name), *args],
    cwd=ROOT,
    env=script_env(devices),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out
