"""M4 captions (OpenTSLM): M4 competition series with generated captions; OpenTSLM stage 2.

The public release (M4TimeSeriesCaptionDataset, github.com/StanfordBDHG/M4TimeSeriesCaptionDataset)
holds, per frequency F in FREQUENCIES, m4_series_F.csv (columns id, series: a JSON list of floats)
and m4_captions_F.csv (columns id, caption); series without a caption are left out. There are no
official splits: OpenTSLM's are drawn (timeseries_io.original_splits "hf_m4": 10% test, then 10%
validation, over all frequencies in file order; not stratified).
Records use the common OpenTSLM schema of medjax/data/timeseries_io.py, plus `frequency`; the
target is the caption (label is empty).
"""

import tensorflow_datasets as tfds
from etils import epath

from medjax.data import timeseries_io as tsio

URL = (
  "https://polybox.ethz.ch/index.php/s/MT3y9WdEebT8wfj/download/M4TimeSeriesCaptionDatasetV02.zip"
)
FREQUENCIES = ("Daily", "Hourly", "Monthly", "Quarterly", "Weekly", "Yearly")
SUBDIRS = ("M4TimeSeriesCaptionDataset", "M4TimeSeriesCaptionDataset/M4TimeSeriesCaptionDataset")
PRE_PROMPT = "You are an expert in time-series analysis.\n"
POST_PROMPT = "Write a detailed caption that describes this time series as accurately as possible."
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Download {URL}, unzip it and put the
m4_series_*.csv and m4_captions_*.csv files (or the folder holding them) into manual_dir."""


def parse_frequency(series_path, captions_path, frequency: str) -> list[tuple[str, dict]]:
  """(key, record) for every captioned series of one frequency."""
  captions = {}
  for where, row in tsio.read_csv(captions_path, ("id", "caption")):
    captions[tsio.field(row, "id", where)] = tsio.field(row, "caption", where)
  out = []
  for where, row in tsio.read_csv(series_path, ("id", "series")):
    key = tsio.field(row, "id", where)
    if key in captions:
      series = tsio.parse_series(row["series"], f"{where}: series")
      out.append(
        (
          key,
          tsio.make_example(
            key,
            [series],
            [f"{frequency} time series"],
            pre_prompt=PRE_PROMPT,
            post_prompt=POST_PROMPT,
            answer=captions[key],
            frequency=frequency,
          ),
        )
      )
  return out


class M4Captions(tfds.core.GeneratorBasedBuilder):
  """M4 series (variable length) with a caption."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tsio.features(frequency=tfds.features.Text()),
      homepage="https://github.com/StanfordBDHG/M4TimeSeriesCaptionDataset",
    )

  def _split_generators(self, dl_manager):
    rows = []
    for freq in FREQUENCIES:
      series = tsio.find_file(dl_manager.manual_dir, f"m4_series_{freq}.csv", SUBDIRS)
      if series is None:
        continue
      captions = series.parent / f"m4_captions_{freq}.csv"
      if not captions.exists():
        raise ValueError(f"{series.name}: expected {captions.name} beside it, found none")
      rows += parse_frequency(series, captions, freq)
    if not rows:
      raise ValueError(f"manual_dir: no captioned m4_series_*.csv under {dl_manager.manual_dir}")
    return {
      split: self._generate_examples(part)
      for split, part in tsio.original_splits(rows, "hf_m4").items()
    }

  def _generate_examples(self, rows):
    yield from rows
