"""MedMCQA (Pal et al. 2022): Indian medical entrance exam questions with 4 options and explanations.

The public release has JSON-lines files train.json, dev.json, test.json with records
{"id", "question", "opa", "opb", "opc", "opd", "cop", "choice_type", "exp", "subject_name",
"topic_name"}, where `cop` is the correct option numbered 1-4 (1 = opa). The Hugging Face export
numbers it 0-3: pick config `hf` for that. The test release has no answers, so only train and
validation (dev.json) are built. Records use the common MCQ schema of data/medqa/medqa.py.
"""

import dataclasses
import json

import tensorflow_datasets as tfds
from etils import epath

from medjax.data.mcq_io import mcq_info

SPLIT_FILES = {"train": "train.json", "validation": "dev.json"}
OPTION_KEYS = ("opa", "opb", "opc", "opd")


@dataclasses.dataclass
class MedMCQAConfig(tfds.core.BuilderConfig):
  cop_base: int = 1  # the number of option A in `cop`


def parse_record(line: str, cop_base: int, where: str) -> dict | None:
  """One JSON line -> the common MCQ schema, or None for an unlabelled record (test release)."""
  r = json.loads(line)
  cop = r.get("cop")
  if cop is None or cop == -1:
    return None
  if not isinstance(cop, int) or not cop_base <= cop < cop_base + 4:
    raise ValueError(f"{where}: cop: expected an int in [{cop_base}, {cop_base + 3}], got {cop!r}")
  options = [str(r.get(k) or "").strip() for k in OPTION_KEYS]
  idx = cop - cop_base
  topic = r.get("topic_name") or ""
  return {
    "id": str(r.get("id", where)),
    "question": r["question"].strip(),
    "options": options,
    "answer_idx": "ABCD"[idx],
    "answer": options[idx],
    "context": "",
    "explanation": (r.get("exp") or "").strip(),
    "subject": (r.get("subject_name") or "") + (f" / {topic}" if topic else ""),
  }


class MedMCQA(tfds.core.GeneratorBasedBuilder):
  """MedMCQA in the common MCQ schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    MedMCQAConfig(name="raw", description="cop numbered 1-4 (GitHub release)"),
    MedMCQAConfig(name="hf", cop_base=0, description="cop numbered 0-3 (HF export)"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Put train.json and dev.json of MedMCQA (medmcqa.github.io) in manual_dir."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return mcq_info(self, __doc__, "https://medmcqa.github.io")

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    out = {
      s: self._generate_examples(root / f) for s, f in SPLIT_FILES.items() if (root / f).exists()
    }
    if not out:
      raise ValueError(f"manual_dir: expected {sorted(SPLIT_FILES.values())} in {root}")
    return out

  def _generate_examples(self, path):
    with epath.Path(path).open() as f:
      for i, line in enumerate(f):
        rec = (
          parse_record(line, self.builder_config.cop_base, f"{path}:{i + 1}")
          if line.strip()
          else None
        )
        if rec is not None:
          yield f"{path.stem}-{i}", rec
