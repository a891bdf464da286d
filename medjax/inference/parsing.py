"""The one answer parser: every generation that is scored (training-time eval of triage, OpenTSLM
and ECG-QA, and `experiments/evaluate_mcq.py`) is read here, so one output is scored one way.

Both kinds of answer follow the last 'Answer:' (case-insensitive, full-width colon allowed):
- `parse_answer`: a multiple-choice option letter (brackets allowed, any case), or with `options`
  the text of an option ('Answer: yes'); when what follows is a sentence, and without 'Answer:', the
  letter of a statement ('the correct option is C', 'the answer is (b).', the last one wins), of a
  leading 'C) ...' / '(C) ...', of 'Option C', or a bare letter ('B', '(B).').
- `answer_text`: a free-text label (OpenTSLM, ECG-QA): the rest of that line, lowercased, without
  EOS markers or a trailing period; a python list of answers is joined with ', ' (`answer_label`,
  which also reads the dataset's own answer field).
"""

import ast
import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJ"

_ANCHOR = re.compile(r"answer\s*[:：]", re.IGNORECASE)
_LETTER = re.compile(r"\s*[\(\[\*\"']*\s*([A-Za-z])(?![A-Za-z])")
# A letter after a statement or a mention: bracketed of either case, a bare capital (so 'is a fever'
# is no 'A'), or a bare lower-case one that ends its sentence ('the answer is c.').
_CHOICE = r"\s*:?\s*(?:[\(\[]([A-Za-z])[\)\]]|[\*\"']*([A-Z])(?![A-Za-z])|([a-z])(?=[\*\"']*[.)]?\s*(?:$|\n)))"
_NOUN = r"(?:answer|option|choice)"
# 'the answer is C', 'the correct option is (C)', 'the best choice would be c.'
_STATEMENT = re.compile(rf"(?i:{_NOUN}\s+(?:is|would\s+be|will\s+be))" + _CHOICE)
# 'Option C', 'choice (b)': a mention, weaker than a statement or a leading letter
_MENTION = re.compile(r"(?i:\b(?:option|choice))" + _CHOICE)
# 'C) Radial nerve', '(C) Radial nerve', 'C. Radial nerve' at the start
_LEADING = re.compile(r"^\s*(?:[\(\[]([A-Za-z])[\)\]]|([A-Za-z])\)|([A-Z])[.:])(?:\s|$)")
_BARE = re.compile(r"^\s*[\(\[\*\"']*\s*([A-Za-z])\s*[\)\]\*\"']*\s*[.:]?\s*$")


def letters(num_options: int) -> str:
  """The first `num_options` option letters."""
  if not 1 <= num_options <= len(LETTERS):
    raise ValueError(f"num_options: expected 1..{len(LETTERS)}, got {num_options}")
  return LETTERS[:num_options]


EOS_MARKERS = ("<|end_of_text|>", "<|eot_id|>", "<eos>", "</s>")


def _norm(s: str) -> str:
  return re.sub(r"[\s.]+", " ", s).strip().lower()


def _found(m) -> str:
  return next(g for g in m.groups() if g).upper()


def _from_sentence(text: str, valid: str) -> str | None:
  """The letter a free-text answer names: its last statement, else a leading letter, else its last
  mention, else a bare letter; None when that letter is not one of `valid`."""
  for found in (
    [_found(m) for m in _STATEMENT.finditer(text)][-1:],
    [_found(m) for m in [_LEADING.match(text)] if m],
    [_found(m) for m in _MENTION.finditer(text)][-1:],
    [m.group(1).upper() for m in [_BARE.match(text)] if m],
  ):
    if found:
      return found[0] if found[0] in valid else None
  return None


def parse_answer(
  text: str, num_options: int = 4, options: Sequence[str] | None = None
) -> str | None:
  """The answered option letter in `text` (one of the first `num_options`), or None if unparseable."""
  valid = letters(num_options)
  anchors = list(_ANCHOR.finditer(text))
  if not anchors:
    return _from_sentence(text, valid)
  end = anchors[-1].end()
  m = _LETTER.match(text, end)
  if m is not None and m.group(1).upper() in valid:
    return m.group(1).upper()
  if options:  # 'Answer: yes' -> the letter of option 'yes'
    tail = _norm(text[end:].split("\n")[0])
    for i, opt in enumerate(options[:num_options]):
      if tail and _norm(opt) and tail == _norm(opt):
        return valid[i]
  return _from_sentence(text[end:], valid)


def rationale(text: str) -> str:
  """The explanation before the last 'Answer:' of a chain-of-thought generation (all of it without one)."""
  anchors = list(_ANCHOR.finditer(text))
  return (text[: anchors[-1].start()] if anchors else text).strip()


def letter_index(letter: str | None, num_options: int) -> int | None:
  """0-based index of an option letter (None passes through); raises on a letter out of range."""
  if letter is None:
    return None
  valid = letters(num_options)
  if letter not in valid:
    raise ValueError(f"letter: expected one of {valid!r}, got {letter!r}")
  return valid.index(letter)


def answer_label(text: str) -> str:
  """A free-text answer, stripped; a python list of answers (ECG-QA's own format) joined with ', '."""
  text = text.strip()
  if text.startswith("["):
    try:
      return ", ".join(str(a).strip() for a in ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError):
      pass
  return text


def answer_text(text: str) -> str:
  """The free-text answer after the last 'Answer:' (its line), lowercased; '' without 'Answer:'."""
  anchors = list(_ANCHOR.finditer(text))
  if not anchors:
    return ""
  ans = text[anchors[-1].end() :].split("\n")[0]
  for eos in EOS_MARKERS:
    ans = ans.replace(eos, "")
  return answer_label(ans.strip().rstrip(".")).lower()
