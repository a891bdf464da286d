"""OpenTSLM curriculum TFDS builders (TSQA, M4 captions, Sleep-CoT, ECG-QA-CoT) on their dummy_data
fixtures in the releases' file formats, and the shared helpers of medjax/data/timeseries_io.py."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax import config_lib
from medjax.data import timeseries_io as tsio
from medjax.data.synthetic import har
from medjax.inference import parsing

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def _load(name):
  return config_lib.load_module(os.path.join(DATA, name, f"{name}.py"), f"tslm_{name}")


tsqa, m4_captions, sleep_cot, ecg_qa_cot = (
  _load(n) for n in ("tsqa", "m4_captions", "sleep_cot", "ecg_qa_cot")
)


def _build(module, cls, name, tmp_path):
  builder = getattr(module, cls)(data_dir=str(tmp_path))
  builder.download_and_prepare(
    file_format="array_record",
    download_config=tfds.download.DownloadConfig(manual_dir=os.path.join(DATA, name, "dummy_data")),
  )
  return {
    split: [src[i] for i in range(len(src))] for split, src in builder.as_data_source().items()
  }


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _raw_csv(*path):
  with open(os.path.join(DATA, *path), newline="") as f:
    return list(csv.DictReader(f))


def _check_common(rec, raw_series: list[np.ndarray]):
  """Series, mask, lengths and stats against the raw values; stats in the text; one <ts> per series."""
  n = [len(s) for s in raw_series]
  assert rec["series"].shape == (len(n), max(n)) and rec["series_length"].tolist() == n
  assert rec["series_mask"].sum(axis=1).tolist() == n
  for i, s in enumerate(raw_series):
    np.testing.assert_allclose(rec["series"][i, : n[i]], s, atol=1e-5)
    assert not rec["series"][i, n[i] :].any()
    np.testing.assert_allclose(
      [rec["series_mean"][i], rec["series_std"][i]], [s.mean(), s.std()], rtol=1e-4
    )
    assert f"mean {rec['series_mean'][i]:.4f}, std {rec['series_std'][i]:.4f}" in _text(
      rec["series_text"][i]
    )
    z = tsio.normalized(rec)[i]
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
  prompt = _text(rec["prompt"])
  assert prompt.startswith(_text(rec["pre_prompt"])) and prompt.endswith(_text(rec["post_prompt"]))
  assert prompt.count(tsio.TS) == len(n) and tsio.TS == har.TS


def _check_encodes(rec, seq_len):
  """A record goes through the task's host encoding; the loss covers the target, which parses to the label."""
  from medjax.data.tokenizers import ByteTokenizer
  from medjax.tasks import opentslm as task_lib

  tok, (prompt, series, target) = ByteTokenizer(), tsio.format_example(rec)
  enc = task_lib.encode_example(
    prompt,
    series,
    target,
    tok,
    seq_len=seq_len,
    ts_token_id=259,
    num_series=12,
    series_len=1500,
    max_samples=4096,
  )
  assert (enc["series_mask"].sum(axis=1)[: len(series)] == rec["series_length"]).all()
  assert tok.decode(enc["targets"][enc["loss_mask"] > 0].tolist()).startswith(target)
  assert parsing.answer_text(target) == _text(rec["label"]).lower()


def _check_splits(splits, sizes):
  assert {k: len(v) for k, v in splits.items()} == sizes
  ids = [_text(r["id"]) for v in splits.values() for r in v]
  assert len(set(ids)) == len(ids)


def test_tsqa(tmp_path):
  splits = _build(tsqa, "Tsqa", "tsqa", tmp_path)
  _check_splits(splits, {"train": 8, "validation": 1, "test": 1})
  raw = _raw_csv("tsqa", "dummy_data", "TSQA.csv")
  for rec in splits["train"] + splits["test"]:
    row = raw[int(_text(rec["id"]).split("-")[1])]
    _check_common(rec, [np.array(json.loads(row["Series"]), np.float32)])
    assert (
      _text(rec["label"]) == row["Answer"] and _text(rec["answer"]) == f"Answer: {row['Answer']}"
    )
    assert _text(rec["pre_prompt"]).strip() == row["Question"] and _text(rec["task"]) == row["Task"]
    assert (
      _text(rec["post_prompt"]) == f"Predict the {row['Task'].lower()}."
      and rec["template_id"] == -1
    )
  _check_encodes(splits["test"][0], 1024)
  bad = tmp_path / "TSQA.csv"
  bad.write_text('Task,Size,Question,Answer,Series\nTrend,3,q,(a),"[1.0, 2.0]"\n')
  with pytest.raises(ValueError, match=r"TSQA.csv:2: Size: expected the series length 2, got '3'"):
    tsqa.parse_rows(bad)


