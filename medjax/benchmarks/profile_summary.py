"""Top XLA ops by time in a `jax.profiler` trace directory (reads the XSpace with jax's own
`jax.profiler.ProfileData`; no TensorBoard or xprof needed).

Device planes (GPU/TPU) count their "XLA Ops" line where the trace has one, else every kernel on
their stream lines, keyed by the HLO op that launched it. A CPU-only trace has no device plane:
the host's events that carry an `hlo_op` stat (XLA:CPU's thunks) are counted instead.
"""

import collections
import glob
import os

import jax

_DERIVED = ("XLA Modules", "Steps", "Framework", "Source code", "TensorFlow", "XLA TraceMe")


def _stats(event) -> dict:
  return {k: v for k, v in event.stats if k is not None}


def _device_events(plane):
  lines = {line.name: line for line in plane.lines}
  if "XLA Ops" in lines:
    return list(lines["XLA Ops"].events)
  return [
    e
    for name, line in lines.items()
    if not any(name.startswith(d) for d in _DERIVED)
    for e in line.events
  ]


def latest_xspace(trace_dir: str) -> str:
  """The newest *.xplane.pb under `trace_dir` (jax.profiler.trace writes plugins/profile/RUN/)."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise FileNotFoundError(f"trace_dir: no *.xplane.pb under {trace_dir!r}")
  return max(files, key=os.path.getmtime)


def top_ops(trace_dir: str, top: int = 20) -> tuple[str, list[dict]]:
  """-> (where the times come from, rows {op, total_ms, count, share} by total time, at most
  `top`); share is of the total over every op counted."""
  data = jax.profiler.ProfileData.from_file(latest_xspace(trace_dir))
  planes = list(data.planes)
  events, source = [], ""
  for plane in planes:
    if plane.name.startswith("/device:") and not plane.name.startswith("/device:CUSTOM"):
      found = _device_events(plane)
      if found:
        events += found
        source = source or f"device ({plane.name})"
  if not events:
    source = "host (no device plane: XLA:CPU thunks)"
    for plane in planes:
      if plane.name.startswith("/host:"):
        events += [e for line in plane.lines for e in line.events if "hlo_op" in _stats(e)]
  totals, counts = collections.Counter(), collections.Counter()
  for e in events:
    name = _stats(e).get("hlo_op") or e.name
    totals[name] += e.duration_ns
    counts[name] += 1
  grand = sum(totals.values()) or 1.0
  rows = [
    {"op": op, "total_ms": ns / 1e6, "count": counts[op], "share": ns / grand}
    for op, ns in totals.most_common(top)
  ]
  return source, rows


def format_top_ops(source: str, rows: list[dict]) -> str:
  """The `top_ops` result as a text table."""
  out = [f"top ops by total time, {source}", f"{'op':<60}{'total ms':>12}{'count':>8}{'share':>8}"]
  out += [
    f"{r['op'][:59]:<60}{r['total_ms']:>12.3f}{r['count']:>8d}{100 * r['share']:>7.1f}%"
    for r in rows
  ]
  return "\n".join(out)


def trace_steps(step, state, batch, path: str, steps: int = 2):
  """`steps` more calls of a compiled `step(state, batch) -> (state, metrics)` traced into `path`;
  -> the new state. A profiler that fails is reported, not raised: the benchmark's timing stands."""
  try:
    with jax.profiler.trace(path):
      for _ in range(steps):
        state, m = step(state, batch)
      jax.block_until_ready(m)
  except Exception as e:  # noqa: BLE001 - any profiler failure; the figures must not be lost
    print(f"{path}: no trace ({type(e).__name__}: {e})", flush=True)
  return state


def report_top_ops(path: str, top: int = 20, keep: bool = False) -> str:
  """Prints the top ops of the trace in `path` (or why there are none) and, with `keep`, writes
  them to `path`.top_ops.txt; -> the text."""
  try:
    text = format_top_ops(*top_ops(path, top=top))
  except Exception as e:  # noqa: BLE001 - the trace stays on disk; the row's figures stand
    text = f"{path}: no top ops ({type(e).__name__}: {e})"
  print(text, flush=True)
  if keep:
    with open(path + ".top_ops.txt", "w") as f:
      f.write(text + "\n")
  return text
