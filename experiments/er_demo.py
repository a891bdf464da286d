"""Ensemble refinement on the embedded triage task: train the tiny LM, compare prompting strategies.

python experiments/er_demo.py --workdir=DIR [--steps=500 --questions=128 --checkpoint_every=50]

Prints accuracy, unparseable rate and forward tokens of greedy (direct), CoT, SC and ER on held-out
questions (medjax.benchmarks.er_demo). Expected at step 500: ER 0.727 vs greedy CoT 0.609
(table: docs/results.md).
"""

from absl import app, flags

from medjax.benchmarks import er_demo
from medjax.config_lib import config_from_file
from medjax.inference import mcq

flags.DEFINE_string("workdir", None, "Training workdir (resumed if it has a checkpoint).")
flags.DEFINE_string("config", "configs/llm.py:tiny", "Config file:variant.")
flags.DEFINE_integer("steps", 500, "Training steps (few, so the model stays imperfect).")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_float("refine_frac", 0.5, "Share of training examples in refinement format.")
flags.DEFINE_float("direct_frac", 0.2, "Share of examples answered directly (greedy baseline).")
flags.DEFINE_integer("questions", 128, "Held-out test questions.")
flags.DEFINE_integer(
  "num_samples",
  4,
  "SC samples and ER stage-1 generations (also the most candidates "
  "in a refinement training example).",
)
flags.DEFINE_integer("num_refinements", 8, "ER stage-2 generations.")
flags.DEFINE_float("temperature", 0.7, "Sampling temperature.")
flags.DEFINE_integer(
  "checkpoint_every", 0, "Also keep checkpoints every this many steps (0: last)."
)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = er_demo.er_config(
    config_from_file(FLAGS.config),
    steps=FLAGS.steps,
    batch_size=FLAGS.batch_size,
    refine_frac=FLAGS.refine_frac,
    refine_candidates=FLAGS.num_samples,
    direct_frac=FLAGS.direct_frac,
    checkpoint_every=FLAGS.checkpoint_every,
  )
  results = er_demo.run(
    config,
    FLAGS.workdir,
    questions=FLAGS.questions,
    num_refinements=FLAGS.num_refinements,
    temperature=FLAGS.temperature,
  )
  print(mcq.table(results))


if __name__ == "__main__":
  app.run(main)
