"""Captioned medical video clips listed in Open-Sora / Bora CSV files (Sun et al. 2024, arXiv 2407.08944).

Each `{split}.csv` in manual_dir lists `path, caption` rows as Bora's CSVs do (no header), or has a
header naming at least `path` and `text` (Open-Sora; extra columns such as num_frames, fps, height
are ignored). `path` is absolute or relative to the CSV. Every video is decoded with PyAV and each
frame resized (shorter side) and centre-cropped to `image_size`; all its frames are kept, so that
training takes a fresh random temporal crop of `num_frames` x frame interval frames each time
(Open-Sora's TemporalRandomCrop; `medjax.data.media_io.temporal_crop`). Clips with fewer than
`num_frames` frames are dropped and counted. No flips: laterality matters for MRI and ultrasound.
"""

import csv
import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from medjax.data import media_io

MANUAL_DOWNLOAD_INSTRUCTIONS = """Put the Bora / Open-Sora CSV files train.csv (and optionally validation.csv,
test.csv) in manual_dir: header-less `path, caption` rows, or a header with path,text; `path` may be
relative to the CSV's folder."""

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class BoraCsvConfig(tfds.core.BuilderConfig):
  num_frames: int = 40  # the shortest clip kept (a training crop takes this many frames)
  image_size: int = 256


def _row(cells: list[str], csv_path, line: int, cols=(0, 1)) -> dict:
  if len(cells) <= max(cols):
    raise ValueError(
      f"{csv_path}:{line}: expected a row `path, caption`, got {len(cells)} field(s): {cells!r}"
    )
  path, text = cells[cols[0]].strip(), cells[cols[1]].strip()
  if cols == (0, 1) and len(cells) > 2:  # a header-less row with an unquoted caption holding commas
    text = ", ".join(c.strip() for c in cells[1:])
  if not path:
    raise ValueError(f"{csv_path}:{line}: path: expected a video file, got an empty field")
  p = epath.Path(path)
  return {"path": p if p.is_absolute() else csv_path.parent / p, "text": text}


def read_rows(csv_path: epath.Path) -> list[dict]:
  """{path, text} of each row, `path` resolved against the CSV's folder. Bora's header-less
  `path, caption` rows and Open-Sora's files with a header naming `path` and `text` are read; a
  header that lacks either column raises ValueError."""
  with csv_path.open() as f:
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(f, skipinitialspace=True)) if any(r)]
  if not rows:
    return []
  first = [c.strip().lower() for c in rows[0][1]]
  if "path" in first or "text" in first:  # a header
    missing = sorted({"path", "text"} - set(first))
    if missing:
      raise ValueError(
        f"{csv_path}: a header needs columns path,text; missing {missing} in {rows[0][1]}"
      )
    cols = (first.index("path"), first.index("text"))
    return [_row(r, csv_path, i, cols) for i, r in rows[1:]]
  return [_row(r, csv_path, i) for i, r in rows]


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


class BoraCsv(tfds.core.GeneratorBasedBuilder):
  """Whole video clips [T >= num_frames, image_size, image_size, 3] uint8 with their captions."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "2.0.0": "Header-less Bora rows; whole clips of at least num_frames frames (crop at training).",
  }
  BUILDER_CONFIGS = [
    BoraCsvConfig(name="bora", description="clips of >= 40 frames at 256x256 (Bora)"),
    BoraCsvConfig(name="opensora_v1", num_frames=16, description=">= 16 frames at 256x256"),
    BoraCsvConfig(
      name="tiny", num_frames=4, image_size=32, description=">= 4 frames at 32x32 (tests)"
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    shape = (None, cfg.image_size, cfg.image_size, 3)
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
    kept, short = 0, []
    for i, row in enumerate(read_rows(csv_path)):
      frames = media_io.read_video(row["path"], field=f"{csv_path.name} row {i} path")
      if len(frames) < cfg.num_frames:
        short.append(f"{row['path'].name} ({len(frames)} frames)")
        continue
      kept += 1
      yield (
        f"{csv_path.stem}-{i}",
        {
          "video": resize_center_crop(frames, cfg.image_size),
          "text": row["text"],
          "path": str(row["path"].name),
        },
      )
    logging.info(
      "%s: kept %d clips; dropped %d shorter than %d frames: %s",
      csv_path.name,
      kept,
      len(short),
      cfg.num_frames,
      short,
    )
