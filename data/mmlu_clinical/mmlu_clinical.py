"""MMLU's clinical topics (Hendrycks et al. 2021) as Med-PaLM 2 reports them, from MMLU's CSV files.

The release (data.tar) holds data/{dev,val,test}/<subject>_{dev,val,test}.csv: header-less CSV rows
`question,A,B,C,D,answer` (quoted where a field holds a comma), `answer` a letter. dev holds MMLU's 5
few-shot examples per subject. Config `all` (the default) reads the six clinical subjects, each record
naming its subject; a config per subject reads one. Records use the common MCQ schema
(medjax/data/mcq_io.py); splits: dev, validation (val), test.
"""

import csv
import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from medjax.data.mcq_io import mcq_info

SUBJECTS = (
  "anatomy",
  "clinical_knowledge",
  "college_biology",
  "college_medicine",
  "medical_genetics",
  "professional_medicine",
)
SPLIT_FILES = {"dev": "dev", "validation": "val", "test": "test"}
LETTERS = "ABCD"


@dataclasses.dataclass
class MMLUClinicalConfig(tfds.core.BuilderConfig):
  subjects: tuple = SUBJECTS


def find_file(root: epath.Path, split: str, subject: str) -> epath.Path | None:
  """<subject>_<split>.csv under root/data/<split>, root/<split> or root itself."""
  name = f"{subject}_{split}.csv"
  for base in (root / "data" / split, root / split, root):
    if (base / name).exists():
      return base / name
  return None


def parse_row(row: list[str], subject: str, where: str) -> dict:
  """One CSV row -> the common MCQ schema; a malformed row raises ValueError naming `where`."""
  if len(row) != 6:
    raise ValueError(f"{where}: expected 6 fields question,A,B,C,D,answer, got {len(row)}: {row!r}")
  question, *options, answer = (f.strip() for f in row)
  if answer not in LETTERS:
    raise ValueError(f"{where}: answer: expected one of {list(LETTERS)}, got {answer!r}")
  return {
    "question": question,
    "options": options,
    "answer_idx": answer,
    "answer": options[LETTERS.index(answer)],
    "context": "",
    "explanation": "",
    "subject": subject.replace("_", " "),
  }


class MMLUClinical(tfds.core.GeneratorBasedBuilder):
  """MMLU clinical topics in the common MCQ schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    MMLUClinicalConfig(name="all", description="the six clinical subjects"),
    *(MMLUClinicalConfig(name=s, subjects=(s,), description=s) for s in SUBJECTS),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract MMLU's data.tar (people.eecs.berkeley.edu/~hendrycks/data.tar) into manual_dir: it "
    "holds data/{dev,val,test}/<subject>_<split>.csv."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return mcq_info(self, __doc__, "https://github.com/hendrycks/test")

  def _split_generators(self, dl_manager):
    root, subjects = epath.Path(dl_manager.manual_dir), self.builder_config.subjects
    out = {}
    for split, name in SPLIT_FILES.items():
      files = {s: find_file(root, name, s) for s in subjects}
      missing = [s for s, f in files.items() if f is None]
      if len(missing) < len(files) and missing:
        raise ValueError(
          f"manual_dir: {name} split: no {[f'{s}_{name}.csv' for s in missing]} under {root}"
        )
      if not missing:
        out[split] = self._generate_examples(files)
    if not out:
      raise ValueError(
        f"manual_dir: no <subject>_<split>.csv files of {list(subjects)} under {root}"
      )
    return out

  def _generate_examples(self, files: dict):
    for subject, path in files.items():
      with epath.Path(path).open() as f:
        for i, row in enumerate(csv.reader(f)):
          if row:
            key = f"{path.stem}-{i}"
            yield key, {"id": key, **parse_row(row, subject, f"{path}:{i + 1}")}
