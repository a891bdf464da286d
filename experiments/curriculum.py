"""Runs a staged curriculum (medjax.train.curriculum): each stage starts from the previous stage's
best params and stops early on validation loss; restarting resumes.

python experiments/curriculum.py --config=configs/opentslm_curriculum.py:flamingo_tiny --workdir=DIR
"""

import json

from absl import app, flags
from ml_collections import config_flags

from medjax.train import curriculum

config_flags.DEFINE_config_file(
  "config",
  None,
  "Curriculum config, e.g. configs/opentslm_curriculum.py:flamingo_tiny.",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "Stage workdirs, predictions and curriculum.jsonl go here.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  for s in curriculum.run(FLAGS.config, FLAGS.workdir):
    print(json.dumps(s, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
