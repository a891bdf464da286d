"""TFDS builders for MedQA, MedMCQA, PubMedQA and MMLU's clinical topics, built from their dummy_data
fixtures (real formats), and the few-shot exemplar files."""

import json
import os

import pytest
import tensorflow_datasets as tfds

from medjax import config_lib
from medjax.data import pipeline
from medjax.inference import strategies as S

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def _load(name):
  return config_lib.load_module(os.path.join(DATA, name, f"{name}.py"), f"mcq_{name}")


medqa, medmcqa, pubmedqa = _load("medqa"), _load("medmcqa"), _load("pubmedqa")
mmlu = _load("mmlu_clinical")


def _build(cls, name, tmp_path, config=None):
  builder = cls(data_dir=str(tmp_path), config=config)
  manual = os.path.join(DATA, name, "dummy_data")
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual)
  )
  sources = builder.as_data_source()
  return {
    split: [pipeline.record_to_example(src[i]) for i in range(len(src))]
    for split, src in sources.items()
  }


def _check_schema(ex, num_options):
  assert len(ex["options"]) == num_options and all(ex["options"])
  assert ex["options"]["ABCDE".index(ex["answer_idx"])] == ex["answer"]
  assert ex["question"] and ex["id"]


@pytest.mark.parametrize("config,num_options", [("us", 5), ("us_4_options", 4), (None, 4)])
def test_medqa(tmp_path, config, num_options):
  """Both option sets; the default (no config) is the 4-option set Med-PaLM 2 reports."""
  splits = _build(medqa.MedQA, "medqa", tmp_path, config)
  assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 2, "test": 2}
  raw = [
    json.loads(l) for l in open(os.path.join(DATA, "medqa", "dummy_data", "US", "train.jsonl"))
  ]
  for ex in splits["train"] + splits["test"]:
    _check_schema(ex, num_options)
  by_q = {ex["question"]: ex for ex in splits["train"]}
  for r in raw:
    assert (
      by_q[r["question"]]["answer"] == r["answer"]
      and by_q[r["question"]]["subject"] == r["meta_info"]
    )
  ex = splits["test"][0]
  prompt = S.FewShotFormat(shots=splits["train"][:2]).prompt(ex, cot=False)
  assert (
    prompt.count("Question:") == 3 and f"({'ABCDE'[num_options - 1]}) {ex['options'][-1]}" in prompt
  )


