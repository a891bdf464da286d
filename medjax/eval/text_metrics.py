"""Metrics of generated text against references, all in [0, 1].

VQA (VQA-RAD / SLAKE style): closed questions (yes/no or listed options) score the option the
prediction names; open questions score normalised exact match (lower case, no punctuation or
articles, single spaces, as in SQuAD). Reports: corpus BLEU from `sacrebleu` (its 13a tokenizer,
score / 100) and mean ROUGE-L F-measure from `rouge-score` (max over references per hypothesis).
"""

import re
import string
from typing import Sequence

YES_NO = ("yes", "no")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(string.punctuation, " " * len(string.punctuation))


def normalize_answer(text: str) -> str:
  """Lower case, punctuation -> spaces, articles dropped, whitespace collapsed."""
  return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def match_option(prediction: str, options: Sequence[str] = YES_NO) -> str | None:
  """The (normalised) option a prediction names: the whole answer, else its leading words; None if none."""
  pred = normalize_answer(prediction)
  opts = sorted({normalize_answer(o) for o in options}, key=len, reverse=True)  # longest first
  for o in opts:
    if pred == o or pred.startswith(o + " "):
      return o
  return None


def _check_pairs(predictions, references, names=("predictions", "references")):
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError(f"{names[0]}/{names[1]}: expected sequences of strings, got a single string")
  if len(predictions) != len(references):
    raise ValueError(
      f"{names[1]}: expected one per item of {names[0]} ({len(predictions)}), got {len(references)}"
    )
  if not predictions:
    raise ValueError(f"{names[0]}: expected at least one, got none")


def vqa_accuracy(
  predictions: Sequence[str],
  answers: Sequence[str],
  closed: Sequence[bool],
  options: Sequence[str] | Sequence[Sequence[str]] | None = None,
) -> dict:
  """-> {"accuracy", "closed_accuracy", "open_accuracy"} (a split's key only when it has questions).

  `closed[i]` marks a closed question; `options` are its choices (default yes/no), one tuple for all
  questions or one per question. A closed answer counts when `match_option` gives the answer's option.
  """
  _check_pairs(predictions, answers, ("predictions", "answers"))
  if len(closed) != len(answers):
    raise ValueError(f"closed: expected one flag per answer ({len(answers)}), got {len(closed)}")
  if options is None or isinstance(options[0], str):
    options = [tuple(options or YES_NO)] * len(answers)
  elif len(options) != len(answers):
    raise ValueError(
      f"options: expected one tuple for all questions or one per question ({len(answers)}), "
      f"got {len(options)}"
    )
  hits = {True: [], False: []}
  for pred, ans, is_closed, opts in zip(predictions, answers, closed, options):
    if is_closed:
      if normalize_answer(ans) not in {normalize_answer(o) for o in opts}:
        raise ValueError(f"answers: closed answer {ans!r} is not one of its options {list(opts)}")
      hits[True].append(match_option(pred, opts) == normalize_answer(ans))
    else:
      hits[False].append(normalize_answer(pred) == normalize_answer(ans))
  out = {"accuracy": sum(hits[True] + hits[False]) / len(answers)}
  for name, flag in (("closed", True), ("open", False)):
    if hits[flag]:
      out[f"{name}_accuracy"] = sum(hits[flag]) / len(hits[flag])
  return out


def _reference_lists(references) -> list[list[str]]:
  """One reference string or a list of them per hypothesis -> lists (all of one length, for sacrebleu)."""
  refs = [[r] if isinstance(r, str) else list(r) for r in references]
  if len({len(r) for r in refs}) != 1 or not refs[0]:
    raise ValueError(
      f"references: expected the same (non-zero) number of references per hypothesis, got counts "
      f"{sorted({len(r) for r in refs})}"
    )
  return refs


def bleu(
  hypotheses: Sequence[str], references, max_order: int = 4, lowercase: bool = False
) -> float:
  """Corpus BLEU-`max_order` (sacrebleu, 13a tokenizer) / 100. `references`: a string or a list per hypothesis."""
  from sacrebleu.metrics import BLEU

  _check_pairs(hypotheses, references, ("hypotheses", "references"))
  refs = _reference_lists(references)
  streams = [list(s) for s in zip(*refs)]
  return (
    BLEU(max_ngram_order=max_order, lowercase=lowercase)
    .corpus_score(list(hypotheses), streams)
    .score
    / 100
  )


def rouge_l(hypotheses: Sequence[str], references, use_stemmer: bool = False) -> float:
  """Mean ROUGE-L F-measure (rouge-score; the best reference per hypothesis)."""
  from rouge_score import rouge_scorer

  _check_pairs(hypotheses, references, ("hypotheses", "references"))
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
  refs = _reference_lists(references)
  return sum(scorer.score_multi(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, refs)) / len(
    refs
  )


def report_metrics(hypotheses: Sequence[str], references) -> dict:
  """Report-generation metrics: {"bleu1", "bleu4", "rouge_l"}."""
  return {
    "bleu1": bleu(hypotheses, references, 1),
    "bleu4": bleu(hypotheses, references, 4),
    "rouge_l": rouge_l(hypotheses, references),
  }
