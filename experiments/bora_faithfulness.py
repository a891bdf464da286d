"""Caption faithfulness of a Bora model on the embedded cell task, with and without guidance.

python experiments/bora_faithfulness.py --config=configs/bora.py:tiny --workdir=DIR [--scales=1,2,4,7 --num=128]

Trains (or resumes) the config, then prints direction and count accuracy of the faithfulness
classifier and FVD per guidance scale (medjax.benchmarks.bora_faithfulness; table: docs/results.md).
"""

from absl import app, flags
from ml_collections import config_flags

from medjax.benchmarks import bora_faithfulness

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/bora.py:tiny.", lock_config=True
)
flags.DEFINE_string(
  "workdir", None, "Training run's workdir (trained here first unless --notrain)."
)
flags.DEFINE_bool("train", True, "Train (or resume) before evaluating.")
flags.DEFINE_list(
  "scales", ["1", "2", "4", "7"], "Classifier-free guidance scales (1: guidance off)."
)
flags.DEFINE_integer("num", 128, "Generated videos per scale.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.train:
    print(bora_faithfulness.train_model(config, FLAGS.workdir))
  for line in bora_faithfulness.faithfulness_rows(
    config, FLAGS.workdir, FLAGS.scales, FLAGS.num, FLAGS.seed
  ):
    print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
