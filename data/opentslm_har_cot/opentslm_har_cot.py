"""HAR-CoT (OpenTSLM): 3-axis accelerometer windows with a chain-of-thought rationale and a label.

The public release is a zip of CSV files har_cot_{train,val,test}_cot.csv with columns x_axis,
y_axis, z_axis (python-style lists of floats), label and rationale (extra columns are ignored;
repeated header rows inside the files are skipped, as in the reference loader). Records use the
common OpenTSLM schema of medjax/data/timeseries_io.py (`series` [3, N] as released).
"""

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import timeseries_io as tsio
from medjax.data.timeseries_io import parse_series

URL = "https://polybox.ethz.ch/index.php/s/kD74GnMYxn3HBEM/download"
SPLIT_FILES = {
  "train": "har_cot_train_cot.csv",
  "validation": "har_cot_val_cot.csv",
  "test": "har_cot_test_cot.csv",
}
AXES = ("x_axis", "y_axis", "z_axis")
LABELS = (
  "biking",
  "lying",
  "running",
  "sitting",
  "standing",
  "walking",
  "walking_down",
  "walking_up",
)
PRE_PROMPT = (
  "You are given accelerometer data in all three dimensions. Classify the activity from an "
  "analysis of the data. Reason step by step in one paragraph without naming a label until the "
  f'end. Possible activity labels are: {", ".join(LABELS)}. End your response with "Answer: ".\n'
)
POST_PROMPT = "Rationale:"
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Download har_cot.zip from {URL}, unzip it and put the three
har_cot_*_cot.csv files (or the folder holding them) into manual_dir."""


def parse_rows(path) -> list[tuple[str, dict]]:
  """(key, record) for every data row of one CSV file."""
  out = []
  for i, (where, row) in enumerate(tsio.read_csv(path, AXES + ("label", "rationale"))):
    series = [parse_series(row[a], f"{where}: {a}") for a in AXES]
    if len({len(s) for s in series}) != 1:
      raise ValueError(f"{where}: expected axes of equal length, got {[len(s) for s in series]}")
    key = f"{epath.Path(path).stem}-{i}"
    out.append(
      (
        key,
        tsio.make_example(
          key,
          series,
          [f"Accelerometer {a[0]}-axis" for a in AXES],
          pre_prompt=PRE_PROMPT,
          post_prompt=POST_PROMPT,
          rationale=row["rationale"].strip(),
          label=row["label"].strip(),
        ),
      )
    )
  return out


class OpentslmHarCot(tfds.core.GeneratorBasedBuilder):
  """HAR-CoT windows: 3 accelerometer series of N samples, label, rationale."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": "Common OpenTSLM schema (prompt, masks, stats).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tsio.features(),
      homepage="https://github.com/StanfordBDHG/OpenTSLM",
    )

  def _split_generators(self, dl_manager):
    out = {}
    for split, name in SPLIT_FILES.items():
      path = tsio.find_file(dl_manager.manual_dir, name, ("har_cot",))
      if path:
        out[split] = self._generate_examples(path)
    if not out:
      raise ValueError(f"manual_dir: no har_cot_*_cot.csv files under {dl_manager.manual_dir}")
    return out

  def _generate_examples(self, path):
    yield from parse_rows(path)
