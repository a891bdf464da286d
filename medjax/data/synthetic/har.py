"""Synthetic HAR-CoT: 3-axis accelerometer windows (128 samples at 50 Hz) of 8 activities.

Each activity has its own pattern of oscillating axes (a periodic component on some axes, noise
only on the others), its own frequency and its own gravity offset. Every series is z-normalised;
its mean and std are written into the prompt (as in OpenTSLM), so the offset survives only as text
while the shape survives in the series. The target is a one-line templated rationale (which axes
oscillate, and how fast) followed by "Answer: <label>".
"""

import numpy as np

TS = "<ts>"  # placeholder of one series in the prompt text
AXES = ("x", "y", "z")
LENGTH = 128
LABELS = (
  "lying",
  "sitting",
  "standing",
  "biking",
  "walking",
  "walking up",
  "walking down",
  "running",
)
# label -> (oscillating axes, cycles per window, gravity offset per axis)
PATTERNS = {
  "lying": ((), 0, (9.8, 0.0, 0.0)),
  "sitting": (("z",), 2, (0.0, 3.0, 9.3)),
  "standing": (("y",), 3, (0.0, 9.8, 0.0)),
  "biking": (("x",), 5, (2.0, 9.0, 3.0)),
  "walking": (("x", "y"), 8, (0.5, 9.7, 1.0)),
  "walking up": (("y", "z"), 7, (0.5, 9.5, 2.0)),
  "walking down": (("x", "z"), 9, (0.5, 9.6, -1.5)),
  "running": (("x", "y", "z"), 14, (1.0, 9.5, 1.0)),
}
PRE_PROMPT = "Accelerometer, 50 Hz, 3 axes.\n"
POST_PROMPT = "Activity?"


def make_example(rng: np.random.Generator) -> dict:
  """{"series": float32 [3, 128] raw accelerometer, "label": str}."""
  label = LABELS[int(rng.integers(len(LABELS)))]
  axes, cycles, gravity = PATTERNS[label]
  t = np.arange(LENGTH) / LENGTH
  series = []
  for axis, g in zip(AXES, gravity):
    x = g + rng.normal(0.0, rng.uniform(0.05, 0.2), LENGTH)
    if axis in axes:
      f = cycles * rng.uniform(0.9, 1.1)
      x += rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    series.append(x)
  return {"series": np.stack(series).astype(np.float32), "label": label}


def example(seed: int, index: int) -> dict:
  """The deterministic example `index` of the stream `seed`."""
  return make_example(np.random.default_rng([seed, index]))


def normalize(series: np.ndarray) -> tuple[np.ndarray, float, float]:
  """Per-series z-normalisation -> (normalised, mean, std)."""
  mean, std = float(np.mean(series)), float(np.std(series))
  return ((series - mean) / max(std, 1e-6)).astype(np.float32), mean, std


def rationale(label: str) -> str:
  axes, cycles, _ = PATTERNS[label]
  if not axes:
    return "No axis oscillates."
  speed = "slow" if cycles < 4 else "medium" if cycles < 10 else "fast"
  return f"{speed.capitalize()} oscillation on {'+'.join(axes)}."


def format_example(ex: dict) -> tuple[str, list[np.ndarray], str]:
  """(prompt with one TS placeholder per series, normalised series, target) of a synthetic example or a
  HAR-CoT record ({"series" [3, N], "label", "rationale"})."""
  parts, normed = [PRE_PROMPT], []
  for axis, s in zip(AXES, ex["series"]):
    z, mean, std = normalize(s)
    normed.append(z)
    parts.append(f"{TS} {axis}: mean {mean:.2f} std {std:.2f}\n")
  parts.append(POST_PROMPT)
  why = ex.get("rationale") or rationale(ex["label"])  # real HAR-CoT records bring their own
  return "".join(parts), normed, f" {why}" if "Answer:" in why else f" {why} Answer: {ex['label']}"
