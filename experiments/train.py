"""Trains any model family: python experiments/train.py --config=configs/<name>.py:<variant> --workdir=DIR.

Override any config field with --config.a.b=value; an unknown key is an error naming the nearest ones.
Restarting with the same --workdir resumes from the newest checkpoint.
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/llm.py:tiny.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _quiet_libraries():
  """Keeps orbax/grain INFO chatter out of the training log (warnings still show)."""
  import logging as py_logging

  class _Filter(py_logging.Filter):
    def filter(self, record):
      return record.levelno >= py_logging.WARNING or not any(
        s in record.pathname for s in ("/orbax/", "/grain/", "/tensorflow_datasets/")
      )

  logging.get_absl_handler().addFilter(_Filter())


def main(argv):
  del argv
  _quiet_libraries()
  import jax

  from medjax import parallel
  from medjax.train.loop import train

  config = FLAGS.config
  p = config.parallel
  parallel.initialize_distributed(
    p.distributed, p.coordinator or None, p.num_processes, p.process_id
  )
  logging.info("config:\n%s", config)
  result = train(config, FLAGS.workdir)
  summary = {k: v for k, v in result.items() if k.startswith(("eval/", "train/loss", "step"))}
  if jax.process_index() == 0:
    print(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
