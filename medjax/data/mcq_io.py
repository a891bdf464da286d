"""The common multiple-choice schema of the MCQ builders (data/medqa, medmcqa, pubmedqa, mmlu_clinical).

A record: {id, question, options (a list), answer_idx (a letter), answer (the option's text), context,
explanation, subject}; `experiments/evaluate_mcq.py` reads every MCQ builder through it.
"""

import tensorflow_datasets as tfds

FIELDS = ("id", "question", "answer_idx", "answer", "context", "explanation", "subject")


def mcq_features() -> tfds.features.FeaturesDict:
  """The common MCQ schema as TFDS features (options a sequence of texts, answer_idx a letter)."""
  text = tfds.features.Text
  return tfds.features.FeaturesDict(
    {**{k: text() for k in FIELDS}, "options": tfds.features.Sequence(text())}
  )


def mcq_info(builder, description: str, homepage: str) -> tfds.core.DatasetInfo:
  """An MCQ builder's DatasetInfo: the common schema, its module docstring, its homepage."""
  return tfds.core.DatasetInfo(
    builder=builder, description=description, features=mcq_features(), homepage=homepage
  )
