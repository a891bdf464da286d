"""Tests for medjax.data: tokenizers, the synthetic triage task, its TFDS builder, grain pipelines."""

import collections
import json

import numpy as np
import pytest
import tokenizers as hf_tokenizers

from medjax.data import pipeline, tokenizers
from medjax.data.synthetic import tfds_builder, triage
from medjax.inference import parsing

SMALL = tfds_builder.TriageConfig(name="test_small", num_train=64, num_validation=16, num_test=16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  tfds_builder.get_builder(d, SMALL)
  return d


@pytest.fixture(scope="module")
def train_source(data_dir):
  return tfds_builder.load_source("train", data_dir, SMALL)


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------
def test_byte_tokenizer_round_trip():
  tok = tokenizers.ByteTokenizer()
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
  text = "SpO2 91% — fièvre 39.5°C"
  ids = tok.encode(text, add_bos=True, add_eos=True)
  assert ids[0] == 1 and ids[-1] == 2 and ids[1] == ord("S") + 3
  assert max(ids) < tok.vocab_size
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode("ab") + [2] + tok.encode("cd")) == "ab"  # stops at eos
  assert tok.decode(tok.encode("a") + [259, 260] + tok.encode("b")) == "ab"  # a model's own ids
  assert tok.decode([0, 1] + tok.encode("x") + [0]) == "x"
  assert tok.decode([0xC3 + 3]) == "\ufffd"  # truncated utf-8 is replaced, not raised


def _write_hf_dir(path, *, style):
  """A tiny WordLevel tokenizer dir in Llama-3 or Gemma style (post-processor adds bos)."""
  if style == "llama3":
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
  else:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    config = {"bos_token": {"content": "<bos>"}, "eos_token": "<eos>", "pad_token": "<pad>"}
  words = ["hr", "high", "low", "ok", "answer", ":", "a", "b"]
  vocab = {
    t: i for i, t in enumerate(specials + words + (["<unk>"] if "<unk>" not in specials else []))
  }
  tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.Whitespace()
  tok.decoder = hf_tokenizers.decoders.WordPiece()
  tok.add_special_tokens(specials)
  bos = config["bos_token"] if style == "llama3" else "<bos>"
  tok.post_processor = hf_tokenizers.processors.TemplateProcessing(
    single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
  )
  path.mkdir()
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  return vocab


@pytest.mark.parametrize("style", ["llama3", "gemma"])
def test_hf_tokenizer_round_trip(tmp_path, style):
  vocab = _write_hf_dir(tmp_path / style, style=style)
  tok = tokenizers.load_tokenizer(str(tmp_path / style))
  assert isinstance(tok, tokenizers.HFTokenizer)
  if style == "llama3":
    assert (tok.bos_id, tok.eos_id) == (vocab["<|begin_of_text|>"], vocab["<|eot_id|>"])
    assert tok.pad_id == tok.eos_id  # no pad token: falls back to eos
  else:
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (vocab["<bos>"], vocab["<eos>"], vocab["<pad>"])
  assert tok.vocab_size == len(vocab)
  ids = tok.encode("hr high answer : b", add_bos=True, add_eos=True)
  assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert tok.encode("hr high") == [vocab["hr"], vocab["high"]]  # post-processor bos not added
  assert tok.decode([tok.pad_id] + ids + tok.encode("low")) == "hr high answer : b"


