"""Synthetic HAR-CoT: 3-axis accelerometer windows (128 samples at 50 Hz) of 8 activities.

Each activity moves the device at its own speed (slow, medium or fast oscillation) along 1, 2 or 3
axes (none when lying); the other axes carry noise only. The device's orientation is random, so
which axes move, each axis's gravity offset and each axis's gain are drawn independently of the
activity: a raw axis is `offset + gain * shape`, with `shape` a z-normalised waveform. Each axis's
mean and std, written into the prompt (as in OpenTSLM), so carry no label information; the activity
is only in the series the model reads (how fast and how many axes oscillate). The target is a
one-line templated rationale (how fast, on how many axes) followed by "Answer: <label>".
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
# label -> (number of oscillating axes, speed); speed -> cycles per window
PATTERNS = {
  "lying": (0, None),
  "sitting": (1, "slow"),
  "standing": (2, "slow"),
  "biking": (1, "medium"),
  "walking": (2, "medium"),
  "walking up": (3, "medium"),
  "walking down": (2, "fast"),
  "running": (3, "fast"),
}
CYCLES = {"slow": 2, "medium": 6, "fast": 12}
PRE_PROMPT = "Accelerometer, 50 Hz, 3 axes.\n"
POST_PROMPT = "Activity?"


def make_example(rng: np.random.Generator) -> dict:
  """{"series": float32 [3, 128] raw accelerometer, "label": str}."""
  label = LABELS[int(rng.integers(len(LABELS)))]
  count, speed = PATTERNS[label]
  moving = rng.permutation(3)[:count]  # which axes move depends on the device's orientation
  t = np.arange(LENGTH) / LENGTH
  up = rng.normal(size=3)
  gravity = GRAVITY * up / np.linalg.norm(up)  # a random device orientation
  series = []
  for axis, g in enumerate(gravity):
    x = rng.normal(0.0, rng.uniform(0.1, 0.3), LENGTH)
    if axis in moving:
      f = CYCLES[speed] * rng.uniform(0.9, 1.1)
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
  count, speed = PATTERNS[label]
  if not count:
    return "No axis oscillates."
  return f"{speed.capitalize()} oscillation on {count} {'axis' if count == 1 else 'axes'}."


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
