"""Viewing generated videos: uint8 frames, a frame grid (rows: videos, columns: time) and a GIF."""

import os

import numpy as np


def to_uint8(videos, zoom: int = 1) -> np.ndarray:
  """[N, T, H, W, C] in [-1, 1] -> uint8 [N, T, H*zoom, W*zoom] (first channel)."""
  v = np.asarray(videos)
  if v.ndim != 5:
    raise ValueError(f"videos: expected [N, T, H, W, C], got shape {v.shape}")
  v = np.clip((v[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)
  return v.repeat(zoom, axis=2).repeat(zoom, axis=3)


def frame_grid(videos, zoom: int = 8) -> np.ndarray:
  """uint8 [rows, cols] image: one row per video, its frames left to right, grey separators."""
  v = to_uint8(videos, zoom)
  n, t, h, w = v.shape
  pad = max(1, zoom // 4)
  grid = np.full((n * (h + pad) - pad, t * (w + pad) - pad), 128, np.uint8)
  for i in range(n):
    for j in range(t):
      grid[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = v[i, j]
  return grid


def write_outputs(videos, out_dir: str, zoom: int = 8, fps: int = 4) -> tuple[str, str]:
  """<out_dir>/sample.gif (the first video) and <out_dir>/grid.png (all); returns their paths."""
  from PIL import Image

  os.makedirs(out_dir, exist_ok=True)
  frames = [Image.fromarray(f) for f in to_uint8(videos[:1], zoom)[0]]
  gif = os.path.join(out_dir, "sample.gif")
  frames[0].save(gif, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
  png = os.path.join(out_dir, "grid.png")
  Image.fromarray(frame_grid(videos, zoom)).save(png)
  return gif, png
