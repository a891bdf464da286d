"""3D CT volumes (NumPy .npy or NIfTI .nii / .nii.gz) with captions, reports or questions.

Layouts (config `layout`):
- m3d_cap (M3D-Cap, Bai et al. 2024): M3D_Cap.json {"train" | "validation" | "test": [{"image":
  "ct_case/000006/Axial_non_contrast.npy", "text": "ct_case/000006/text.txt"}]}; volumes [1, 32, 256, 256]
  in [0, 1]; paths relative to manual_dir, manual_dir/M3D_Cap_npy or the JSON's folder.
- m3d_vqa (M3D-VQA): M3D_VQA_{train,val,test}.csv with columns Image Path, Text, Question Type
  (1 plane, 2 phase, 3 organ, 4 abnormality, 5 location), Question, Choice A..D, Answer, Answer
  Choice; one open-ended example per row, the choices kept for the closed-ended format.
- ct_rate (CT-RATE, Hamamci et al. 2024): radiology_text_reports/{train,validation}_reports.csv
  (VolumeName, ..., Findings_EN, Impressions_EN) and dataset/{train,valid}[_fixed]/train_1/
  train_1_a/train_1_a_1.nii.gz; intensities in HU.
Volumes are stored float32 [frames, size, size, 1] in [0, 1] (window per layout), see media_io.
"""

import csv
import dataclasses
import functools
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from medjax.data import media_io

QUESTION_TYPES = {"1": "plane", "2": "phase", "3": "organ", "4": "abnormality", "5": "location"}
VQA_COLUMNS = (
  "Image Path",
  "Question Type",
  "Question",
  "Choice A",
  "Choice B",
  "Choice C",
  "Choice D",
  "Answer",
  "Answer Choice",
)
CT_RATE_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")
LAYOUTS = {  # layout -> (text features, intensity window)
  "m3d_cap": (("report",), (0.0, 1.0)),
  "m3d_vqa": (("question", "answer", "answer_type", "answer_choice", "question_type"), (0.0, 1.0)),
  "ct_rate": (("findings", "impression", "report"), (-1000.0, 1000.0)),
}


@dataclasses.dataclass
class Volumes3dConfig(media_io.VolumeConfig):
  layout: str = "m3d_cap"


def _configs():
  out = []
  for layout, (_, window) in LAYOUTS.items():
    out += [
      Volumes3dConfig(name=layout, layout=layout, window=window, description="32 x 224 x 224"),
      Volumes3dConfig(
        name=f"{layout}_tiny",
        layout=layout,
        window=window,
        frames=8,
        image_size=32,
        description="8 x 32 x 32 (tiny configs)",
      ),
    ]
  return out


def read_csv(path: epath.Path, columns) -> list[dict]:
  with path.open() as f:
    reader = csv.DictReader(f)
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(
        f"{path.name}: expected columns {list(columns)}; missing {missing} in {reader.fieldnames}"
      )
    return list(reader)


def vqa_record(row: dict, where: str) -> dict:
  """One M3D-VQA row -> text fields (open-ended answer, choices A..D kept)."""
  qtype = str(row["Question Type"]).strip()
  if qtype not in QUESTION_TYPES:
    raise ValueError(
      f"{where}: Question Type: expected one of {sorted(QUESTION_TYPES)}, got {qtype!r}"
    )
  choice = row["Answer Choice"].strip()
  if choice not in ("A", "B", "C", "D"):
    raise ValueError(f"{where}: Answer Choice: expected one of A, B, C, D, got {choice!r}")
  return {
    "question": row["Question"].strip(),
    "answer": row["Answer"].strip(),
    "answer_type": "open",
    "options": [row[f"Choice {c}"].strip() for c in "ABCD"],
    "answer_choice": choice,
    "question_type": QUESTION_TYPES[qtype],
  }


def ct_rate_path(root: epath.Path, split: str, name: str) -> epath.Path:
  """train_1_a_1.nii.gz -> dataset/train[_fixed]/train_1/train_1_a/train_1_a_1.nii.gz."""
  parts = name.split("_")
  if len(parts) < 4:
    raise ValueError(
      f"VolumeName: expected <split>_<patient>_<study>_<reconstruction>.nii.gz, got {name!r}"
    )
  rel = epath.Path("_".join(parts[:2])) / "_".join(parts[:3]) / name
  return media_io.first_existing(
    [root / "dataset" / d / rel for d in (f"{split}_fixed", split)], "VolumeName"
  )