def test_load_tokenizer_errors(tmp_path):
  assert isinstance(tokenizers.load_tokenizer("byte"), tokenizers.ByteTokenizer)
  with pytest.raises(ValueError, match="nonsense"):
    tokenizers.load_tokenizer("nonsense")
  with pytest.raises(ValueError, match="empty"):
    (tmp_path / "empty").mkdir()
    tokenizers.load_tokenizer(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# Synthetic triage task
# ---------------------------------------------------------------------------------------------
def test_make_examples_deterministic_and_consistent():
  a, b = triage.make_examples(50, seed=3), triage.make_examples(50, seed=3)
  assert a == b
  assert a != triage.make_examples(50, seed=4)
  assert triage.make_examples(10, seed=3) == a[:10]
  for ex in a:
    assert sorted(ex["options"]) == sorted(triage.LEVELS)
    assert ex["options"]["ABCD".index(ex["answer_idx"])] == ex["answer"]
    n_abnormal = sum(j in ("lo", "hi") for j in ex["cot"].split(";")[0].split()[1::2])
    assert ex["cot"].endswith(f"{n_abnormal} abnormal: {ex['answer']}.")
    assert triage.LEVELS.index(ex["answer"]) == min(n_abnormal, 3)
    assert parsing.parse_answer(triage.format_target(ex)) == ex["answer_idx"]
    assert parsing.parse_answer(triage.format_target(ex, cot=False)) == ex["answer_idx"]


def test_answers_roughly_uniform():
  exs = triage.make_examples(4000, seed=0)
  letters = collections.Counter(ex["answer_idx"] for ex in exs)
  levels = collections.Counter(ex["answer"] for ex in exs)
  assert set(letters) == set("ABCD") and set(levels) == set(triage.LEVELS)
  assert all(abs(c / len(exs) - 0.25) < 0.04 for c in [*letters.values(), *levels.values()])
  assert triage.NUM_OPTIONS == 4


def test_formatted_examples_fit_160_bytes():
  for ex in triage.make_examples(2000, seed=1):
    text = triage.format_prompt(ex) + triage.format_target(ex)
    assert len(text.encode()) + 2 <= 160, text  # + bos + eos
    assert text.count("Answer:") == 1
    assert triage.format_prompt(ex).endswith("Reasoning:")


def test_refinement_prompt():
  ex = triage.make_examples(1, seed=0)[0]
  prompt = triage.format_refinement_prompt(ex, ["HR ok. Answer: A", "HR hi. Answer: B"])
  assert ex["question"] in prompt and "1. HR ok. Answer: A" in prompt and "2. HR hi" in prompt
  assert prompt.endswith("Refined reasoning:")
  assert prompt.index("2. HR hi") < prompt.index(ex["question"])  # options sit next to the answer


# ---------------------------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------------------------
def test_tfds_builder_splits(data_dir, train_source):
  sources = {s: tfds_builder.load_source(s, data_dir, SMALL) for s in ("validation", "test")}
  assert len(train_source) == 64 and len(sources["validation"]) == 16 and len(sources["test"]) == 16
  ex = pipeline.record_to_example(train_source[0])
  assert isinstance(ex["question"], str) and isinstance(ex["options"], list)
  assert all(isinstance(o, str) for o in ex["options"]) and len(ex["options"]) == 4
  assert ex["options"]["ABCD".index(ex["answer_idx"])] == ex["answer"]
  held_out = triage.make_examples(16, tfds_builder.SPLIT_SEEDS["test"])
  test_questions = {pipeline.record_to_example(sources["test"][i])["question"] for i in range(16)}
  assert test_questions == {e["question"] for e in held_out}
  train_questions = {pipeline.record_to_example(train_source[i])["question"] for i in range(64)}
  assert not train_questions & test_questions
  with pytest.raises(ValueError, match="split"):
    tfds_builder.load_source("dev", data_dir, SMALL)


def test_record_to_example_handles_numpy():
  rec = {
    "question": np.bytes_(b"q"),
    "options": np.array([b"a", b"b"], dtype=object),
    "answer_idx": np.array(b"A", dtype=object),
    "n": np.int64(3),
  }
  assert pipeline.record_to_example(rec) == {
    "question": "q",
    "options": ["a", "b"],
    "answer_idx": "A",
    "n": 3,
  }


# ---------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------
def test_encode_lm_example_masks():
  tok = tokenizers.ByteTokenizer()
  out = pipeline.encode_lm_example("Q?", " ok", tok, seq_len=10)
  # full sequence: bos Q ? _ o k eos  (7 tokens) -> 6 inputs
  full = [1] + tok.encode("Q? ok") + [2]
  np.testing.assert_array_equal(out["tokens"], full[:-1] + [0] * 4)
  np.testing.assert_array_equal(out["targets"], full[1:] + [0] * 4)
  np.testing.assert_array_equal(out["loss_mask"], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(out["input_mask"], [1] * 6 + [0] * 4)
  assert {k: v.dtype for k, v in out.items()} == {
    "tokens": np.int32,
    "targets": np.int32,
    "loss_mask": np.float32,
    "input_mask": np.int32,
  }
  assert tok.decode(out["targets"][out["loss_mask"] > 0]) == " ok"
  pipeline.encode_lm_example("Q?", " ok", tok, seq_len=6)  # exactly fits
  with pytest.raises(ValueError, match=r"seq_len >= 6.*seq_len=5"):
    pipeline.encode_lm_example("Q?", " ok", tok, seq_len=5)


def _dataset(source, seq_len=160, **kw):
  encode = pipeline.lm_encoder(pipeline.triage_format, tokenizers.ByteTokenizer(), seq_len)
  return pipeline.dataset(source, encode, **{"batch_size": 4, "seed": 0, **kw})


def test_lm_pipeline_batches(train_source):
  batch = next(iter(_dataset(train_source)))
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
    "tokens": ((4, 160), np.int32),
    "targets": ((4, 160), np.int32),
    "loss_mask": ((4, 160), np.float32),
    "input_mask": ((4, 160), np.int32),
  }
  tok = tokenizers.ByteTokenizer()
  for row in range(4):
    target_text = tok.decode(batch["targets"][row][batch["loss_mask"][row] > 0])
    assert target_text.startswith(" HR ") and parsing.parse_answer(target_text) is not None
    first = int(np.argmax(batch["loss_mask"][row]))  # input position of the prompt's end
    assert not batch["loss_mask"][row][:first].any()
    prompt_text = tok.decode(batch["tokens"][row][: first + 1])
    assert prompt_text.endswith("Reasoning:")
    last = batch["input_mask"][row].sum() - 1
    assert batch["targets"][row][last] == tok.eos_id and batch["loss_mask"][row][last] == 1
    assert not batch["loss_mask"][row][last + 1 :].any()


def test_lm_pipeline_epochs_and_shards(train_source):
  one_epoch = list(_dataset(train_source, num_epochs=1, batch_size=8))
  assert len(one_epoch) == 8
  rows = {r.tobytes() for b in one_epoch for r in b["tokens"]}
  assert len(rows) == 64  # each example once
  two = list(_dataset(train_source, num_epochs=2, batch_size=64))
  assert len(two) == 2 and not np.array_equal(two[0]["tokens"], two[1]["tokens"])  # reshuffled
  assert {r.tobytes() for r in two[1]["tokens"]} == rows
  shards = [
    {
      r.tobytes()
      for b in _dataset(train_source, num_epochs=1, batch_size=8, shard_index=i, shard_count=2)
      for r in b["tokens"]
    }
    for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 32 and not shards[0] & shards[1]
  assert shards[0] | shards[1] == rows


def test_lm_pipeline_iterator_resume(train_source):
  it = iter(_dataset(train_source))
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = iter(_dataset(train_source))
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize(
  "kw,match",
  [
    (dict(batch_size=0), "batch_size"),
    (dict(seq_len=-1), "seq_len"),
    (dict(shard_index=2, shard_count=2), "shard_index"),
    (dict(num_epochs=0), "num_epochs"),
    (dict(batch_size=100, num_epochs=1), "batch_size: 100 x 1 host"),
  ],
)
def test_lm_pipeline_validation(train_source, kw, match):
  with pytest.raises(ValueError, match=match):
    _dataset(train_source, **kw)


def test_lm_pipeline_too_long_example(train_source):
  with pytest.raises(ValueError, match="seq_len=32"):
    next(iter(_dataset(train_source, seq_len=32)))
