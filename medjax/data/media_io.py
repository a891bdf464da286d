"""Shared by the image / volume / video TFDS builders in data/: file loading, resizing, schemas, task
examples; video reading and writing (MP4, GIF) and Open-Sora's temporal crop.

Images are stored uint8 [size, size, channels]: the whole image, its longer side resized to `size`
(bicubic) and centred on a black square, never flipped (laterality matters). Volumes are stored
float32 [frames, size, size, 1] in [0, 1]: NIfTI volumes are reoriented to RAS and laid out as axial
slices (inferior -> superior) seen in the radiological convention (rows anterior -> posterior,
columns patient right -> left); NumPy volumes are taken as [D, H, W] (or M3D's [1, D, H, W]) as stored.
"""

import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

CLOSED, OPEN = 0, 1  # answer kinds, as in medjax.data.synthetic.phantoms
ANSWER_TYPES = {"CLOSED": "closed", "OPEN": "open"}
PLACEHOLDERS = {"image": "<image>", "volume": "<volume>"}


@dataclasses.dataclass
class ImageConfig(tfds.core.BuilderConfig):
  image_size: int = 224
  channels: int = 3


@dataclasses.dataclass
class VolumeConfig(tfds.core.BuilderConfig):
  frames: int = 32
  image_size: int = 224
  window: tuple[float, float] | None = (
    None  # (lo, hi) intensity window (e.g. HU); None: per-volume min-max
  )


IMAGE_CONFIGS = [
  ImageConfig(name="default", description="224x224 RGB (SigLIP So400m/14 input)"),
  ImageConfig(name="tiny", image_size=32, channels=1, description="32x32 grey (tiny configs)"),
]


