"""Caption faithfulness of a Bora model on the embedded cell task, with and without guidance.

python experiments/bora_faithfulness.py --config=configs/bora.py:tiny --workdir=DIR [--scales=1,2,4,7 --num=128]

Trains (or resumes) the config through the one training loop, then generates `num` videos for held-out
captions at each guidance scale and prints a table: direction and count accuracy of the faithfulness
classifier (trained on real videos) and FVD against real videos of the same captions.
"""

import time

from absl import app, flags
from ml_collections import config_flags

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

  from medjax.train.loop import train, trained_params

  config = FLAGS.config
  if config.task != "bora" or config.data.name != "synthetic_cells":
    raise ValueError(
      f"--config: expected a bora config on data 'synthetic_cells', got task {config.task!r}"
    )
  if FLAGS.train:
    tick = time.time()
    config = config.unlock()
    config.train.eval_every = 0  # evaluated below, at every scale
    last = train(config, FLAGS.workdir)
    print(
      f"trained to step {int(last['step'])} in {time.time() - tick:.0f}s, last loss {last.get('train/loss', 0):.4f}"
    )
  params, model, task, _, _, step = trained_params(config, FLAGS.workdir)
  clf = task.classifier.heldout_accuracy
  print(
    f"step {step}; classifier on real videos: direction {clf['direction']:.3f}, count {clf['count']:.3f}; "
    f"chance: direction {1 / 4:.3f}, count {1 / config.data.max_count:.3f}"
  )
  print("| cfg scale | direction acc | count acc | FVD |\n|---|---|---|---|")
  for s in FLAGS.scales:
    r = task.faithfulness(model, params, float(s), FLAGS.num, FLAGS.seed)
    print(
      f"| {float(s):g} | {r['direction_accuracy']:.3f} | {r['count_accuracy']:.3f} | {r['fvd']:.2f} |",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
