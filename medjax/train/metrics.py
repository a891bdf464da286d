"""Metric writers (JSONL + TensorBoard), compiled-step cost, MFU and progress."""

import json
import os
import time

import jax
from absl import logging

from medjax import paths

# Peak dense bf16 FLOP/s per chip, by substring of jax.Device.device_kind (lower case).
PEAK_FLOPS = {
  "h200": 989e12,
  "h100": 989e12,
  "a100": 312e12,
  "l4": 121e12,
  "v6 lite": 918e12,
  "v6e": 918e12,
  "v5p": 459e12,
  "v5 lite": 197e12,
  "v5e": 197e12,
  "v4": 275e12,
}


# HBM bandwidth in bytes/s per chip (vendor datasheets), by the same kind of substring; the first
# match wins, so the more specific names come first.
HBM_BANDWIDTH = {
  "h200": 4.8e12,
  "h100 pcie": 2.0e12,
  "h100": 3.35e12,
  "a100-sxm4-40gb": 1.555e12,
  "a100": 2.039e12,
  "l4": 0.3e12,
  "v6 lite": 1.64e12,
  "v6e": 1.64e12,
  "v5p": 2.765e12,
  "v5 lite": 0.819e12,
  "v5e": 0.819e12,
  "v4": 1.2e12,
}


def _by_kind(table: dict, device) -> float | None:
  kind = (device or jax.devices()[0]).device_kind.lower()
  return next((v for k, v in table.items() if k in kind), None)


def peak_flops(device=None) -> float | None:
  """Peak dense bf16 FLOP/s of `device` (default: the first), or None for an unknown kind."""
  return _by_kind(PEAK_FLOPS, device)


def hbm_bandwidth(device=None) -> float | None:
  """HBM bytes/s of `device` (default: the first), or None for an unknown kind."""
  return _by_kind(HBM_BANDWIDTH, device)


def compiled_cost(compiled) -> dict:
  """Per-device FLOPs and memory of a compiled (SPMD-partitioned) step."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  out = {"flops": float((cost or {}).get("flops", 0.0))}
  mem = compiled.memory_analysis()
  if mem is not None:
    out.update(
      argument_bytes=mem.argument_size_in_bytes,
      output_bytes=mem.output_size_in_bytes,
      temp_bytes=mem.temp_size_in_bytes,
      alias_bytes=mem.alias_size_in_bytes,
      code_bytes=getattr(mem, "generated_code_size_in_bytes", 0),
    )
    out["total_bytes"] = (
      out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    )
  return out


class _Lines:
  """A text file that lines are appended to: a local file in place; a cloud object, which cannot be
  appended to, rewritten whole (with what it held before) when `flush` is forced or `flush_secs`
  have passed since the last upload."""

  def __init__(self, path, flush_secs: float):
    self.path, self.flush_secs = path, flush_secs
    if paths.is_remote(path):
      self._file = None
      self._text = [path.read_text()] if path.exists() else []
      self._dirty, self._flushed = False, time.time()
    else:
      self._file = open(path, "a")

  def write(self, line: str):
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
      return
    self._text.append(line)
    self._dirty = True
    self.flush(force=False)

  def flush(self, force: bool = True):
    if (
      self._file is None
      and self._dirty
      and (force or time.time() - self._flushed >= self.flush_secs)
    ):
      self.path.write_text("".join(self._text))
      self._dirty, self._flushed = False, time.time()

  def close(self):
    if self._file is not None:
      self._file.close()
    else:
      self.flush()


def _tensorboardx():
  """tensorboardX, imported without torch when torch is not loaded yet.

  tensorboardX imports torch, if installed, only to accept torch tensors as values; medjax logs
  floats, and the import costs about 1.5 s of every training process (and pulls torch's threads
  into JAX's). The package's own fallback for a missing torch is used instead."""
  import sys

  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX

    return tensorboardX
  sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads
  try:
    import tensorboardX
  finally:
    del sys.modules["torch"]
  return tensorboardX


class MetricWriter:
  """One JSON object per line in WORKDIR/metrics.jsonl, plus TensorBoard events (process 0 only).

  WORKDIR may be a cloud path (gs://...): metrics.jsonl is then uploaded at most every `flush_secs`
  and at every `flush()` (the loop calls it with each checkpoint), TensorBoard events by
  tensorboardX (every 2 minutes and on close)."""

  def __init__(self, workdir, flush_secs: float = 30.0):
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      workdir = paths.resolve(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._file = _Lines(workdir / "metrics.jsonl", flush_secs)
      try:
        self._tb = _tensorboardx().SummaryWriter(os.fspath(workdir / "tensorboard"))
      except ImportError:
        logging.warning("tensorboardX is not installed; TensorBoard events are not written.")

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), **clean}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(k, v, int(step))

  def flush(self):
    """Makes what was written durable (uploads metrics.jsonl of a cloud workdir)."""
    if self.enabled:
      self._file.flush()

  def close(self):
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


class Progress:
  """Rate and ETA for the log."""

  def __init__(self, first_step: int, total_steps: int):
    self.first, self.total, self.t0 = first_step, total_steps, time.time()

  def line(self, step: int) -> str:
    done = step - self.first
    elapsed = time.time() - self.t0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    return f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) {rate:.2f} steps/s ETA {eta:.0f}s"


def read_metrics(workdir) -> list[dict]:
  """Reads WORKDIR/metrics.jsonl (local or a cloud path) back (handy in notebooks and tests)."""
  text = (paths.resolve(workdir) / "metrics.jsonl").read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]
