"""Chest X-ray image / report pairs in the MIMIC-CXR-JPG layout (Johnson et al. 2019, PhysioNet).

manual_dir holds mimic-cxr-2.0.0-split.csv(.gz) (dicom_id, study_id, subject_id, split: train |
validate | test), mimic-cxr-2.0.0-metadata.csv(.gz) (dicom_id, ..., ViewPosition, ...), the images
files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg and the MIMIC-CXR free-text reports
files/pXX/pXXXXXXXX/sXXXXXXXX.txt (beside the study folders, or under mimic-cxr-reports/). One
example per image of the configured views; FINDINGS and IMPRESSION are cut from the report at the
next upper-case section header (`report` is both joined); images whose report has neither are skipped.
"""

import csv
import dataclasses
import gzip
import io
import re

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from medjax.data import media_io

SPLITS = {"train": "train", "validate": "validation", "test": "test"}
SPLIT_CSV, METADATA_CSV = "mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-metadata.csv"
# A section header: an upper-case phrase at the start of a line, then a colon ("FINDINGS:", "WET READ:").
HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/&,-]*[A-Z)])[ \t]*:", re.M)


@dataclasses.dataclass
class MimicCxrConfig(media_io.ImageConfig):
  views: tuple[str, ...] = ("PA", "AP")  # ViewPosition values kept; () keeps all


def parse_report(text: str) -> dict:
  """{"findings", "impression"} of a report (whitespace collapsed; "" where a section is absent)."""
  heads = list(HEADER.finditer(text))
  out = {"findings": "", "impression": ""}
  for h, nxt in zip(heads, heads[1:] + [None]):
    name = h.group(1).strip().lower()
    if name in out:
      out[name] = " ".join(text[h.end() : nxt.start() if nxt else len(text)].split())
  return out


def read_csv(root: epath.Path, name: str, columns) -> list[dict]:
  """Rows of `name` or `name`.gz in root; ValueError naming the file and any missing column."""
  path = media_io.first_existing([root / name, root / f"{name}.gz"], "manual_dir")
  data = path.read_bytes()
  text = gzip.decompress(data).decode() if path.name.endswith(".gz") else data.decode()
  reader = csv.DictReader(io.StringIO(text))
  missing = [c for c in columns if c not in (reader.fieldnames or ())]
  if missing:
    raise ValueError(
      f"{path.name}: expected columns {list(columns)}; missing {missing} in {reader.fieldnames}"
    )
  return list(reader)


def study_dir(root: epath.Path, subject_id: str, study_id: str) -> epath.Path:
  return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


class MimicCxr(tfds.core.GeneratorBasedBuilder):
  """Frontal chest X-rays (uint8 [size, size, channels]) with their findings and impression."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    MimicCxrConfig(name="default", description="PA/AP views, 224x224 RGB"),
    MimicCxrConfig(name="tiny", image_size=32, channels=1, description="PA/AP views, 32x32 grey"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "From PhysioNet (credentialed access) put MIMIC-CXR-JPG 2.0.0 (files/, "
    f"{SPLIT_CSV}.gz, {METADATA_CSV}.gz) in manual_dir and unzip MIMIC-CXR's "
    "mimic-cxr-reports.zip there (its files/ merges with the images' files/)."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    names = (
      "dicom_id",
      "study_id",
      "subject_id",
      "view_position",
      "findings",
      "impression",
      "report",
    )
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      homepage="https://physionet.org/content/mimic-cxr-jpg/",
      features=tfds.features.FeaturesDict(
        {"image": media_io.image_tensor(self.builder_config), **{k: text() for k in names}}
      ),
    )

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    views = {
      r["dicom_id"]: r["ViewPosition"]
      for r in read_csv(root, METADATA_CSV, ("dicom_id", "ViewPosition"))
    }
    rows = {s: [] for s in SPLITS.values()}
    for r in read_csv(root, SPLIT_CSV, ("dicom_id", "study_id", "subject_id", "split")):
      if r["split"] not in SPLITS:
        raise ValueError(
          f"{SPLIT_CSV}: split: expected one of {sorted(SPLITS)}, got {r['split']!r}"
        )
      if r["dicom_id"] not in views:
        raise ValueError(
          f"{METADATA_CSV}: dicom_id: expected a row for {r['dicom_id']} (listed in {SPLIT_CSV})"
        )
      if not self.builder_config.views or views[r["dicom_id"]] in self.builder_config.views:
        rows[SPLITS[r["split"]]].append({**r, "view_position": views[r["dicom_id"]]})
    return {s: self._generate_examples(root, rs) for s, rs in rows.items() if rs}

  def _generate_examples(self, root, rows):
    cfg = self.builder_config
    for r in rows:
      study = study_dir(root, r["subject_id"], r["study_id"])
      reports = [
        study.parent / f"{study.name}.txt",
        study_dir(root / "mimic-cxr-reports", r["subject_id"], r["study_id"]).with_suffix(".txt"),
      ]
      sections = parse_report(media_io.first_existing(reports, "report").read_text())
      if not any(sections.values()):
        logging.warning(
          "%s: no FINDINGS or IMPRESSION in the report of study %s; skipped",
          r["dicom_id"],
          r["study_id"],
        )
        continue
      image = media_io.load_image(
        study / f"{r['dicom_id']}.jpg", cfg.image_size, cfg.channels, "dicom_id"
      )
      yield (
        r["dicom_id"],
        {
          "image": image,
          **{k: r[k] for k in ("dicom_id", "study_id", "subject_id", "view_position")},
          **sections,
          "report": " ".join(v for v in sections.values() if v),
        },
      )
