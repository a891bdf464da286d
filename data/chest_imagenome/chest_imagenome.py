"""Chest ImaGenome scene graphs (Wu et al. 2021, PhysioNet) over MIMIC-CXR-JPG chest radiographs.

Per image, `silver_dataset/scene_graph/{dicom_id}_SceneGraph.json` holds `objects` (anatomical region
boxes: `bbox_name`, `original_x1/y1/x2/y2` in the pixels of the MIMIC-CXR-JPG image) and `attributes`
(per region: `bbox_name`, `attributes` = per phrase a list of "category|yes/no|name", `phrases`).
Examples carry the image padded to a square and resized (grayscale), the boxes of the 29 regions the
Anatomy-VLM paper uses (normalised cxcywh, `box_valid` where the graph has that region; other region
names, e.g. the cardiophrenic angles, are skipped), the region phrases and the region attributes.
"""

import collections
import csv
import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from medjax.data.synthetic.anatomy import CHEST_IMAGENOME_REGIONS

MANUAL_DOWNLOAD_INSTRUCTIONS = """From PhysioNet (credentialed access): put Chest ImaGenome's `silver_dataset/`
(scene_graph/*.json; splits/{train,valid,test}.csv and splits/images_to_avoid.csv, each with a dicom_id
column) and MIMIC-CXR-JPG's `files/` (files/p10/p10000032/s50414267/<dicom_id>.jpg) side by side in
manual_dir."""

SPLITS = {"train": "train", "validation": "valid", "test": "test"}
AVOID = "images_to_avoid.csv"  # the gold-standard images, kept out of every silver split
# What preparation skips or mends, counted per split in `info.metadata["report"][split]`.
REPORT_KEYS = (
  "images",  # written
  "images_avoided",  # listed in images_to_avoid.csv
  "images_without_scene_graph",  # listed in the split, no {dicom_id}_SceneGraph.json
  "boxes",  # region boxes kept (of the 29 regions)
  "boxes_clipped",  # kept after clipping to the image
  "boxes_zero_area",  # x1 == x2 or y1 == y2: dropped
  "boxes_negative",  # x2 < x1 or y2 < y1: dropped
  "boxes_outside_image",  # nothing left after clipping: dropped
)


@dataclasses.dataclass
class ChestImaGenomeConfig(tfds.core.BuilderConfig):
  image_size: int = 224


def image_path(root: epath.Path, graph: dict) -> epath.Path:
  """MIMIC-CXR-JPG layout: files/p{first 2 digits}/p{patient}/s{study}/{dicom_id}.jpg."""
  pid, sid = str(graph["patient_id"]), str(graph["study_id"])
  return root / "files" / f"p{pid[:2]}" / f"p{pid}" / f"s{sid}" / f"{graph['image_id']}.jpg"


def read_image(root: epath.Path, graph: dict, where: str) -> np.ndarray:
  """The scene graph's MIMIC-CXR-JPG image as grayscale uint8 [H, W]."""
  from PIL import Image

  path = image_path(root, graph)
  if not path.exists():
    raise ValueError(
      f"{where}: expected its image {path.relative_to(root)} in manual_dir (MIMIC-CXR-JPG files/), "
      "found none"
    )
  with path.open("rb") as f:
    return np.asarray(Image.open(f).convert("L"))


def _field(d: dict, key: str, where: str):
  if key not in d:
    raise ValueError(f"{where}: expected field {key!r}, got fields {sorted(d)}")
  return d[key]


