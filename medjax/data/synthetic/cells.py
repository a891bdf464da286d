"""Synthetic microscopy-like videos with captions: bright Gaussian "cells" drifting on a dark field.

Each video has 1-`max_count` (default 4) cells moving together in one of four directions at a slow or
fast speed. The caption states the count, direction and speed, e.g. "3 cells moving left fast". Two kinds
of motion (`motion`):
- "cross" (the default): cells migrate across the field, as in a chemotaxis or wound-healing assay. Each
  starts where its whole path stays inside the field (at least one sigma from the border), so a "right"
  clip begins with its cells on the left. The direction shows in where the cells are over time as well
  as in how they move.
- "wrap": cells start anywhere and wrap around the border (a torus). Every frame's layout is then
  uniform whatever the caption, and the direction shows only in the motion between frames.
Pixels are in [-1, 1] (background -1), channels-last [T, H, W, 1], ready to be used as the diffusion
"latents" directly.
"""

import numpy as np

DIRECTIONS = ("up", "down", "left", "right")
SPEEDS = ("slow", "fast")
# (dy, dx) per frame for a unit speed; image rows grow downwards.
_STEP = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
# Caption words -> fixed ids (0 is padding).
WORDS = ("<pad>", "1", "2", "3", "4", "cell", "cells", "moving", *DIRECTIONS, *SPEEDS)
WORD_IDS = {w: i for i, w in enumerate(WORDS)}


def caption(count: int, direction: str, speed: str) -> str:
  return f"{count} cell{'s' if count > 1 else ''} moving {direction} {speed}"


def parse_caption(text: str) -> dict:
  """Inverse of `caption` (for prompts given on the command line)."""
  words = text.lower().replace(",", " ").split()
  out = {}
  for w in words:
    if w.isdigit():
      out["count"] = int(w)
    elif w in DIRECTIONS:
      out["direction"] = w
    elif w in SPEEDS:
      out["speed"] = w
  missing = {"count", "direction", "speed"} - set(out)
  if missing or not 1 <= out["count"] <= 4:
    raise ValueError(
      f"prompt: expected e.g. '3 cells moving left fast' (count 1-4, direction in {DIRECTIONS}, "
      f"speed in {SPEEDS}), got {text!r}"
    )
  return out


def tokenize(text: str, max_len: int, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
  """Caption -> (ids [max_len] int32, mask [max_len] int32): word ids, or a ByteTokenizer's ids."""
  if tokenizer is None:
    ids = [WORD_IDS[w] for w in text.split()]
  else:
    ids = tokenizer.encode(text)
  if len(ids) > max_len:
    raise ValueError(f"max_len: caption {text!r} has {len(ids)} tokens, more than {max_len}")
  out, mask = np.zeros(max_len, np.int32), np.zeros(max_len, np.int32)
  out[: len(ids)], mask[: len(ids)] = ids, 1
  return out, mask


def render(positions: np.ndarray, size: int, sigma: float, brightness: np.ndarray) -> np.ndarray:
  """Frames [T, size, size] with Gaussian blobs at positions [T, N, 2] (wrapped distances), in [-1, 1]."""
  grid = np.arange(size, dtype=np.float32)
  d = grid[None, None, :] - positions[..., None]  # [T, N, 2, size]
  d = (d + size / 2) % size - size / 2
  g = np.exp(-0.5 * (d / sigma) ** 2)
  img = np.einsum("tny,tnx,n->tyx", g[:, :, 0], g[:, :, 1], brightness)
  return np.clip(2.0 * img - 1.0, -1.0, 1.0).astype(np.float32)


MOTIONS = ("cross", "wrap")


def _check_motion(motion: str, frames: int, size: int, speeds, sigma: float):
  if motion not in MOTIONS:
    raise ValueError(f"motion: expected one of {MOTIONS}, got {motion!r}")
  travel = max(speeds) * (frames - 1)
  if motion == "cross" and travel > size - 1 - 2 * sigma:
    raise ValueError(
      f"speeds: with motion='cross' the fastest path ({max(speeds)} px x {frames - 1} frames = "
      f"{travel:g} px) must fit in the field less a sigma each side ({size - 1 - 2 * sigma:g} px), "
      f"got speeds={tuple(speeds)}"
    )


def make_example(
  rng: np.random.Generator,
  *,
  frames: int = 8,
  size: int = 16,
  speeds=(0.5, 1.5),
  sigma: float = 1.3,
  max_count: int = 4,
  start_spread: float = 0.0,
  motion: str = "cross",
) -> dict:
  """dict(video [T, size, size, 1], count, direction (index), speed (index), caption).

  `speeds`: pixels per frame of the "slow" and "fast" captions; `max_count` in 1-4; `motion`: "cross" or
  "wrap" (see the module docstring); `start_spread` > 0 (wrap only): cells start in a square of that side
  around the centre (0: anywhere)."""
  if not 1 <= max_count <= 4:
    raise ValueError(f"max_count: expected 1-4 cells, got {max_count!r}")
  _check_motion(motion, frames, size, speeds, sigma)
  count = int(rng.integers(1, max_count + 1))
  direction, speed = int(rng.integers(4)), int(rng.integers(2))
  step = np.array(_STEP[DIRECTIONS[direction]], np.float32) * speeds[speed]
  if motion == "cross":
    # Along the motion: the path [start, start + travel] lies in [sigma, size - 1 - sigma].
    lo = sigma + np.maximum(-step * (frames - 1), 0.0)
    hi = size - 1 - sigma - np.maximum(step * (frames - 1), 0.0)
    start = rng.uniform(lo, hi, (count, 2))
  elif start_spread > 0:
    start = size / 2 + rng.uniform(-start_spread / 2, start_spread / 2, (count, 2))
  else:
    start = rng.uniform(0, size, (count, 2))
  positions = (start[None] + np.arange(frames)[:, None, None] * step) % size
  video = render(positions.astype(np.float32), size, sigma, rng.uniform(0.8, 1.0, count))
  return {
    "video": video[..., None],
    "count": count,
    "direction": direction,
    "speed": speed,
    "caption": caption(count, DIRECTIONS[direction], SPEEDS[speed]),
  }


class CellsSource:
  """A deterministic random-access source: record i is generated from (seed, i)."""

  def __init__(self, num_records: int, seed: int, **example_kw):
    if num_records <= 0:
      raise ValueError(f"num_records: expected a positive int, got {num_records!r}")
    self._size, self._seed, self._kw = num_records, seed, example_kw

  def __len__(self):
    return self._size

  def __getitem__(self, i):
    return make_example(np.random.default_rng((self._seed, int(i))), **self._kw)


def encode(example: dict, max_text_len: int, tokenizer=None) -> dict:
  """A record -> {x [T,H,W,1], y [L], y_mask [L], direction}: one batch row."""
  ids, mask = tokenize(example["caption"], max_text_len, tokenizer)
  return {
    "x": example["video"],
    "y": ids,
    "y_mask": mask,
    "direction": np.int32(example["direction"]),
  }