def test_m4_captions(tmp_path):
  splits = _build(m4_captions, "M4Captions", "m4_captions", tmp_path)
  _check_splits(splits, {"train": 6, "validation": 1, "test": 1})  # M5 and Q5 have no caption
  recs = {_text(r["id"]): r for v in splits.values() for r in v}
  assert sorted(recs) == ["M1", "M2", "M3", "M4", "Q1", "Q2", "Q3", "Q4"]
  for freq in ("Monthly", "Quarterly"):
    captions = {
      r["id"]: r["caption"]
      for r in _raw_csv(
        "m4_captions", "dummy_data", "M4TimeSeriesCaptionDataset", f"m4_captions_{freq}.csv"
      )
    }
    for row in _raw_csv(
      "m4_captions", "dummy_data", "M4TimeSeriesCaptionDataset", f"m4_series_{freq}.csv"
    ):
      if row["id"] not in captions:
        continue
      rec = recs[row["id"]]
      _check_common(rec, [np.array(json.loads(row["series"]), np.float32)])
      assert _text(rec["answer"]) == captions[row["id"]] and _text(rec["label"]) == ""
      assert _text(rec["frequency"]) == freq and _text(rec["series_text"][0]).startswith(
        f"{freq} time series"
      )


def test_sleep_cot(tmp_path):
  splits = _build(sleep_cot, "SleepCot", "sleep_cot", tmp_path)
  _check_splits(splits, {"train": 8, "validation": 2, "test": 2})
  raw = {r["rationale"]: r for r in _raw_csv("sleep_cot", "dummy_data", "sleep_cot.csv")}
  for rec in (r for v in splits.values() for r in v):
    row = raw[_text(rec["rationale"])]
    _check_common(rec, [np.array(json.loads(row["time_series"])[0], np.float32)])
    assert rec["series"].shape == (1, 1500) and _text(rec["label"]) == row["label"]
    assert _text(rec["answer"]) == row["rationale"] and _text(rec["answer"]).endswith(
      f"Answer: {row['label']}"
    )
    assert "Non-REM stage 3" in _text(rec["post_prompt"])
  _check_encodes(splits["test"][0], 1024)
  bad = tmp_path / "sleep_cot.csv"
  bad.write_text('time_series,label,rationale\n"[[1.0, 2.0]]",Wake,r\n')
  with pytest.raises(
    ValueError,
    match=r"sleep_cot.csv:2: time_series: expected one EEG channel of 1500 samples, "
    r"got \[2\]",
  ):
    sleep_cot.parse_rows(bad)
  bad.write_text('time_series,label,rationale\n"[[' + ", ".join(["1.0"] * 1500) + ']]",Stage 4,r\n')
  with pytest.raises(ValueError, match="label: expected one of .*'Wake'.*got 'Stage 4'"):
    sleep_cot.parse_rows(bad)


def _write_wfdb(base, digital, fs, checksum_offset=0):
  """A format-16 WFDB record (PTB-XL layout: gain 1000/mV, baseline 0) of int16 samples [n_sig, n]."""
  base.parent.mkdir(parents=True, exist_ok=True)
  digital.T.astype("<i2").tofile(f"{base}.dat")
  lines = [f"{base.name} {len(digital)} {fs} {digital.shape[1]}"]
  lines += [
    f"{base.name}.dat 16 1000.0(0)/mV 16 0 {d[0]} {int(d.sum()) + checksum_offset} 0 L{i}"
    for i, d in enumerate(digital)
  ]
  (base.parent / f"{base.name}.hea").write_text("\n".join(lines) + "\n")


def test_ecg_qa_cot(tmp_path):
  splits = _build(ecg_qa_cot, "EcgQaCot", "ecg_qa_cot", tmp_path)
  _check_splits(splits, {"train": 3, "validation": 1, "test": 2})
  fixture = os.path.join(DATA, "ecg_qa_cot", "dummy_data")
  leads = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
  raw = {
    r["question"]: r
    for s in ("train", "val", "test")
    for r in _raw_csv("ecg_qa_cot", "dummy_data", "ecg_qa_cot", f"ecg_qa_cot_{s}.csv")
  }
  for rec in splits["train"] + splits["test"]:
    row = raw[_text(rec["question"])]
    ecg_id = int(row["ecg_id"].strip("[]"))
    dat = np.fromfile(
      os.path.join(fixture, "ptbxl", "records100", "00000", f"{ecg_id:05d}_lr.dat"), "<i2"
    )
    _check_common(rec, list(dat.reshape(1000, 12).T / 1000.0))  # mV = int16 / gain 1000
    assert [_text(t).split(",")[0] for t in rec["series_text"]] == [f"ECG lead {l}" for l in leads]
    assert rec["ecg_id"].tolist() == [ecg_id] and rec["template_id"] == int(row["template_id"])
    assert _text(rec["label"]) == row["answer"] and _text(rec["answer"]) == row["rationale"]
    assert _text(rec["question_type"]) == row["question_type"] and row["question"] in _text(
      rec["pre_prompt"]
    )
  by_template = {}
  for rec in splits["test"]:  # what per-template accuracy groups by
    by_template.setdefault(int(rec["template_id"]), []).append(_text(rec["label"]))
  assert by_template == {1: ["no"], 15: ["sinus rhythm"]}
  verify = next(r for r in splits["train"] if r["template_id"] == 1)
  assert [_text(o) for o in verify["options"]] == ["yes", "no", "not sure"]
  assert "Select your answer from: yes, no, not sure." in _text(verify["post_prompt"])
  val = splits["validation"][0]  # empty clinical_context -> the default
  assert "Clinical context: 12-lead ECG recording." in _text(val["pre_prompt"])
  _check_encodes(val, 2048)