def parse_boxes(
  graph: dict, width: int, height: int, where: str
) -> tuple[np.ndarray, np.ndarray, collections.Counter]:
  """Region boxes -> (xyxy in pixels [29, 4] float32, valid [29] bool, counts of REPORT_KEYS "boxes*"),
  regions in CHEST_IMAGENOME_REGIONS order.

  The silver graphs hold boxes that overhang the image or lie outside it, and zero-area or inverted
  ones: a box is clipped to the image; one that is empty before or after clipping is dropped
  (its region left invalid) and counted.
  """
  boxes, valid = (
    np.zeros((len(CHEST_IMAGENOME_REGIONS), 4), np.float32),
    np.zeros(len(CHEST_IMAGENOME_REGIONS), bool),
  )
  counts = collections.Counter()
  size = np.array([width, height] * 2, np.float32)
  for obj in _field(graph, "objects", where):
    name = _field(obj, "bbox_name", f"{where} objects")
    if name not in CHEST_IMAGENOME_REGIONS:
      continue
    coords = [
      _field(obj, f"original_{k}", f"{where} object {name!r}") for k in ("x1", "y1", "x2", "y2")
    ]
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in coords):
      raise ValueError(
        f"{where} object {name!r}: expected finite numbers original_x1/y1/x2/y2, got {coords}"
      )
    b = np.array(coords, np.float32)
    if b[2] == b[0] or b[3] == b[1]:
      counts["boxes_zero_area"] += 1
      continue
    if b[2] < b[0] or b[3] < b[1]:
      counts["boxes_negative"] += 1
      continue
    clipped = np.clip(b, 0, size)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
      counts["boxes_outside_image"] += 1
      continue
    counts["boxes_clipped"] += int(np.any(clipped != b))
    counts["boxes"] += 1
    i = CHEST_IMAGENOME_REGIONS.index(name)
    boxes[i], valid[i] = clipped, True
  return boxes, valid, counts


def parse_findings(graph: dict, where: str) -> tuple[list, list]:
  """-> phrases [{"region", "text"}], attributes [{"region", "category", "positive", "name"}] of the 29 regions."""
  phrases, attributes = [], []
  for entry in _field(graph, "attributes", where):
    name = _field(entry, "bbox_name", f"{where} attributes")
    if name not in CHEST_IMAGENOME_REGIONS:
      continue
    texts = _field(entry, "phrases", f"{where} attributes of {name!r}")
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
      raise ValueError(
        f"{where} attributes of {name!r}: expected a non-empty list of phrases, got {texts!r}"
      )
    region = CHEST_IMAGENOME_REGIONS.index(name)
    phrases += [{"region": region, "text": t.strip()} for t in texts]
    for per_phrase in _field(entry, "attributes", f"{where} attributes of {name!r}"):
      for a in per_phrase:
        parts = a.split("|")
        if len(parts) != 3 or parts[1] not in ("yes", "no"):
          raise ValueError(
            f"{where} attributes of {name!r}: expected 'category|yes/no|name', got {a!r}"
          )
        attributes.append(
          {"region": region, "category": parts[0], "positive": parts[1] == "yes", "name": parts[2]}
        )
  return phrases, attributes


