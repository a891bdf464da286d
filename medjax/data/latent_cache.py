"""Offline caches of video latents and caption embeddings, so diffusion training skips the VAE and text encoder.

A cache split is a folder holding x.npy [N, T, h, w, C] (unscaled VAE latents), y.npy [N, L, D] (caption
embeddings), y_mask.npy [N, L] int32 and meta.json (record count, shapes, and whatever the writer adds,
e.g. the VAE's scaling factor). `write_split` fills it from any random-access source of video + caption
records using two encoder callables; `CacheSource` reads it back as memory-mapped records, a source
for `medjax.data.pipeline.dataset`. A split may be a cloud path (gs://...): it is written locally
and uploaded (meta.json last), and read back record by record through byte ranges.
"""

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from medjax import paths

FIELDS = ("x", "y", "y_mask")


def to_pixels(video) -> np.ndarray:
  """A video as float32 in [-1, 1]: uint8 is mapped from [0, 255], floats are taken as already in [-1, 1]."""
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video.astype(np.float32) / 127.5 - 1.0
  return video.astype(np.float32)


def _text(value) -> str:
  return bytes(value).decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def write_split(
  path: str,
  records: Sequence[dict],
  *,
  encode_videos: Callable,
  encode_captions: Callable,
  batch_size: int = 8,
  video_key: str = "video",
  text_key: str = "text",
  dtype="float32",
  meta: dict | None = None,
) -> dict:
  """Encodes every record of `records` into a cache split at `path` (written beside it, then renamed).

  encode_videos: float32 videos [b, T, H, W, C] in [-1, 1] -> latents [b, T, h, w, c];
  encode_captions: list of b strings -> (embeddings [b, L, D], mask [b, L]). Returns the meta dict.
  """
  n = len(records)
  if n == 0:
    raise ValueError("records: expected at least one record, got an empty source")
  if paths.resolve(path).exists():
    raise ValueError(f"path: the cache split {path!r} already exists; remove it or choose another")
  if paths.is_remote(path):
    with tempfile.TemporaryDirectory(prefix="medjax-cache-") as local:
      meta = write_split(
        os.path.join(local, "split"),
        records,
        encode_videos=encode_videos,
        encode_captions=encode_captions,
        batch_size=batch_size,
        video_key=video_key,
        text_key=text_key,
        dtype=dtype,
        meta=meta,
      )
      os.remove(os.path.join(local, "split", "meta.json"))  # uploaded last: it marks a whole split
      paths.copy_tree(os.path.join(local, "split"), path)
    (paths.resolve(path) / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta
  tmp = path + ".incomplete"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  arrays = {}
  for start in range(0, n, batch_size):
    rows = [records[i] for i in range(start, min(n, start + batch_size))]
    x = np.asarray(encode_videos(np.stack([to_pixels(r[video_key]) for r in rows])))
    y, y_mask = encode_captions([_text(r[text_key]) for r in rows])
    batch = {
      "x": x.astype(dtype),
      "y": np.asarray(y, dtype),
      "y_mask": np.asarray(y_mask, np.int32),
    }
    for k, v in batch.items():
      if k not in arrays:
        arrays[k] = np.lib.format.open_memmap(
          os.path.join(tmp, f"{k}.npy"), "w+", v.dtype, (n,) + v.shape[1:]
        )
      arrays[k][start : start + len(rows)] = v
  meta = {
    "count": n,
    **{f"{k}_shape": list(a.shape[1:]) for k, a in arrays.items()},
    **(meta or {}),
  }
  for a in arrays.values():
    a.flush()
  with open(os.path.join(tmp, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  os.rename(tmp, path)
  return meta


def read_meta(path: str) -> dict:
  file = paths.resolve(path) / "meta.json"
  if not file.exists():
    raise ValueError(f"path: expected a latent cache split holding meta.json, got {path!r}")
  return json.loads(file.read_text())


class _Rows:
  """The rows of a .npy file in a bucket, each read by its byte range (no memory map there)."""

  def __init__(self, file):
    self.file = file
    with file.open("rb") as f:
      version = np.lib.format.read_magic(f)
      read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
      }
      if version not in read:
        raise ValueError(f"path: {file}: expected a .npy file of format 1.0 or 2.0, got {version}")
      shape, fortran, self.dtype = read[version](f)
      self.offset = f.tell()
    if fortran:
      raise ValueError(f"path: {file}: expected a C-ordered array, got a Fortran-ordered one")
    self.shape = tuple(shape[1:])
    self.row_bytes = self.dtype.itemsize * math.prod(self.shape)

  def __getitem__(self, i):
    with self.file.open("rb") as f:
      f.seek(self.offset + int(i) * self.row_bytes)
      data = f.read(self.row_bytes)
    return np.frombuffer(data, self.dtype).reshape(self.shape)


class CacheSource:
  """Random access to the records {x, y, y_mask} of a cache split (memory-mapped); `expected`: see
  `check_shapes`."""

  def __init__(self, path: str, expected: dict | None = None):
    self.meta = read_meta(path)
    check_shapes(self.meta, path, expected or {})
    if paths.is_remote(path):
      self._arrays = {k: _Rows(paths.resolve(path) / f"{k}.npy") for k in FIELDS}
    else:
      self._arrays = {k: np.load(os.path.join(path, f"{k}.npy"), mmap_mode="r") for k in FIELDS}

  def __len__(self):
    return self.meta["count"]

  def __getitem__(self, i):
    return {k: np.array(a[int(i)]) for k, a in self._arrays.items()}


def check_shapes(meta: dict, path: str, expected: dict) -> None:
  """Fails unless meta's per-record shapes equal `expected` {field: (shape, config fields it comes from)}."""
  for k, (shape, fields) in expected.items():
    if tuple(meta[f"{k}_shape"]) != tuple(shape):
      raise ValueError(
        f"{fields}: the cache at {path!r} holds {k} of shape {tuple(meta[f'{k}_shape'])} per record, "
        f"the config expects {tuple(shape)}"
      )
