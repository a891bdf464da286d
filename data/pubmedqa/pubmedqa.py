"""PubMedQA-L (Jin et al. 2019): 1k expert-labelled yes/no/maybe questions on PubMed abstracts.

ori_pqal.json maps PMID -> {"QUESTION", "CONTEXTS": [...], "LABELS", "MESHES", "YEAR",
"final_decision": "yes"|"no"|"maybe", "LONG_ANSWER", ...}. The official test set is the 500 PMIDs
of test_ground_truth.json ({pmid: decision}); the others form the train split. Records use the
common MCQ schema of data/medqa/medqa.py with options (yes, no, maybe) and the abstract as context.
"""

import json

import tensorflow_datasets as tfds
from etils import epath

from medjax.data.mcq_io import mcq_info

OPTIONS = ("yes", "no", "maybe")


def parse_record(pmid: str, r: dict) -> dict:
  decision = str(r.get("final_decision", "")).strip().lower()
  if decision not in OPTIONS:
    raise ValueError(
      f"PMID {pmid}: final_decision: expected one of {OPTIONS}, got {r.get('final_decision')!r}"
    )
  return {
    "id": str(pmid),
    "question": r["QUESTION"].strip(),
    "options": list(OPTIONS),
    "answer_idx": "ABC"[OPTIONS.index(decision)],
    "answer": decision,
    "context": " ".join(c.strip() for c in r.get("CONTEXTS", [])),
    "explanation": (r.get("LONG_ANSWER") or "").strip(),
    "subject": ", ".join(r.get("MESHES", [])),
  }


class PubMedQA(tfds.core.GeneratorBasedBuilder):
  """PubMedQA-L in the common MCQ schema."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Put ori_pqal.json (and test_ground_truth.json for the official test "
    "split) from github.com/pubmedqa/pubmedqa data/ in manual_dir."
  )
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return mcq_info(self, __doc__, "https://pubmedqa.github.io")

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    if not (root / "ori_pqal.json").exists():
      raise ValueError(f"manual_dir: expected ori_pqal.json in {root}")
    data = json.loads((root / "ori_pqal.json").read_text())
    truth = root / "test_ground_truth.json"
    test = set(json.loads(truth.read_text())) if truth.exists() else set()
    missing = test - set(data)
    if missing:
      raise ValueError(
        f"test_ground_truth.json: {len(missing)} PMIDs not in ori_pqal.json, e.g. {sorted(missing)[:3]}"
      )
    out = {"train": self._generate_examples({k: v for k, v in data.items() if k not in test})}
    if test:
      out["test"] = self._generate_examples({k: data[k] for k in sorted(test)})
    return out

  def _generate_examples(self, records):
    for pmid, r in records.items():
      yield pmid, parse_record(pmid, r)
