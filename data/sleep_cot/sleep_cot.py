"""Sleep-CoT (OpenTSLM): 30 s single-channel EEG epochs from Sleep-EDF with a sleep stage and a
chain-of-thought rationale; OpenTSLM stage 4.

The public release is one file sleep_cot.csv with columns time_series (a list holding one list of
1500 floats), label (one of LABELS) and rationale (extra columns are ignored). There are no
official splits: OpenTSLM's are drawn (timeseries_io.original_splits "sklearn": 10% test, then 10%
validation, stratified by label; the same rows as its loader). Records use the common OpenTSLM schema of medjax/data/timeseries_io.py.
"""

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import timeseries_io as tsio

URL = "https://polybox.ethz.ch/index.php/s/ZryWSdCFJZ9JR3R/download"
FILE = "sleep_cot.csv"
SAMPLES = 1500  # 30 s at 50 Hz
LABELS = ("Wake", "Non-REM stage 1", "Non-REM stage 2", "Non-REM stage 3", "REM sleep", "Movement")
PRE_PROMPT = (
  "You are given a 30-second EEG segment. Classify the sleep stage from an analysis of the data. "
  "Reason objectively and step by step in one paragraph, without lists or headers, and reveal the "
  "stage only at the very end.\n"
)
POST_PROMPT = f'Possible sleep stages are: {", ".join(LABELS)}. Write your rationale and end it with "Answer: ".'
MANUAL_DOWNLOAD_INSTRUCTIONS = (
  f"Download {FILE} from {URL} and put it (or a folder sleep holding it) into manual_dir."
)


def parse_rows(path) -> list[tuple[str, dict]]:
  """(key, record) for every row of sleep_cot.csv."""
  out = []
  for i, (where, row) in enumerate(tsio.read_csv(path, ("time_series", "label", "rationale"))):
    series = tsio.parse_series_list(row["time_series"], f"{where}: time_series")
    if len(series) != 1 or len(series[0]) != SAMPLES:
      raise ValueError(
        f"{where}: time_series: expected one EEG channel of {SAMPLES} samples, got "
        f"{[len(s) for s in series]}"
      )
    label = row["label"].strip()
    if label not in LABELS:
      raise ValueError(f"{where}: label: expected one of {LABELS}, got {label!r}")
    key = f"sleep_cot-{i}"
    out.append(
      (
        key,
        tsio.make_example(
          key,
          series,
          ["EEG"],
          pre_prompt=PRE_PROMPT,
          post_prompt=POST_PROMPT,
          rationale=tsio.field(row, "rationale", where),
          label=label,
        ),
      )
    )
  return out


class SleepCot(tfds.core.GeneratorBasedBuilder):
  """Sleep-CoT epochs: one EEG series of 1500 samples, sleep stage, rationale."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
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
    rows = parse_rows(tsio.require_file(dl_manager.manual_dir, FILE, ("sleep",)))
    return {
      split: self._generate_examples(part)
      for split, part in tsio.original_splits(rows, "sklearn", "label").items()
    }

  def _generate_examples(self, rows):
    yield from rows