def image_tensor(cfg: ImageConfig) -> tfds.features.Tensor:
  return tfds.features.Tensor(
    shape=(cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8, encoding="zlib"
  )


def vqa_features(cfg: ImageConfig, *metadata: str) -> tfds.features.FeaturesDict:
  """id, image, image_name, question, answer, answer_type ("closed" | "open") and text `metadata`."""
  names = ("id", "image_name", "question", "answer", "answer_type") + metadata
  return tfds.features.FeaturesDict(
    {"image": image_tensor(cfg), **{k: tfds.features.Text() for k in names}}
  )


def require(record: dict, fields, where: str) -> None:
  """ValueError naming `where` and the missing fields, if `record` lacks any of `fields`."""
  missing = [f for f in fields if f not in record]
  if missing:
    raise ValueError(
      f"{where}: expected fields {list(fields)}; missing {missing} (has {sorted(record)})"
    )


def answer_type(value, where: str) -> str:
  """'CLOSED' / 'OPEN' (any case, padded) -> 'closed' / 'open'."""
  v = str(value).strip().upper()
  if v not in ANSWER_TYPES:
    raise ValueError(f"{where}: answer_type: expected one of {sorted(ANSWER_TYPES)}, got {value!r}")
  return ANSWER_TYPES[v]


def existing(path: epath.Path, field: str) -> epath.Path:
  if not path.exists():
    raise ValueError(f"{field}: expected an existing file, got {path}")
  return path


def first_existing(candidates, field: str) -> epath.Path:
  """The first existing path among `candidates`; ValueError naming `field` and them all otherwise."""
  candidates = [epath.Path(c) for c in candidates]
  for c in candidates:
    if c.exists():
      return c
  raise ValueError(f"{field}: expected one of {[str(c) for c in candidates]}, none exists")


def fit_square(img, size: int):
  """PIL image -> `size` x `size`: longer side to `size` (bicubic), centred on black, aspect kept."""
  from PIL import Image

  w, h = img.size
  scale = size / max(w, h)
  nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
  canvas = Image.new(img.mode, (size, size))
  canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
  return canvas


def load_image(path, size: int, channels: int, field: str = "image") -> np.ndarray:
  """An image file -> uint8 [size, size, channels] (channels 1: grey, 3: RGB)."""
  from PIL import Image

  if channels not in (1, 3):
    raise ValueError(f"channels: expected 1 or 3, got {channels}")
  path = existing(epath.Path(path), field)
  mode = "L" if channels == 1 else "RGB"
  with path.open("rb") as f, Image.open(f) as img:
    img.draft(mode, (size, size))  # JPEG: decode at a reduced scale (large radiographs)
    out = np.asarray(fit_square(img.convert(mode), size), np.uint8)
  return out.reshape(size, size, channels)


def image_loader(folder: epath.Path, cfg: ImageConfig, field: str):
  """name -> load_image(folder / name), cached: datasets ask several questions about one image."""
  return functools.lru_cache(maxsize=1024)(
    lambda name: load_image(epath.Path(folder) / name, cfg.image_size, cfg.channels, field)
  )


def load_volume(path, field: str = "volume") -> np.ndarray:
  """A .npy / .nii / .nii.gz volume -> float32 [D, H, W] (layout in the module docstring)."""
  path = existing(epath.Path(path), field)
  name = path.name.lower()
  if name.endswith(".npy"):
    with path.open("rb") as f:
      vol = np.load(f)
    if vol.ndim == 4 and vol.shape[0] == 1:
      vol = vol[0]
  elif name.endswith((".nii", ".nii.gz")):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    vol = np.asarray(img.dataobj)
    if vol.ndim == 4 and vol.shape[-1] == 1:
      vol = vol[..., 0]
    if (
      vol.ndim == 3
    ):  # RAS (x, y, z) -> (z, y flipped: rows anterior first, x flipped: patient right first)
      vol = np.transpose(vol, (2, 1, 0))[:, ::-1, ::-1]
  else:
    raise ValueError(f"{field}: expected a .npy, .nii or .nii.gz file, got {path.name}")
  if vol.ndim != 3:
    raise ValueError(
      f"{field}: expected a 3D volume [D, H, W] (or [1, D, H, W]), got shape {vol.shape} "
      f"in {path.name}"
    )
  return np.ascontiguousarray(vol, np.float32)


def prepare_volume(vol: np.ndarray, cfg: VolumeConfig) -> np.ndarray:
  """[D, H, W] -> float32 [frames, size, size, 1] in [0, 1]: window (or min-max), then linear resampling."""
  from scipy import ndimage

  if cfg.window is not None:
    lo, hi = cfg.window
  else:
    lo, hi = float(vol.min()), float(vol.max())
  vol = np.clip((vol - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
  target = (cfg.frames, cfg.image_size, cfg.image_size)
  if vol.shape != target:
    vol = ndimage.zoom(
      vol, [t / s for t, s in zip(target, vol.shape)], order=1, grid_mode=True, mode="nearest"
    )
  return vol.astype(np.float32)[..., None]


def task_example(record: dict, shapes: dict) -> dict:
  """A builder record -> the medgemini task's example {prompt, target, qtype, media}.

  `shapes` maps "image" / "volume" to the model's input shape (H, W, C) / (frames, H, W, C); a grey
  image or volume is repeated to 3 channels where the model wants them. Records with `question`
  become VQA (qtype from answer_type), others report generation ("report:" -> report or caption; the
  text is also under "report", which the SigLIP task reads).
  """
  media, parts = {}, []
  for name in ("image", "volume"):
    if name not in record:
      continue
    x = np.asarray(record[name])
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    want = tuple(shapes.get(name, ()))
    if want and x.shape[-1] == 1 and want[-1] == 3:
      x = np.repeat(x, 3, axis=-1)
    if x.shape != want:
      raise ValueError(f"{name}: expected shape {want} (the model's input), got {x.shape}")
    media[name] = [x]
    parts.append(PLACEHOLDERS[name])
  if not media:
    raise ValueError(f"record: expected an 'image' or 'volume' field, got {sorted(record)}")
  text = {
    k: v.decode() if isinstance(v, bytes) else str(v) for k, v in record.items() if k not in media
  }
  if text.get("question"):
    return {
      "prompt": " ".join(parts + [text["question"]]),
      "target": text["answer"],
      "qtype": CLOSED if text.get("answer_type") == "closed" else OPEN,
      "media": media,
    }
  target = text.get("report") or text.get("caption", "")
  return {
    "prompt": " ".join(parts + ["report:"]),
    "target": target,
    "qtype": OPEN,
    "media": media,
    "report": target,
  }


# ------------------------------------------------------------------------------------------ video
def read_video(path, field: str = "video") -> np.ndarray:
  """All frames of a video file (any PyAV-readable container, local or gs://) as uint8 [T, H, W, 3]."""
  import av

  path = existing(epath.Path(path), field)
  with path.open("rb") as f, av.open(f) as container:
    frames = [fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)]
  if not frames:
    raise ValueError(f"{field}: expected a video with at least one frame, got none in {path}")
  return np.stack(frames)


def _rgb_uint8(frames, field: str) -> np.ndarray:
  """[T, H, W] or [T, H, W, 1 | 3] uint8 -> [T, H, W, 3] uint8."""
  v = np.asarray(frames)
  if v.dtype != np.uint8 or v.ndim not in (3, 4) or (v.ndim == 4 and v.shape[-1] not in (1, 3)):
    raise ValueError(
      f"{field}: expected uint8 frames [T, H, W] or [T, H, W, 1 | 3], got {v.dtype} {v.shape}"
    )
  v = v[..., None] if v.ndim == 3 else v
  return np.repeat(v, 3, axis=-1) if v.shape[-1] == 1 else v


def write_mp4(path, frames, fps: int = 8, crf: int = 18) -> str:
  """uint8 frames [T, H, W(, C)] -> an H.264 MP4 (yuv420p, so H and W must be even) at `path`
  (local or gs://, through etils.epath); returns the path."""
  import io

  import av

  v = _rgb_uint8(frames, "frames")
  t, h, w, _ = v.shape
  if h % 2 or w % 2:
    raise ValueError(f"frames: H.264 (yuv420p) needs an even height and width, got {h}x{w}")
  buf = io.BytesIO()
  with av.open(buf, "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for frame in v:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return str(path)


def write_gif(path, frames, fps: int = 8) -> str:
  """uint8 frames [T, H, W(, C)] -> a looping GIF at `path` (local or gs://); returns the path."""
  import io

  from PIL import Image

  images = [Image.fromarray(f) for f in _rgb_uint8(frames, "frames")]
  buf = io.BytesIO()
  duration = max(1, round(1000 / fps))
  images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return str(path)


def temporal_crop(total: int, num_frames: int, interval: int, rng: np.random.Generator):
  """Frame indices [num_frames] of Open-Sora's TemporalRandomCrop: a window of num_frames * interval
  frames (or all, if shorter) starting uniformly in [0, max(0, total - window - 1)], sampled at
  `num_frames` evenly spaced (floored) positions."""
  if total < num_frames:
    raise ValueError(f"total: expected a clip of at least {num_frames} frames, got {total}")
  window = num_frames * interval
  begin = int(rng.integers(0, max(0, total - window - 1) + 1))
  end = min(begin + window, total)
  return np.linspace(begin, end - 1, num_frames).astype(np.int64)