def test_medqa_rejects_bad_records():
  with pytest.raises(ValueError, match="answer_idx"):
    medqa.parse_record(
      json.dumps({"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "C"}), "f:1"
    )
  with pytest.raises(ValueError, match="options"):
    medqa.parse_record(
      json.dumps({"question": "q", "options": {"A": "x", "C": "y"}, "answer_idx": "A"}), "f:1"
    )


def test_medmcqa(tmp_path):
  splits = _build(medmcqa.MedMCQA, "medmcqa", tmp_path, "raw")
  assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 2}
  by_q = {ex["question"]: ex for exs in splits.values() for ex in exs}
  assert by_q["Which nerve is damaged in wrist drop?"]["answer"] == "Radial nerve"  # cop 3 -> opc
  assert by_q["Koplik spots are seen in:"]["answer_idx"] == "A"
  assert by_q["Drug of choice for absence seizures is:"]["subject"] == "Pharmacology"
  for ex in by_q.values():
    _check_schema(ex, 4)
  assert (
    medmcqa.parse_record(
      json.dumps({"question": "q", "cop": 0, "opa": "x", "opb": "y", "opc": "z", "opd": "w"}),
      0,
      "f:1",
    )["answer"]
    == "x"
  )  # the HF export
  with pytest.raises(ValueError, match="cop"):
    medmcqa.parse_record(json.dumps({"question": "q", "cop": 0, "opa": "x"}), 1, "f:1")


def test_pubmedqa(tmp_path):
  splits = _build(pubmedqa.PubMedQA, "pubmedqa", tmp_path)
  assert {k: len(v) for k, v in splits.items()} == {"train": 2, "test": 2}
  test = {ex["id"]: ex for ex in splits["test"]}
  assert test["16418930"]["answer"] == "no" and test["16418930"]["answer_idx"] == "B"
  assert test["17208539"]["answer_idx"] == "C"
  for ex in splits["train"] + splits["test"]:
    _check_schema(ex, 3)
    assert ex["options"] == ["yes", "no", "maybe"] and ex["context"] and ex["explanation"]
  fmt = S.FewShotFormat()
  assert "Context: " in fmt.prompt(test["16418930"], cot=True)
  assert fmt.parse(" Explanation... Answer: maybe", test["16418930"], cot=True) == "C"
  with pytest.raises(ValueError, match="final_decision"):
    pubmedqa.parse_record("1", {"QUESTION": "q", "final_decision": "perhaps"})


def test_mmlu_clinical(tmp_path):
  """The six clinical topics from MMLU's header-less CSV rows (quoted commas kept), per topic too."""
  import csv

  splits = _build(mmlu.MMLUClinical, "mmlu_clinical", tmp_path)
  assert {k: len(v) for k, v in splits.items()} == {"dev": 6, "validation": 6, "test": 7}
  root = os.path.join(DATA, "mmlu_clinical", "dummy_data", "data")
  for split, folder in (("dev", "dev"), ("validation", "val"), ("test", "test")):
    rows = [
      (s.replace("_", " "), r)
      for s in mmlu.SUBJECTS
      for r in csv.reader(open(os.path.join(root, folder, f"{s}_{folder}.csv")))
    ]
    got = [
      (ex["subject"], [ex["question"], *ex["options"], ex["answer_idx"]]) for ex in splits[split]
    ]
    assert sorted(got) == sorted(rows)  # every row, every field, its subject
  for ex in splits["test"]:
    _check_schema(ex, 4)
  assert any("," in o for ex in splits["test"] for o in ex["options"])  # a quoted field
  one = _build(mmlu.MMLUClinical, "mmlu_clinical", tmp_path / "one", "medical_genetics")
  assert {ex["subject"] for exs in one.values() for ex in exs} == {"medical genetics"}
  with pytest.raises(ValueError, match="answer: expected one of"):
    mmlu.parse_row(["q", "a", "b", "c", "d", "E"], "anatomy", "f:1")
  with pytest.raises(ValueError, match="expected 6 fields"):
    mmlu.parse_row(["q", "a", "b", "C"], "anatomy", "f:1")


@pytest.mark.parametrize("name", ["medqa", "medmcqa", "pubmedqa", "mmlu_clinical"])
def test_default_exemplars_have_rationales(name):
  """Each dataset's default exemplars: 5 (Med-PaLM 2's shots), each with a rationale that CoT prompts
  show and that direct prompts leave out."""
  from medjax.inference import mcq

  shots = mcq.load_exemplars(mcq.DEFAULT_EXEMPLARS[name])
  assert len(shots) == 5 and all(s["explanation"] for s in shots)
  fmt = mcq.prompt_format(name, shots)
  ex = {**shots[0], "question": "A new question?"}
  cot, direct = fmt.prompt(ex, cot=True), fmt.prompt(ex, cot=False)
  assert all(s["explanation"] in cot and s["explanation"] not in direct for s in shots)
  assert cot.count("Answer: (") == 5 and cot.endswith("Explanation:")
  with pytest.raises(ValueError, match="--shots: expected at most 5"):
    mcq.prompt_format(name, shots, shots=6)


def test_exemplar_file_errors_name_the_field(tmp_path):
  from medjax.inference import mcq

  good = {"question": "q", "options": ["x", "y"], "rationale": "because", "answer": "y"}
  path = tmp_path / "ex.jsonl"
  path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "options": {"A": "x", "B": "y"}}))
  assert [e["answer_idx"] for e in mcq.load_exemplars(str(path))] == ["B", "B"]
  for bad, field in (({"rationale": ""}, "rationale"), ({"answer": "C"}, "answer")):
    path.write_text(json.dumps({**good, **bad}))
    with pytest.raises(ValueError, match=f"ex.jsonl:1: {field}: expected"):
      mcq.load_exemplars(str(path))
