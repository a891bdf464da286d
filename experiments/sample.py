"""Samples videos from a trained Bora/STDiT run: python experiments/sample.py --config=configs/bora.py:tiny
--workdir=DIR --prompt="3 cells moving left fast" [--cfg_scale=4 --num=4 --out=DIR].

Writes <out>/sample.gif (the first video, frames in time) and <out>/grid.png (rows: videos, columns:
frames), and prints the count and direction the faithfulness classifier reads from each sample. Needs Pillow.
"""

import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/bora.py:tiny.", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir (checkpoints are read from it).")
flags.DEFINE_string("prompt", "2 cells moving right fast", "Caption of the videos to generate.")
flags.DEFINE_float(
  "cfg_scale", None, "Classifier-free guidance scale (default: config.diffusion.cfg_scale)."
)
flags.DEFINE_integer("num", 4, "Number of videos.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output folder (default: <workdir>/samples).")
flags.DEFINE_integer("zoom", 8, "Pixel upscaling of the written images.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax

  from medjax.data.synthetic import cells
  from medjax.eval.frames import write_outputs
  from medjax.train.loop import trained_params

  config = FLAGS.config
  if config.task != "bora":
    raise ValueError(f"--config: expected a bora config (task 'bora'), got task {config.task!r}")
  params, model, task, _, _, step = trained_params(config, FLAGS.workdir)
  spec = cells.parse_caption(FLAGS.prompt)
  text = cells.caption(spec["count"], spec["direction"], spec["speed"])
  y, y_mask = task.encode_captions([text] * FLAGS.num)
  scale = config.diffusion.cfg_scale if FLAGS.cfg_scale is None else FLAGS.cfg_scale
  videos = jax.device_get(
    task.sampler(model, scale)(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(FLAGS.seed))
  )
  gif, png = write_outputs(videos, FLAGS.out or os.path.join(FLAGS.workdir, "samples"), FLAGS.zoom)
  read = task.classifier.predict(videos)
  read = [f"{c + 1} {cells.DIRECTIONS[d]}" for d, c in zip(read["direction"], read["count"])]
  print(f"step {step}, prompt {text!r}, cfg {scale}: classifier reads {read}\n{gif}\n{png}")


if __name__ == "__main__":
  app.run(main)
