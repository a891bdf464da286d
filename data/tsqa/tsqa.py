"""TSQA (ChatTime, Wang et al. 2024): 3-option questions about one synthetic series; OpenTSLM stage 1.

The public release (huggingface.co/datasets/ChengsenWang/TSQA) is one file TSQA.csv with columns
Task (Trend, Volatility, Season, Outlier), Size (series length), Question (with the options
"(a) ...", "(b) ...", "(c) ..."), Answer (e.g. "(b)"), Label and Series (a list of floats).
There are no official splits: OpenTSLM's are drawn (timeseries_io.original_splits "hf": 10% test,
then 10% validation; the same rows as its loader). Records use the common OpenTSLM schema of medjax/data/timeseries_io.py, plus `task`; the
target is "Answer: {Answer}".
"""

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import timeseries_io as tsio

FILE = "TSQA.csv"
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Download {FILE} from huggingface.co/datasets/ChengsenWang/TSQA
and put it (or a folder TSQA holding it) into manual_dir."""


def parse_rows(path) -> list[tuple[str, dict]]:
  """(key, record) for every row of TSQA.csv."""
  out = []
  for i, (where, row) in enumerate(tsio.read_csv(path, ("Task", "Question", "Answer", "Series"))):
    series = tsio.parse_series(row["Series"], f"{where}: Series")
    size = (row.get("Size") or "").strip()
    if size and size != str(len(series)):
      raise ValueError(f"{where}: Size: expected the series length {len(series)}, got {size!r}")
    task = tsio.field(row, "Task", where)
    key = f"tsqa-{i}"
    out.append(
      (
        key,
        tsio.make_example(
          key,
          [series],
          ["Time series"],
          pre_prompt=tsio.field(row, "Question", where) + "\n",
          post_prompt=f"Predict the {task.lower()}.",
          label=tsio.field(row, "Answer", where),
          task=task,
        ),
      )
    )
  return out


class Tsqa(tfds.core.GeneratorBasedBuilder):
  """TSQA: one series, a 3-option question and its answer."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tsio.features(task=tfds.features.Text()),
      homepage="https://huggingface.co/datasets/ChengsenWang/TSQA",
    )

  def _split_generators(self, dl_manager):
    rows = parse_rows(tsio.require_file(dl_manager.manual_dir, FILE, ("TSQA",)))
    return {
      split: self._generate_examples(part)
      for split, part in tsio.original_splits(rows, "hf").items()
    }

  def _generate_examples(self, rows):
    yield from rows