def test_ecg_records500_and_bad_records(tmp_path):
  """A 500 Hz record is preferred and taken at every 5th sample; corrupt records raise clear errors."""
  digital = np.random.default_rng(0).integers(-2000, 2000, (12, 5000)).astype(np.int16)
  _write_wfdb(tmp_path / "records500" / "07000" / "07123_hr", digital, 500)
  _write_wfdb(tmp_path / "records100" / "07000" / "07123_lr", digital[:, :1000] * 0, 100)
  signals, names = ecg_qa_cot.load_ecg(str(tmp_path), 7123)
  np.testing.assert_allclose(signals, digital[:, ::5] / 1000.0, atol=1e-6)
  assert signals.shape == (12, 1000) and names[:2] == ["L0", "L1"]
  _write_wfdb(tmp_path / "bad" / "00001_lr", digital[:, :1000], 100, checksum_offset=1)
  with pytest.raises(ValueError, match="00001_lr.dat: signal L0: checksum"):
    ecg_qa_cot.read_wfdb(tmp_path / "bad" / "00001_lr")
  with pytest.raises(ValueError, match=r"ecg_id 8: no PTB-XL record 00000/00008_hr or _lr"):
    ecg_qa_cot.load_ecg(str(tmp_path), 8)
  rows = tmp_path / "ecg_qa_cot_test.csv"
  rows.write_text(
    "ecg_id,question,answer,template_id,question_type,rationale\n"
    '"[7123, 7123]",Same rhythm?,yes,7,comparison_consecutive-verify,Both are alike.\n'
  )
  ((key, rec),) = ecg_qa_cot.parse_rows(rows, tmp_path, {})  # no options known for template 7
  assert rec["series"].shape == (24, 1000) and rec["series_text"][12].startswith(
    "ECG lead L0 (recording 2)"
  )
  assert (
    rec["options"] == []
    and rec["answer"] == "Both are alike. Answer: yes"
    and rec["template_id"] == 7
  )
  rows.write_text(
    "ecg_id,question,answer,template_id,question_type,rationale\n[7123],q,yes,x,single-verify,r\n"
  )
  with pytest.raises(
    ValueError, match="ecg_qa_cot_test.csv:2: template_id: expected an integer, got 'x'"
  ):
    list(ecg_qa_cot.parse_rows(rows, tmp_path, {}))
  with pytest.raises(
    ValueError, match="f.csv:2: ecg_id: expected a PTB-XL id or a list of ids, got 'abc'"
  ):
    ecg_qa_cot.parse_ids("abc", "f.csv:2")
  assert ecg_qa_cot.parse_ids("[12, 34]", "w") == [12, 34]
  assert parsing.answer_label("['lead I', 'lead II']") == "lead I, lead II"


