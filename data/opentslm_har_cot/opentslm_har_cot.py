"""HAR-CoT (OpenTSLM): 3-axis accelerometer windows with a chain-of-thought rationale and a label.

The public release is a zip of CSV files har_cot_{train,val,test}_cot.csv with columns x_axis,
y_axis, z_axis (python-style lists of floats), label and rationale (extra columns are ignored;
repeated header rows inside the files are skipped, as in the reference loader).
"""
import csv
import math

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

URL = "https://polybox.ethz.ch/index.php/s/kD74GnMYxn3HBEM/download"
SPLIT_FILES = {"train": "har_cot_train_cot.csv", "validation": "har_cot_val_cot.csv",
               "test": "har_cot_test_cot.csv"}
AXES = ("x_axis", "y_axis", "z_axis")
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Download har_cot.zip from {URL}, unzip it and put the three
har_cot_*_cot.csv files (or the folder holding them) into manual_dir."""


def parse_series(text: str, where: str) -> np.ndarray:
  """'[1.0, 2.0, ...]' -> float32 [N]; a malformed or non-finite series raises ValueError naming `where`."""
  body = text.strip()
  if not (body.startswith("[") and body.endswith("]")):
    raise ValueError(f"{where}: expected a list of numbers, got {text[:40]!r}")
  try:
    values = [float(v) for v in body[1:-1].split(",") if v.strip()]
  except ValueError as e:
    raise ValueError(f"{where}: expected a list of numbers, got {text[:40]!r}") from e
  if not values:
    raise ValueError(f"{where}: expected a non-empty list of numbers, got {text[:40]!r}")
  if not all(math.isfinite(v) for v in values):
    raise ValueError(f"{where}: expected finite values, got NaN/inf")
  return np.asarray(values, np.float32)


def parse_rows(path) -> list[tuple[str, dict]]:
  """(key, record) for every data row of one CSV file."""
  out = []
  with epath.Path(path).open() as f:
    reader = csv.DictReader(f)
    missing = set(AXES + ("label", "rationale")) - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{path}: missing columns {sorted(missing)}; got {reader.fieldnames}")
    for i, row in enumerate(reader):
      if row["x_axis"] == "x_axis":  # a repeated header
        continue
      where = f"{epath.Path(path).name}:{i + 2}"
      series = [parse_series(row[a], f"{where}: {a}") for a in AXES]
      if len({len(s) for s in series}) != 1:
        raise ValueError(f"{where}: expected axes of equal length, got {[len(s) for s in series]}")
      key = f"{epath.Path(path).stem}-{i}"
      out.append((key, {"id": key, "series": np.stack(series), "label": row["label"].strip(),
                        "rationale": row["rationale"].strip()}))
  return out


class OpentslmHarCot(tfds.core.GeneratorBasedBuilder):
  """HAR-CoT windows: series [3, N] float32, label, rationale."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, homepage="https://github.com/StanfordBDHG/OpenTSLM",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "label": tfds.features.Text(), "rationale": tfds.features.Text(),
            "series": tfds.features.Tensor(shape=(3, None), dtype=np.float32)}))

  def _split_generators(self, dl_manager):
    manual = epath.Path(dl_manager.manual_dir)
    out = {}
    for split, name in SPLIT_FILES.items():
      found = [p for p in (manual / name, manual / "har_cot" / name) if p.exists()]
      if found:
        out[split] = self._generate_examples(found[0])
    if not out:
      raise ValueError(f"manual_dir: no har_cot_*_cot.csv files under {manual}")
    return out

  def _generate_examples(self, path):
    yield from parse_rows(path)
