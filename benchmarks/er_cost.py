"""Wall time of Med-PaLM 2 ensemble refinement (N stage-1 + M stage-2 samples) against greedy answers.

python benchmarks/er_cost.py [--workdir=DIR] [--config=configs/llm.py:tiny --set=model.embed_dim=512,...]
    [--num_samples=11 --num_refinements=33 --questions=1]
With --workdir (a run of experiments/er_demo.py or configs/llm.py:tiny) the trained model answers;
without it the config's model is randomly initialised and every answer decodes exactly
--max_new_tokens tokens (medjax.benchmarks.er_cost). Expected on 2 CPU cores, 33.7M-parameter model:
ER batched = 13.1 greedy answers' wall time (table: docs/results.md).
"""

from absl import app, flags

from medjax.benchmarks import er_cost
from medjax.config_lib import config_from_file

flags.DEFINE_string("config", "configs/llm.py:tiny", "Config file:variant of the LM.")
flags.DEFINE_list(
  "set", [], "Config overrides key=value, e.g. model.embed_dim=512,model.num_layers=8."
)
flags.DEFINE_string(
  "workdir",
  None,
  "Trained run to load (newest checkpoint); without it the model is randomly "
  "initialised and every answer decodes exactly --max_new_tokens tokens.",
)
flags.DEFINE_integer("num_samples", 11, "ER stage-1 generations (N).")
flags.DEFINE_integer("num_refinements", 33, "ER stage-2 generations (M).")
flags.DEFINE_integer("questions", 4, "Held-out questions answered per run.")
flags.DEFINE_integer("max_new_tokens", 72, "Generated tokens per answer at most.")
flags.DEFINE_integer("repeats", 3, "Timed runs per method (median reported).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  report = er_cost.run(
    config_from_file(FLAGS.config, FLAGS.set),
    FLAGS.workdir,
    questions=FLAGS.questions,
    max_new_tokens=FLAGS.max_new_tokens,
    num_samples=FLAGS.num_samples,
    num_refinements=FLAGS.num_refinements,
    repeats=FLAGS.repeats,
  )
  print(report)


if __name__ == "__main__":
  app.run(main)