def test_timeseries_io_helpers(tmp_path):
  rec = tsio.make_example(
    "k",
    [np.arange(4, dtype=np.float32), np.ones(2, np.float32)],
    ["a", "b"],
    pre_prompt="P\n",
    post_prompt="Q",
    rationale="Because.",
    label="walking",
  )
  assert rec["series"].tolist() == [[0, 1, 2, 3], [1, 1, 0, 0]] and rec[
    "series_length"
  ].tolist() == [4, 2]
  assert rec["series_mask"].tolist() == [[True] * 4, [True, True, False, False]]
  assert rec["series_std"][1] == tsio.MIN_STD  # a constant series: std floored, not 0
  assert rec["prompt"] == "P\n<ts> a, mean 1.5000, std 1.1180\n<ts> b, mean 1.0000, std 0.0000\nQ"
  assert (
    rec["answer"] == "Because. Answer: walking" and tsio.target("x Answer: y", "y") == "x Answer: y"
  )
  assert [s.tolist() for s in tsio.parse_series_list("[[1, 2], [3]]", "w")] == [[1, 2], [3]]
  with pytest.raises(ValueError, match=r"f:2: time_series: expected a list of lists of numbers"):
    tsio.parse_series_list("[1, 2]", "f:2: time_series")
  with pytest.raises(ValueError, match=r"f:2: time_series\[0\]: expected finite values"):
    tsio.parse_series_list("[[1, nan]]", "f:2: time_series")
  (tmp_path / "x.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ValueError, match=r"x.csv: missing columns \['c'\]; got \['a', 'b'\]"):
    tsio.read_csv(tmp_path / "x.csv", ("a", "c"))


def _original_split_ids(name):
  """{split: [ids]} of the fixture as the original OpenTSLM loaders split it, run with their own
  libraries (Hugging Face `datasets`, scikit-learn on a pandas frame) on the fixture's rows."""
  datasets = pytest.importorskip("datasets")
  model_selection = pytest.importorskip("sklearn.model_selection")
  pd = pytest.importorskip("pandas")
  val_frac = tsio.VAL_FRAC / (1 - tsio.TEST_FRAC)
  if name == "sleep_cot":
    df = pd.DataFrame(_raw_csv("sleep_cot", "dummy_data", "sleep_cot.csv"))
    df["id"] = [f"sleep_cot-{i}" for i in range(len(df))]
    rest, test = model_selection.train_test_split(
      df, test_size=0.1, random_state=42, stratify=df["label"]
    )
    train, val = model_selection.train_test_split(
      rest, test_size=val_frac, random_state=43, stratify=rest["label"]
    )
    return {k: list(v["id"]) for k, v in (("train", train), ("validation", val), ("test", test))}
  if name == "tsqa":
    rows, seeds = (
      [f"tsqa-{i}" for i in range(len(_raw_csv("tsqa", "dummy_data", "TSQA.csv")))],
      (42, 42),
    )
  else:  # M4: frequencies in order, each series file's captioned ids in file order
    rows, seeds = [], (42, 43)
    for freq in m4_captions.FREQUENCIES:
      base = os.path.join(DATA, "m4_captions", "dummy_data", m4_captions.SUBDIRS[0])
      if os.path.exists(os.path.join(base, f"m4_series_{freq}.csv")):
        captioned = {r["id"] for r in _raw_csv(base, f"m4_captions_{freq}.csv")}
        rows += [r["id"] for r in _raw_csv(base, f"m4_series_{freq}.csv") if r["id"] in captioned]
  table = datasets.table.InMemoryTable.from_pydict({"id": rows})
  full = datasets.Dataset(table, fingerprint="fixture")  # a given fingerprint skips hashing
  fp = dict(train_new_fingerprint="train", test_new_fingerprint="test")  # skips hashing the call
  rest, test = full.train_test_split(test_size=0.1, seed=seeds[0], **fp).values()
  train, val = rest.train_test_split(test_size=val_frac, seed=seeds[1], **fp).values()
  return {"train": train["id"], "validation": val["id"], "test": test["id"]}


@pytest.mark.parametrize(
  "name,parse",
  [
    ("tsqa", lambda: tsqa.parse_rows(os.path.join(DATA, "tsqa", "dummy_data", "TSQA.csv"))),
    (
      "sleep_cot",
      lambda: sleep_cot.parse_rows(os.path.join(DATA, "sleep_cot", "dummy_data", "sleep_cot.csv")),
    ),
    ("m4_captions", None),
  ],
)
def test_splits_are_the_originals_rows(name, parse):
  """The builders' drawn splits hold the rows (in the order) that the original loaders' own
  `train_test_split` calls give on the same fixture; a one-seed change already moves rows."""
  if parse is None:
    base = os.path.join(DATA, "m4_captions", "dummy_data", m4_captions.SUBDIRS[0])
    rows = sum(
      (
        m4_captions.parse_frequency(
          os.path.join(base, f"m4_series_{f}.csv"), os.path.join(base, f"m4_captions_{f}.csv"), f
        )
        for f in m4_captions.FREQUENCIES
        if os.path.exists(os.path.join(base, f"m4_series_{f}.csv"))
      ),
      [],
    )
    kind, field = "hf_m4", None
  else:
    rows = parse()
    kind, field = ("sklearn", "label") if name == "sleep_cot" else ("hf", None)
  ours = {k: [key for key, _ in v] for k, v in tsio.original_splits(rows, kind, field).items()}
  assert ours == _original_split_ids(name)
  other = {"hf": "hf_m4", "hf_m4": "hf", "sklearn": "sklearn"}[kind]
  if kind != "sklearn":  # the baseline: the other seed pair gives other rows
    moved = {k: [key for key, _ in v] for k, v in tsio.original_splits(rows, other).items()}
    assert moved != ours
