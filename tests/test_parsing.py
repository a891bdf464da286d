"""The one answer parser (medjax.inference.parsing): every format each caller accepts, in one table.

Callers: training-time eval of the triage LM (`LMTask.evaluate`) and `evaluate_mcq` (option letters),
OpenTSLM / ECG-QA eval (free-text labels) and the ECG-QA builder (its answer field).
"""

import numpy as np
import pytest

from medjax.data.synthetic import triage
from medjax.inference import parsing
from medjax.tasks.lm import wrong_explanation

# (text, num_options, options, expected letter)
LETTER_TABLE = [
  # after the last 'Answer:' (triage targets, evaluate_mcq): brackets, case, markdown, newlines
  ("Answer: B", 4, None, "B"),
  ("Answer: (B)", 4, None, "B"),
  ("answer: b.", 4, None, "B"),
  ("ANSWER:d", 4, None, "D"),
  ("Answer: **C**", 4, None, "C"),
  ("x. Answer: A then Answer: [C]", 4, None, "C"),
  ("Answer: A\n", 4, None, "A"),
  ("Answer: (c)", 4, None, "C"),
  ("answer:[B] because", 4, None, "B"),
  ("x Answer: A y Answer: D", 4, None, "D"),
  ("Answer：B", 4, None, "B"),
  ("Answer: E", 4, None, None),
  ("Answer: E", 5, None, "E"),
  ("Answer: Banana", 4, None, None),
  ("Answer: maybe", 4, None, None),
  ("Answer:", 4, None, None),
  ("Answer: C ... Answer: none", 4, None, None),
  ("no answer here", 4, None, None),
  ("", 4, None, None),
  # the text of an option after 'Answer:' (PubMedQA-style yes/no/maybe)
  ("Answer: Maybe.", 3, ["yes", "no", "maybe"], "C"),
  ("Answer: yes", 3, ["yes", "no", "maybe"], "A"),
  ("Answer: perhaps", 3, ["yes", "no", "maybe"], None),
  # without 'Answer:': 'the answer is', a bare letter
  ("Thus the answer is (b).", 4, None, "B"),
  ("so the answer is B", 4, None, "B"),
  ("the answer is a fever", 4, None, None),
  ("The answer is E", 4, None, None),
  (" C)", 4, None, "C"),
  ("(B).", 4, None, "B"),
  ("B", 4, None, "B"),
  # common phrasings of instruction-tuned models, after 'Answer:' or alone
  ("Answer: The correct option is C", 4, None, "C"),
  ("Answer: the correct answer is (c), since the nerve...", 4, None, "C"),
  ("Answer: option b", 4, None, "B"),
  ("Answer:\nThe best choice would be D.", 4, None, "D"),
  ("Answer: I think so", 4, None, None),  # 'I' is a pronoun, not option I
  ("(C)", 4, None, "C"),
  ("the answer is C.", 4, None, "C"),
  ("the answer is c.", 4, None, "C"),
  ("The answer is C. Option A is wrong because it is too slow.", 4, None, "C"),
  ("C) Radial nerve, because it winds round the humerus", 4, None, "C"),
  ("(D) Warfarin is the drug of choice here.", 4, None, "D"),
  ("c) radial nerve", 4, None, "C"),
  ("C. Radial nerve", 4, None, "C"),
  ("Option C", 4, None, "C"),
  ("I would pick option (a) here.", 4, None, "A"),
  ("The best choice is E", 4, None, None),
  ("A fever is common.", 4, None, None),  # a sentence's article, not option A
  ("Correct answer: B. The radial nerve winds round the humerus.", 4, None, "B"),
]


@pytest.mark.parametrize("text,num_options,options,expected", LETTER_TABLE)
def test_parse_answer_table(text, num_options, options, expected):
  assert parsing.parse_answer(text, num_options, options) == expected


# (text, expected free-text answer)
TEXT_TABLE = [
  ("Answer: no. Fast oscillation. Answer: Running.", "running"),  # the last one
  ("The wrist moves slowly. Answer: walking<|end_of_text|>", "walking"),
  ("Answer: sitting<eos>", "sitting"),
  ("Answer: Yes </s>", "yes"),
  ("Answer: normal ECG.\nextra line", "normal ecg"),
  ("answer: Lying", "lying"),
  ("Answer: ['lead I', 'lead II']", "lead i, lead ii"),  # ECG-QA's list format
  ("Answer: [unbalanced", "[unbalanced"),
  ("no answer", ""),
  ("", ""),
]


@pytest.mark.parametrize("text,expected", TEXT_TABLE)
def test_answer_text_table(text, expected):
  assert parsing.answer_text(text) == expected


@pytest.mark.parametrize(
  "text,expected",
  [
    ("['lead I', 'lead II']", "lead I, lead II"),
    ("  ['yes']", "yes"),
    ("none", "none"),
    (" myocardial infarction ", "myocardial infarction"),
  ],
)
def test_answer_label_reads_the_dataset_field(text, expected):
  assert parsing.answer_label(text) == expected


def test_triage_targets_and_wrong_explanations_parse_to_their_letters():
  rng = np.random.default_rng(0)
  for ex in triage.make_examples(20, seed=5):
    for cot in (True, False):
      letter = parsing.parse_answer(triage.format_target(ex, cot), 4, ex["options"])
      assert letter == ex["answer_idx"]
    assert parsing.parse_answer(wrong_explanation(ex, rng)) is not None


def test_rationale_is_the_text_before_the_last_answer():
  assert parsing.rationale(" HR hi; 1 abnormal: urgent. Answer: B") == "HR hi; 1 abnormal: urgent."
  assert parsing.rationale("Because x. answer: (C) and Answer: C") == "Because x. answer: (C) and"
  assert parsing.rationale(" no anchor ") == "no anchor"


def test_num_options_is_checked():
  with pytest.raises(ValueError, match="num_options"):
    parsing.parse_answer("Answer: A", num_options=0)
