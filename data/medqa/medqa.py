"""MedQA (USMLE) multiple-choice questions, from the public release's JSONL files (Jin et al. 2020).

Each line: {"question", "answer", "options": {"A": ..., "E": ...}, "meta_info", "answer_idx"}.
Config `us_4_options` (the first, so the default: the set Med-PaLM 2 and Medprompt report) reads
US/4_options/phrases_no_exclude_{split}.jsonl; `us` reads the 5-option files US/{train,dev,test}.jsonl. Records are normalised to the common MCQ schema
{id, question, options, answer_idx, answer, context, explanation, subject} shared by the MedMCQA
and PubMedQA builders.
"""

import dataclasses
import json

import tensorflow_datasets as tfds
from etils import epath

from medjax.data.mcq_io import mcq_info

MANUAL_DOWNLOAD_INSTRUCTIONS = """Download data_clean.zip of MedQA (github.com/jind11/MedQA) and unzip it
into manual_dir (it holds data_clean/questions/US/...), or put the US folder itself there."""

SPLIT_FILES = {"train": "train", "validation": "dev", "test": "test"}


@dataclasses.dataclass
class MedQAConfig(tfds.core.BuilderConfig):
  subdir: str = "US"
  pattern: str = "{split}.jsonl"


def find_file(manual_dir: epath.Path, subdir: str, name: str) -> epath.Path | None:
  """`name` under manual_dir[/data_clean/questions]/subdir, or directly in manual_dir."""
  for base in (manual_dir / "data_clean" / "questions" / subdir, manual_dir / subdir, manual_dir):
    if (base / name).exists():
      return base / name
  return None


def parse_record(line: str, where: str) -> dict:
  """One JSONL line -> the common MCQ schema; a malformed record raises ValueError naming `where`."""
  r = json.loads(line)
  opts = r.get("options")
  if not isinstance(opts, dict) or not opts:
    raise ValueError(f"{where}: options: expected a dict {{'A': text, ...}}, got {opts!r}")
  letters = sorted(opts)
  if letters != [chr(ord("A") + i) for i in range(len(letters))]:
    raise ValueError(f"{where}: options: expected consecutive letters from 'A', got {letters}")
  if r.get("answer_idx") not in opts:
    raise ValueError(f"{where}: answer_idx: expected one of {letters}, got {r.get('answer_idx')!r}")
  return {
    "question": r["question"].strip(),
    "options": [opts[k].strip() for k in letters],
    "answer_idx": r["answer_idx"],
    "answer": opts[r["answer_idx"]].strip(),
    "context": "",
    "explanation": "",
    "subject": str(r.get("meta_info", "")),
  }


class MedQA(tfds.core.GeneratorBasedBuilder):
  """MedQA USMLE questions (4 or 5 options) in the common MCQ schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    MedQAConfig(
      name="us_4_options",
      subdir="US/4_options",
      pattern="phrases_no_exclude_{split}.jsonl",
      description="4 options (default, as reported by Med-PaLM 2)",
    ),
    MedQAConfig(name="us", description="5 options"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return mcq_info(self, __doc__, "https://github.com/jind11/MedQA")

  def _split_generators(self, dl_manager):
    cfg, out = self.builder_config, {}
    for split, name in SPLIT_FILES.items():
      path = find_file(
        epath.Path(dl_manager.manual_dir), cfg.subdir, cfg.pattern.format(split=name)
      )
      if path is not None:
        out[split] = self._generate_examples(path)
    if not out:
      raise ValueError(
        f"manual_dir: no {cfg.pattern.format(split='<split>')} files under "
        f"{dl_manager.manual_dir} ({cfg.subdir})"
      )
    return out

  def _generate_examples(self, path):
    with epath.Path(path).open() as f:
      for i, line in enumerate(f):
        if line.strip():
          key = f"{path.stem}-{i}"
          yield key, {"id": key, **parse_record(line, f"{path}:{i + 1}")}
