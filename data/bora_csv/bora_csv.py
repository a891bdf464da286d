"""Captioned medical video clips listed in Open-Sora / Bora CSV files (Sun et al. 2024, arXiv 2407.08944).

Each `{split}.csv` in manual_dir has a header with at least `path` (a video file, absolute or relative to
the CSV) and `text` (its caption); extra Open-Sora columns (num_frames, fps, height, width, ...) are
ignored. Every video is decoded with PyAV, a clip of `num_frames` frames taken every `frame_interval`
frames from the middle of the video, each frame resized (shorter side) and centre-cropped to
`image_size`. No flips: laterality matters for MRI and ultrasound.
"""

import csv
import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

MANUAL_DOWNLOAD_INSTRUCTIONS = """Put the Open-Sora style CSV files train.csv (and optionally validation.csv,
test.csv) with columns path,text in manual_dir; `path` may be relative to the CSV's folder."""

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class BoraCsvConfig(tfds.core.BuilderConfig):
  num_frames: int = 40
  frame_interval: int = 3
  image_size: int = 256


def read_rows(csv_path: epath.Path) -> list[dict]:
  """CSV rows with `path` resolved against the CSV's folder; a missing column raises ValueError."""
  with csv_path.open() as f:
    reader = csv.DictReader(f)
    missing = {"path", "text"} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(
        f"{csv_path}: expected columns path,text; missing {sorted(missing)} in {reader.fieldnames}"
      )
    rows = []
    for r in reader:
      p = epath.Path(r["path"])
      rows.append(
        {"path": p if p.is_absolute() else csv_path.parent / p, "text": r["text"].strip()}
      )
  return rows


def decode_frames(path) -> np.ndarray:
  """All frames of a video file as uint8 [T, H, W, 3]."""
  import av

  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
  """[T, H, W, 3] -> [T, size, size, 3]: shorter side to `size` (bicubic), then a centre crop."""
  from PIL import Image

  _, h, w, _ = frames.shape
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  top, left = (nh - size) // 2, (nw - size) // 2
  out = [
    np.asarray(Image.fromarray(f).resize((nw, nh), Image.BICUBIC))[
      top : top + size, left : left + size
    ]
    for f in frames
  ]
  return np.stack(out)


def sample_clip(frames: np.ndarray, num_frames: int, interval: int) -> np.ndarray | None:
  """`num_frames` frames `interval` apart from the middle of the video; None if it is too short."""
  span = (num_frames - 1) * interval + 1
  if len(frames) < span:
    return None
  start = (len(frames) - span) // 2
  return frames[start : start + span : interval]


class BoraCsv(tfds.core.GeneratorBasedBuilder):
  """Video clips [num_frames, image_size, image_size, 3] uint8 with their captions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    BoraCsvConfig(name="bora", description="40 frames, interval 3, 256x256 (Bora)"),
    BoraCsvConfig(name="opensora_v1", num_frames=16, description="16 frames, interval 3, 256x256"),
    BoraCsvConfig(
      name="tiny",
      num_frames=4,
      frame_interval=2,
      image_size=32,
      description="4 frames, interval 2, 32x32 (tests)",
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    shape = (cfg.num_frames, cfg.image_size, cfg.image_size, 3)
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://github.com/Weixiang-Sun/Bora",
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib"),
          "text": tfds.features.Text(),
          "path": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    manual = epath.Path(dl_manager.manual_dir)
    out = {
      s: self._generate_examples(manual / f"{s}.csv")
      for s in SPLITS
      if (manual / f"{s}.csv").exists()
    }
    if not out:
      raise ValueError(f"manual_dir: expected one of {[s + '.csv' for s in SPLITS]} in {manual}")
    return out

  def _generate_examples(self, csv_path):
    cfg = self.builder_config
    for i, row in enumerate(read_rows(csv_path)):
      clip = sample_clip(decode_frames(row["path"]), cfg.num_frames, cfg.frame_interval)
      if clip is None:
        logging.warning(
          "%s: skipping %s, shorter than %d frames x interval %d",
          csv_path,
          row["path"],
          cfg.num_frames,
          cfg.frame_interval,
        )
        continue
      yield (
        f"{csv_path.stem}-{i}",
        {
          "video": resize_center_crop(clip, cfg.image_size),
          "text": row["text"],
          "path": str(row["path"].name),
        },
      )
