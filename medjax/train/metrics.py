"""Metric writers (JSONL + TensorBoard), compiled-step cost, MFU and progress."""

import json
import os
import time

import jax
from absl import logging

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


def peak_flops(device=None) -> float | None:
  kind = (device or jax.devices()[0]).device_kind.lower()
  for key, value in PEAK_FLOPS.items():
    if key in kind:
      return value
  return None


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


class MetricWriter:
  """One JSON object per line in WORKDIR/metrics.jsonl, plus TensorBoard events (process 0 only)."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.warning("tensorboardX is not installed; TensorBoard events are not written.")

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(k, v, int(step))

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


def read_metrics(workdir: str) -> list[dict]:
  """Reads WORKDIR/metrics.jsonl back (handy in notebooks and tests)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
