"""TFDS builder for the synthetic triage task, so it flows through the same pipeline as real data.

Splits are generated from fixed seeds; train examples whose prompt also occurs in validation or
test are skipped, so the held-out splits are truly unseen.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from medjax.data.synthetic import triage

SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class TriageConfig(tfds.core.BuilderConfig):
  """Split sizes. Give each distinct size set its own `name` (it names the data directory)."""

  num_train: int = 20000
  num_validation: int = 500
  num_test: int = 500


DEFAULT_CONFIG = TriageConfig(name="default")


def _ex_key(ex: dict) -> tuple:
  return ex["question"], tuple(ex["options"])


class SyntheticTriage(tfds.core.GeneratorBasedBuilder):
  """Vital-signs triage multiple-choice questions with short chains of thought."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [DEFAULT_CONFIG]
  # TFDS derives this from the package via `importlib_resources` (not installed); set it directly.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "question": tfds.features.Text(),
          "options": tfds.features.Sequence(tfds.features.Text()),
          "answer_idx": tfds.features.Text(),
          "cot": tfds.features.Text(),
          "answer": tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    held_out = {
      s: triage.make_examples(n, SPLIT_SEEDS[s])
      for s, n in (("validation", cfg.num_validation), ("test", cfg.num_test))
    }
    seen = {_ex_key(ex) for exs in held_out.values() for ex in exs}
    return {
      "train": self._generate_examples(self._train_examples(cfg.num_train, seen)),
      **{s: self._generate_examples(exs) for s, exs in held_out.items()},
    }

  @staticmethod
  def _train_examples(n: int, seen: set) -> list[dict]:
    rng = np.random.default_rng(SPLIT_SEEDS["train"])
    out = []
    while len(out) < n:
      ex = triage.make_example(rng)
      if _ex_key(ex) not in seen:
        out.append(ex)
    return out

  def _generate_examples(self, examples):
    for i, ex in enumerate(examples):
      yield i, ex


def get_builder(
  data_dir: str | None = None,
  config: TriageConfig | str | None = None,
) -> SyntheticTriage:
  """The builder, prepared as array_record under `data_dir` (a local or gs:// path) if it was not
  already."""
  from medjax.data import builders

  return builders.prepare(SyntheticTriage, data_dir, config=config or DEFAULT_CONFIG)


def load_source(split: str, data_dir: str | None = None, config: TriageConfig | str | None = None):
  """A random-access data source (for grain) of one split: 'train', 'validation' or 'test'."""
  if split not in SPLIT_SEEDS:
    raise ValueError(f"Unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
  return get_builder(data_dir, config).as_data_source()[split]
