"""Answer parsing for multiple-choice generations: option letters, with a few forgiving fallbacks.

`parse_answer` agrees with `medjax.data.synthetic.triage.parse_answer` on every text that contains
'Answer:' (the letter after the last one, brackets allowed, case-insensitive); without it, it also
accepts 'the answer is (B)', a bare letter ('B', '(B).'), or the text of an option ('Answer: yes').
"""

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJ"

_ANCHOR = re.compile(r"answer\s*[:：]", re.IGNORECASE)
_LETTER = re.compile(r"\s*[\(\[\*\"']*\s*([A-Za-z])(?![A-Za-z])")
# After 'answer is': a bracketed letter of either case, or a bare capital (so 'is a fever' is no 'A').
_ANSWER_IS = re.compile(
  r"(?i:answer\s+is)\s*:?\s*(?:[\(\[]([A-Za-z])[\)\]]|[\*\"']*([A-Z])(?![A-Za-z]))"
)
_BARE = re.compile(r"^\s*[\(\[\*\"']*\s*([A-Za-z])\s*[\)\]\*\"']*\s*[.:]?\s*$")


def letters(num_options: int) -> str:
  """The first `num_options` option letters."""
  if not 1 <= num_options <= len(LETTERS):
    raise ValueError(f"num_options: expected 1..{len(LETTERS)}, got {num_options}")
  return LETTERS[:num_options]


def _norm(s: str) -> str:
  return re.sub(r"[\s.]+", " ", s).strip().lower()


def parse_answer(
  text: str, num_options: int = 4, options: Sequence[str] | None = None
) -> str | None:
  """The answered option letter in `text` (one of the first `num_options`), or None if unparseable."""
  valid = letters(num_options)
  anchors = list(_ANCHOR.finditer(text))
  if anchors:
    end = anchors[-1].end()
    m = _LETTER.match(text, end)
    if m is not None and m.group(1).upper() in valid:
      return m.group(1).upper()
    if options:  # 'Answer: yes' -> the letter of option 'yes'
      tail = _norm(text[end:].split("\n")[0])
      for i, opt in enumerate(options[:num_options]):
        if tail and _norm(opt) and tail == _norm(opt):
          return valid[i]
    return None
  found = [(m.group(1) or m.group(2)).upper() for m in _ANSWER_IS.finditer(text)]
  if found:
    return found[-1] if found[-1] in valid else None
  m = _BARE.match(text)
  if m is not None and m.group(1).upper() in valid:
    return m.group(1).upper()
  return None


def letter_index(letter: str | None, num_options: int) -> int | None:
  """0-based index of an option letter (None passes through); raises on a letter out of range."""
  if letter is None:
    return None
  valid = letters(num_options)
  if letter not in valid:
    raise ValueError(f"letter: expected one of {valid!r}, got {letter!r}")
  return valid.index(letter)