class Volumes3d(tfds.core.GeneratorBasedBuilder):
  """CT volumes (float32 [frames, size, size, 1]) with their text, in the M3D or CT-RATE layout."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "m3d_*: put M3D_Cap_npy/ (with M3D_Cap.json) and M3D-VQA/ from huggingface.co/"
    "datasets/GoodBaiBai88 in manual_dir. ct_rate: put CT-RATE's dataset/ and "
    "radiology_text_reports/ (huggingface.co/datasets/ibrahimhamamci/CT-RATE) there."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    if cfg.layout not in LAYOUTS:
      raise ValueError(f"layout: expected one of {sorted(LAYOUTS)}, got {cfg.layout!r}")
    text = tfds.features.Text
    features = {
      "id": text(),
      "path": text(),
      **{k: text() for k in LAYOUTS[cfg.layout][0]},
      "volume": tfds.features.Tensor(
        shape=(cfg.frames, cfg.image_size, cfg.image_size, 1), dtype=np.float32, encoding="zlib"
      ),
    }
    if cfg.layout == "m3d_vqa":
      features["options"] = tfds.features.Sequence(text())
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(features),
      homepage="https://github.com/BAAI-DCAI/M3D",
    )

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    return getattr(self, f"_{self.builder_config.layout}_splits")(root)

  def _m3d_cap_splits(self, root):
    path = media_io.first_existing(
      [root / "M3D_Cap_npy" / "M3D_Cap.json", root / "M3D_Cap.json"], "manual_dir"
    )
    data = json.loads(path.read_text())
    bases = (root, root / "M3D_Cap_npy", path.parent)
    resolve = lambda p, field: media_io.first_existing([b / p for b in bases], field)
    out = {}
    for split in ("train", "validation", "test"):
      rows = []
      for i, e in enumerate(data.get(split, [])):
        media_io.require(e, ("image", "text"), f"{path.name}[{split!r}][{i}]")
        report = " ".join(resolve(e["text"], "text").read_text().split())
        rows.append((e["image"], e["image"], resolve(e["image"], "image"), {"report": report}))
      if rows:
        out[split] = self._generate_examples(rows)
    if not out:
      raise ValueError(
        f"{path.name}: expected entries under 'train', 'validation' or 'test', got keys {sorted(data)}"
      )
    return out

  def _m3d_vqa_splits(self, root):
    out = {}
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
      path = next(
        (
          p
          for p in (root / "M3D-VQA" / f"M3D_VQA_{name}.csv", root / f"M3D_VQA_{name}.csv")
          if p.exists()
        ),
        None,
      )
      if path is None:
        continue
      bases = (root, root / "M3D_Cap_npy", path.parent)
      rows = [
        (
          str(i),
          r["Image Path"],
          media_io.first_existing([b / r["Image Path"] for b in bases], "Image Path"),
          vqa_record(r, f"{path.name}:{i + 2}"),
        )
        for i, r in enumerate(read_csv(path, VQA_COLUMNS))
      ]
      out[split] = self._generate_examples(rows)
    if not out:
      raise ValueError(f"manual_dir: expected M3D-VQA/M3D_VQA_{{train,val,test}}.csv in {root}")
    return out

  def _ct_rate_splits(self, root):
    out = {}
    for split, folder in (("train", "train"), ("validation", "valid")):
      path = root / "radiology_text_reports" / f"{split}_reports.csv"
      if not path.exists():
        continue
      rows = []
      for r in read_csv(path, CT_RATE_COLUMNS):
        text = {
          "findings": " ".join(r["Findings_EN"].split()),
          "impression": " ".join(r["Impressions_EN"].split()),
        }
        text["report"] = " ".join(v for v in text.values() if v)
        rows.append(
          (r["VolumeName"], r["VolumeName"], ct_rate_path(root, folder, r["VolumeName"]), text)
        )
      out[split] = self._generate_examples(rows)
    if not out:
      raise ValueError(
        f"manual_dir: expected radiology_text_reports/{{train,validation}}_reports.csv in {root}"
      )
    return out

  def _generate_examples(self, rows):
    """rows: (id, path as listed, resolved path, text fields); a volume asked about again is loaded once."""
    load = functools.lru_cache(maxsize=8)(
      lambda p: media_io.prepare_volume(media_io.load_volume(p, "volume"), self.builder_config)
    )
    for key, listed, path, text in rows:
      yield key, {"id": key, "path": listed, "volume": load(path), **text}
