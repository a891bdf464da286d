"""Ensemble refinement on the embedded triage task: train the tiny LM, compare prompting strategies.

python experiments/er_demo.py --workdir=DIR [--steps=500 --questions=128 --checkpoint_every=50]
python experiments/er_demo.py --workdir=DIR --refine_frac=0 --seeds=0,1,2   # ER never taught

Prints accuracy, unparseable rate and forward tokens of greedy (direct), CoT, SC and ER on held-out
questions (medjax.benchmarks.er_demo), and with several seeds each strategy per seed and the mean.
With refine_frac > 0 the model is taught the refinement format; with 0 it never sees it.
Tables: docs/results.md.
"""

from absl import app, flags

from medjax.benchmarks import er_demo
from medjax.config_lib import config_from_file
from medjax.inference import mcq

flags.DEFINE_string("workdir", None, "Training workdir (resumed if it has a checkpoint).")
flags.DEFINE_string("config", "configs/llm.py:tiny", "Config file:variant.")
flags.DEFINE_integer("steps", 500, "Training steps (few, so the model stays imperfect).")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_float("refine_frac", 0.5, "Share of training examples in refinement format (0: none).")
flags.DEFINE_float("direct_frac", 0.2, "Share of examples answered directly (greedy baseline).")
flags.DEFINE_list(
  "seeds", [], "Train and compare once per seed, in WORKDIR/seed_<s> (default: one run)."
)
flags.DEFINE_integer("questions", 128, "Held-out test questions.")
flags.DEFINE_integer(
  "num_samples", 4, "SC samples / ER stage-1 generations (most refinement candidates)."
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
  make = lambda seed: er_demo.er_config(
    config_from_file(FLAGS.config),
    steps=FLAGS.steps,
    batch_size=FLAGS.batch_size,
    refine_frac=FLAGS.refine_frac,
    refine_candidates=FLAGS.num_samples,
    direct_frac=FLAGS.direct_frac,
    checkpoint_every=FLAGS.checkpoint_every,
    seed=seed,
  )
  kw = dict(questions=FLAGS.questions, num_refinements=FLAGS.num_refinements)
  kw["temperature"] = FLAGS.temperature
  if not FLAGS.seeds:
    print(mcq.table(er_demo.run(make(0), FLAGS.workdir, **kw)))
    return
  per_seed = er_demo.run_seeds(make, FLAGS.workdir, [int(s) for s in FLAGS.seeds], **kw)
  for seed, results in per_seed.items():
    print(f"seed {seed}\n{mcq.table(results)}")
  print(er_demo.seed_table(per_seed))


if __name__ == "__main__":
  app.run(main)
