"""Synthetic vital-signs triage: a tiny multiple-choice clinical task with chain of thought.

Each patient has four vital signs (HR, SBP, SpO2, T), each drawn either from a normal range or
from an abnormal range separated from it by a clear gap. The number of abnormal signs gives the
triage level (0 routine, 1 urgent, 2 emergent, 3-4 critical). The four levels are listed as options
A-D in a per-example shuffled order, so the answer letter carries no information on its own.

A formatted example (prompt + target) is about 120 bytes, so a byte-level LM can learn it on CPU.
"""

import numpy as np

NUM_OPTIONS = 4
LETTERS = "ABCD"
LEVELS = ("routine", "urgent", "emergent", "critical")

# name -> (normal range, abnormal ranges with their label, decimals). Ranges are inclusive; the
# gaps between normal and abnormal ranges make every judgement unambiguous.
VITALS = {
  "HR": ((60, 99), (((30, 48), "lo"), ((115, 170), "hi")), 0),
  "SBP": ((100, 150), (((60, 89), "lo"), ((180, 220), "hi")), 0),
  "SpO2": ((95, 100), (((78, 91), "lo"),), 0),
  "T": ((36.2, 37.8), (((33.0, 35.0), "lo"), ((38.5, 40.9), "hi")), 1),
}


def _level(num_abnormal: int) -> int:
  return min(num_abnormal, len(LEVELS) - 1)


def _sample_value(rng: np.random.Generator, lo: float, hi: float, decimals: int) -> str:
  if decimals == 0:
    return str(int(rng.integers(lo, hi + 1)))
  scale = 10**decimals
  return f"{rng.integers(round(lo * scale), round(hi * scale) + 1) / scale:.{decimals}f}"


def make_example(rng: np.random.Generator) -> dict:
  """One example: dict with question, options (4 str), answer_idx ('A'-'D'), cot, answer."""
  level = int(rng.integers(len(LEVELS)))
  num_abnormal = level if level < len(LEVELS) - 1 else int(rng.integers(level, len(VITALS) + 1))
  abnormal = set(rng.choice(list(VITALS), size=num_abnormal, replace=False).tolist())
  values, judgements = [], []
  for name, (normal, abnormal_ranges, decimals) in VITALS.items():
    if name in abnormal:
      (lo, hi), label = abnormal_ranges[int(rng.integers(len(abnormal_ranges)))]
    else:
      (lo, hi), label = normal, "ok"
    values.append(f"{name} {_sample_value(rng, lo, hi, decimals)}")
    judgements.append(f"{name} {label}")
  options = [LEVELS[i] for i in rng.permutation(len(LEVELS))]
  answer = LEVELS[_level(num_abnormal)]
  cot = f"{' '.join(judgements)}; {num_abnormal} abnormal: {answer}."
  return {
    "question": " ".join(values),
    "options": options,
    "answer_idx": LETTERS[options.index(answer)],
    "cot": cot,
    "answer": answer,
  }


def make_examples(n: int, seed: int) -> list[dict]:
  """`n` examples, a deterministic function of (n, seed); a prefix of a longer list."""
  rng = np.random.default_rng(seed)
  return [make_example(rng) for _ in range(n)]


def _question_block(ex: dict) -> str:
  lines = [ex["question"]] + [f"{LETTERS[i]} {opt}" for i, opt in enumerate(ex["options"])]
  return "\n".join(lines)


def format_prompt(ex: dict, cot: bool = True) -> str:
  """Question and lettered options; ends with 'Reasoning:' (cot) or a newline (direct answer)."""
  return _question_block(ex) + ("\nReasoning:" if cot else "\n")


def format_target(ex: dict, cot: bool = True) -> str:
  """' <cot> Answer: X' with chain of thought, else 'Answer: X'."""
  return f" {ex['cot']} Answer: {ex['answer_idx']}" if cot else f"Answer: {ex['answer_idx']}"


def format_refinement_prompt(ex: dict, candidates: list[str]) -> str:
  """Prompt listing candidate explanations, then the question, asking for a refined explanation.

  The question and options come last, as in `format_prompt`, so the answer letter is looked up over the
  same short distance as in a chain of thought rather than across every candidate.
  """
  lines = ["Candidates:"] + [f"{i + 1}. {c.strip()}" for i, c in enumerate(candidates)]
  return "\n".join(lines + [_question_block(ex)]) + "\nRefined reasoning:"
