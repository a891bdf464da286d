"""Text metrics on known values: the libraries' documented examples and hand-computed cases."""

import math

import jax
import pytest

from medjax import config_lib
from medjax.eval import bleu, match_option, normalize_answer, report_metrics, rouge_l, vqa_accuracy

pytest.importorskip("sacrebleu", reason="BLEU is computed by sacrebleu")
pytest.importorskip("rouge_score", reason="ROUGE-L is computed by rouge-score")

# sacrebleu's README example: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)"
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = [
  ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
  ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]
PER_HYP = [list(r) for r in zip(*REFS)]  # medjax takes the references per hypothesis


def test_bleu_matches_the_documented_example():
  assert bleu(SYS, PER_HYP) == pytest.approx(0.4853, abs=5e-5)
  # BLEU-1 by hand: 14 of 17 unigrams match; brevity penalty exp(1 - 18 / 17).
  assert bleu(SYS, PER_HYP, max_order=1) == pytest.approx(14 / 17 * math.exp(1 - 18 / 17))
  assert bleu(["the heart is normal ."], ["the heart is normal ."]) == pytest.approx(1.0)


def test_rouge_l_by_hand():
  # rouge-score's README pair: LCS "the quick brown jumps the" = 5 of 9 (target) and 8 (prediction) tokens.
  f = rouge_l(
    ["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"]
  )
  p, r = 5 / 8, 5 / 9
  assert f == pytest.approx(2 * p * r / (p + r))
  # The best of several references counts; the mean runs over hypotheses.
  assert rouge_l(["a b c", "x y"], [["a b c", "q"], ["x z", "y"]]) == pytest.approx(
    (1.0 + 2 / 3) / 2
  )


def test_report_metrics_rank_a_better_report_higher():
  ref = ["opacity in the left upper zone. heart enlarged. no effusion."]
  good = report_metrics(["opacity in the left lower zone. heart enlarged. no effusion."], ref)
  bad = report_metrics(["lungs clear. heart normal. right effusion."], ref)
  assert set(good) == {"bleu1", "bleu4", "rouge_l"}
  assert all(good[k] > bad[k] for k in good) and good["rouge_l"] == pytest.approx(
    0.9
  )  # 9 of 10 words in order


def test_normalisation_and_options():
  assert normalize_answer("  The LEFT  lung!") == "left lung"
  assert match_option("Yes, there is.") == "yes" and match_option("No.") == "no"
  assert match_option("maybe") is None and match_option("yesterday") is None
  assert (
    match_option("upper lobe", ("upper", "upper lobe")) == "upper lobe"
  )  # the longest option wins


def test_vqa_accuracy_splits_closed_and_open():
  preds = ["Yes.", "no, there is not", "maybe", "The left.", "right lower"]
  answers = ["yes", "no", "yes", "left", "right"]
  closed = [True, True, True, False, False]
  out = vqa_accuracy(preds, answers, closed)
  assert out == pytest.approx({"accuracy": 3 / 5, "closed_accuracy": 2 / 3, "open_accuracy": 1 / 2})
  assert set(vqa_accuracy(["no"], ["no"], [True])) == {"accuracy", "closed_accuracy"}
  per_question = vqa_accuracy(
    ["CT", "mri scan"], ["ct", "mri"], [True, True], [("ct", "mri"), ("ct", "mri")]
  )
  assert per_question["closed_accuracy"] == 1.0


@pytest.mark.parametrize(
  "call,match",
  [
    (
      lambda: vqa_accuracy(["yes"], ["yes", "no"], [True, True]),
      r"answers: expected one per item of predictions \(1\), got 2",
    ),
    (lambda: vqa_accuracy(["yes"], ["yes"], [True, False]), "closed: expected one flag per answer"),
    (
      lambda: vqa_accuracy(["yes"], ["left"], [True]),
      "closed answer 'left' is not one of its options",
    ),
    (lambda: bleu(["a"], ["a", "b"]), "references: expected one per item of hypotheses"),
    (lambda: bleu(["a", "b"], [["a", "b"], ["c"]]), "same .non-zero. number of references"),
    (lambda: rouge_l("a b", ["a b"]), "expected sequences of strings"),
  ],
)
def test_bad_input_names_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ---------------------------------------------------------------------------------------------
# Wiring: greedy generation and generation metrics of the Med-Gemini VQA task
# ---------------------------------------------------------------------------------------------
def _medgemini_task(variant, **data):

  from medjax.tasks import get_task

  config = config_lib.load_module("configs/medgemini.py").get_config(variant)
  with config.unlocked():
    config.data.update(data)
  return get_task(config)


def test_greedy_decoding_agrees_with_teacher_forcing():
  """Every generated token is the argmax of the model run teacher-forced on the generated text."""
  import flax.linen as nn
  import numpy as np

  from medjax.inference.decode import greedy_decode

  task = _medgemini_task("tiny", test_size=4, eval_size=4, train_size=64)
  model = task.build_model()
  dummy = task.dummy_batch(2)
  params = nn.meta.unbox(
    jax.jit(lambda r: task.init_params(model, r, dummy))(jax.random.PRNGKey(3))
  )
  val = task.source("validation")
  batch = [task.encode(val[i]) for i in range(4)]
  arrays = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
  lengths = arrays["prefix_mask"].sum(1).astype(np.int32)
  pos = np.arange(arrays["tokens"].shape[1])
  arrays["tokens"] = np.where(pos < lengths[:, None], arrays["tokens"], 0)
  inputs = {
    k: v for k, v in task.model_inputs(arrays).items() if k not in ("input_mask", "prefix_mask")
  }
  vocab = task.tokenizer.vocab_size
  tokens, end = greedy_decode(
    model, params, inputs, lengths, max_new_tokens=5, eos_id=-1, vocab_size=vocab
  )
  tokens, end = np.asarray(tokens), np.asarray(end)
  assert (end == lengths + 5).all() and (
    tokens[:, : lengths.min()] == arrays["tokens"][:, : lengths.min()]
  ).all()
  logits = jax.jit(lambda p, kw: model.apply({"params": p}, **kw))(
    params,
    dict(inputs, tokens=tokens, input_mask=pos < end[:, None], prefix_mask=pos < lengths[:, None]),
  )
  pred = np.argmax(np.asarray(logits)[..., :vocab], -1)
  for row in range(4):
    span = np.arange(lengths[row], end[row])
    assert (tokens[row, span] == pred[row, span - 1]).all()
  out = task.evaluate(model, params)
  assert {"generated_accuracy", "majority_baseline"} <= set(out) and 0 <= out[
    "generated_accuracy"
  ] <= 1
