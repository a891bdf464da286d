"""Synthetic HAR-CoT: 3-axis accelerometer windows (128 samples at 50 Hz) of 8 activities.

Each activity has its own pattern of oscillating axes (a periodic component on some axes, noise
only on the others) and its own frequency. The device's orientation (the gravity offset of each
axis) and each axis's gain are drawn independently of the activity: a raw axis is
`offset + gain * shape`, with `shape` the activity's z-normalised waveform. So each axis's mean
and std, written into the prompt (as in OpenTSLM), carry no label information; the activity is
only in the z-normalised series the model reads. The target is a one-line templated rationale
(which axes oscillate, and how fast) followed by "Answer: <label>".
"""

import numpy as np

TS = "<ts>"  # placeholder of one series in the prompt text
AXES = ("x", "y", "z")
LENGTH = 128
GRAVITY = 9.8
GAIN = (0.1, 3.0)  # range of an axis's std (log-uniform), whatever the activity
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
# label -> (oscillating axes, cycles per window)
PATTERNS = {
  "lying": ((), 0),
  "sitting": (("z",), 2),
  "standing": (("y",), 3),
  "biking": (("x",), 5),
  "walking": (("x", "y"), 8),
  "walking up": (("y", "z"), 7),
  "walking down": (("x", "z"), 9),
  "running": (("x", "y", "z"), 14),
}
PRE_PROMPT = "Accelerometer, 50 Hz, 3 axes.\n"
POST_PROMPT = "Activity?"


def make_example(rng: np.random.Generator) -> dict:
  """{"series": float32 [3, 128] raw accelerometer, "label": str}."""
  label = LABELS[int(rng.integers(len(LABELS)))]
  axes, cycles = PATTERNS[label]
  t = np.arange(LENGTH) / LENGTH
  up = rng.normal(size=3)
  gravity = GRAVITY * up / np.linalg.norm(up)  # a random device orientation
  series = []
  for axis, g in zip(AXES, gravity):
    x = rng.normal(0.0, rng.uniform(0.1, 0.3), LENGTH)
    if axis in axes:
      f = cycles * rng.uniform(0.9, 1.1)
      x += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    gain = np.exp(rng.uniform(*np.log(GAIN)))
    series.append(g + gain * (x - x.mean()) / x.std())
  return {"series": np.stack(series).astype(np.float32), "label": label}


def example(seed: int, index: int) -> dict:
  """The deterministic example `index` of the stream `seed`."""
  return make_example(np.random.default_rng([seed, index]))


def normalize(series: np.ndarray) -> tuple[np.ndarray, float, float]:
  """Per-series z-normalisation -> (normalised, mean, std)."""
  mean, std = float(np.mean(series)), float(np.std(series))
  return ((series - mean) / max(std, 1e-6)).astype(np.float32), mean, std


def rationale(label: str) -> str:
  axes, cycles = PATTERNS[label]
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
