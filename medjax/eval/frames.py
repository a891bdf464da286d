"""Viewing generated videos: uint8 frames, a frame grid (rows: videos, columns: time), MP4 and GIF.

Files are written through etils.epath, so an output folder may be local or gs://.
"""

import io

import numpy as np
from etils import epath

from medjax.data import media_io


def to_uint8(videos, zoom: int = 1) -> np.ndarray:
  """[N, T, H, W, C] in [-1, 1] -> uint8 [N, T, H*zoom, W*zoom, 3] (C 1: grey; C >= 3: the first 3
  channels as RGB)."""
  v = np.asarray(videos)
  if v.ndim != 5 or v.shape[-1] not in (1, 3, 4):
    raise ValueError(f"videos: expected [N, T, H, W, C] with C in (1, 3, 4), got shape {v.shape}")
  v = v[..., :1].repeat(3, axis=-1) if v.shape[-1] == 1 else v[..., :3]
  v = np.clip((v + 1.0) * 127.5, 0, 255).astype(np.uint8)
  return v.repeat(zoom, axis=2).repeat(zoom, axis=3)


def frame_grid(videos, zoom: int = 8) -> np.ndarray:
  """uint8 RGB [rows, cols, 3] image: one row per video, its frames left to right, grey separators."""
  v = to_uint8(videos, zoom)
  n, t, h, w, _ = v.shape
  pad = max(1, zoom // 4)
  grid = np.full((n * (h + pad) - pad, t * (w + pad) - pad, 3), 128, np.uint8)
  for i in range(n):
    for j in range(t):
      grid[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = v[i, j]
  return grid


def write_png(path, image: np.ndarray) -> str:
  """A uint8 image -> PNG at `path` (local or gs://); returns the path."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "PNG")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return str(path)


def write_outputs(
  videos, out_dir, zoom: int = 8, fps: int = 4, names=None, mp4: bool = True
) -> dict:
  """Per video i: <out_dir>/<names[i]>.mp4 (H.264; with `mp4`) and .gif; <out_dir>/grid.png of all.
  `names` defaults to sample_<i>. -> {"mp4": [paths], "gif": [paths], "grid": path}."""
  frames = to_uint8(videos, zoom)
  names = names or [f"sample_{i}" for i in range(len(frames))]
  if len(names) != len(frames):
    raise ValueError(f"names: expected {len(frames)} names (one per video), got {len(names)}")
  out = epath.Path(out_dir)
  paths = {"mp4": [], "gif": []}
  for name, video in zip(names, frames):
    if mp4:
      paths["mp4"].append(media_io.write_mp4(out / f"{name}.mp4", video, fps))
    paths["gif"].append(media_io.write_gif(out / f"{name}.gif", video, fps))
  paths["grid"] = write_png(out / "grid.png", frame_grid(videos, zoom))
  return paths