def square_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Grayscale uint8 [H, W] and pixel xyxy boxes -> [size, size, 1] (zero-padded to a centred square, resized)
  and normalised cxcywh boxes."""
  from PIL import Image

  h, w = image.shape
  side = max(h, w)
  top, left = (side - h) // 2, (side - w) // 2
  square = np.zeros((side, side), np.uint8)
  square[top : top + h, left : left + w] = image
  out = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))[..., None]
  xyxy = (boxes + np.array([left, top, left, top], np.float32)) / side
  cxcywh = np.stack(
    [
      (xyxy[:, 0] + xyxy[:, 2]) / 2,
      (xyxy[:, 1] + xyxy[:, 3]) / 2,
      xyxy[:, 2] - xyxy[:, 0],
      xyxy[:, 3] - xyxy[:, 1],
    ],
    -1,
  )
  return out, cxcywh.astype(np.float32)


def read_split(csv_path: epath.Path) -> list[str]:
  """The dicom_id column of a split CSV (the release's: an unnamed index column first)."""
  with csv_path.open() as f:
    reader = csv.DictReader(f)
    if "dicom_id" not in (reader.fieldnames or ()):
      raise ValueError(
        f"{csv_path.name}: expected a dicom_id column, got columns {reader.fieldnames}"
      )
    return [r["dicom_id"] for r in reader]


def log_report(report: dict) -> None:
  """Logs what preparation kept, skipped and mended, per split (`info.metadata["report"]`)."""
  for split, counts in report.items():
    logging.info(
      "chest_imagenome %s: %s", split, ", ".join(f"{k} {counts.get(k, 0)}" for k in REPORT_KEYS)
    )


class ChestImaGenome(tfds.core.GeneratorBasedBuilder):
  """Chest radiographs with 29 anatomical region boxes, region phrases and region attributes.

  Preparation counts, per split, the images it skips (avoid-list, no scene graph) and the boxes it
  clips or drops (REPORT_KEYS) into `info.metadata["report"]`, and logs them.
  """

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release (silver scene graphs).",
    "1.1.0": "Skips avoid-listed images and images without a scene graph, clips boxes to the image, "
    "drops empty ones; counts all of it in metadata['report'].",
  }
  BUILDER_CONFIGS = [
    ChestImaGenomeConfig(name="224", description="224x224 (Anatomy-VLM)"),
    ChestImaGenomeConfig(name="tiny", image_size=32, description="32x32 (tests)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    s, r = self.builder_config.image_size, len(CHEST_IMAGENOME_REGIONS)
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://physionet.org/content/chest-imagenome/",
      metadata=tfds.core.MetadataDict(),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(
            shape=(s, s, 1), dtype=np.uint8, encoding="zlib"
          ),  # no TF needed
          "image_id": tfds.features.Text(),
          "viewpoint": tfds.features.Text(),
          "boxes": tfds.features.Tensor(shape=(r, 4), dtype=np.float32),
          "box_valid": tfds.features.Tensor(shape=(r,), dtype=np.bool_),
          "phrases": tfds.features.Sequence({"region": np.int32, "text": tfds.features.Text()}),
          "attributes": tfds.features.Sequence(
            {
              "region": np.int32,
              "category": tfds.features.Text(),
              "positive": np.bool_,
              "name": tfds.features.Text(),
            }
          ),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    splits = root / "silver_dataset" / "splits"
    avoid = set(read_split(splits / AVOID)) if (splits / AVOID).exists() else set()
    if not avoid:
      logging.warning("chest_imagenome: no %s in %s: no image is avoided", AVOID, splits)
    self.info.metadata["report"] = {}
    out = {
      k: self._generate_examples(root, splits / f"{v}.csv", avoid, k)
      for k, v in SPLITS.items()
      if (splits / f"{v}.csv").exists()
    }
    if not out:
      raise ValueError(
        f"manual_dir: expected silver_dataset/splits/{{train,valid,test}}.csv in {root}"
      )
    return out

  def _generate_examples(self, root, csv_path, avoid, split):
    counts = collections.Counter()
    for dicom_id in read_split(csv_path):
      if dicom_id in avoid:
        counts["images_avoided"] += 1
        continue
      path = root / "silver_dataset" / "scene_graph" / f"{dicom_id}_SceneGraph.json"
      if not path.exists():
        counts["images_without_scene_graph"] += 1
        continue
      graph = json.loads(path.read_text())
      image = read_image(root, graph, path.name)
      boxes, valid, box_counts = parse_boxes(graph, image.shape[1], image.shape[0], path.name)
      counts.update(box_counts)
      phrases, attributes = parse_findings(graph, path.name)
      image, boxes = square_resize(image, boxes, self.builder_config.image_size)
      counts["images"] += 1
      yield (
        dicom_id,
        {
          "image": image,
          "image_id": dicom_id,
          "viewpoint": graph.get("viewpoint", ""),
          "boxes": np.where(valid[:, None], boxes, 0.0),
          "box_valid": valid,
          "phrases": phrases,
          "attributes": attributes,
        },
      )
    # Runs once the split is written, before the dataset info (with its metadata) is saved.
    self.info.metadata["report"][split] = {k: counts.get(k, 0) for k in REPORT_KEYS}
    log_report({split: self.info.metadata["report"][split]})
