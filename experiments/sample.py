"""Samples videos from a trained Bora/STDiT run: python experiments/sample.py --config=configs/bora.py:tiny
--workdir=DIR --prompt="3 cells moving left fast" [--cfg_scale=4 --num=4 --out=DIR].

Writes <out>/sample.gif (the first video, frames in time) and <out>/grid.png (rows: videos, columns:
frames), and prints the direction the motion classifier reads from each sample. Needs Pillow.
"""
import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/bora.py:tiny.", lock_config=True)
flags.DEFINE_string("workdir", None, "The training run's workdir (checkpoints are read from it).")
flags.DEFINE_string("prompt", "2 cells moving right fast", "Caption of the videos to generate.")
flags.DEFINE_float("cfg_scale", None, "Classifier-free guidance scale (default: config.diffusion.cfg_scale).")
flags.DEFINE_integer("num", 4, "Number of videos.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output folder (default: <workdir>/samples).")
flags.DEFINE_integer("zoom", 8, "Pixel upscaling of the written images.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def to_uint8(videos, zoom: int):
  """[N, T, H, W, C] in [-1, 1] -> uint8 [N, T, H*zoom, W*zoom] (first channel)."""
  import numpy as np
  v = np.clip((np.asarray(videos)[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)
  return v.repeat(zoom, axis=2).repeat(zoom, axis=3)


def write_outputs(videos, out_dir: str, zoom: int = 8, fps: int = 4):
  """sample.gif of the first video and grid.png of all; returns their paths."""
  import numpy as np
  from PIL import Image
  os.makedirs(out_dir, exist_ok=True)
  v = to_uint8(videos, zoom)
  n, t, h, w = v.shape
  frames = [Image.fromarray(f) for f in v[0]]
  gif = os.path.join(out_dir, "sample.gif")
  frames[0].save(gif, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
  pad = max(1, zoom // 4)
  grid = np.full((n * (h + pad) - pad, t * (w + pad) - pad), 128, np.uint8)
  for i in range(n):
    for j in range(t):
      grid[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = v[i, j]
  png = os.path.join(out_dir, "grid.png")
  Image.fromarray(grid).save(png)
  return gif, png


def main(argv):
  del argv
  import jax
  import numpy as np
  from medjax.data.synthetic import cells
  from medjax.train.loop import trained_params
  config = FLAGS.config
  if config.task != "bora":
    raise ValueError(f"--config: expected a bora config (task 'bora'), got task {config.task!r}")
  params, model, task, _, _, step = trained_params(config, FLAGS.workdir)
  spec = cells.parse_caption(FLAGS.prompt)
  text = cells.caption(spec["count"], spec["direction"], spec["speed"])
  ids, mask = cells.tokenize(text, config.data.max_text_len, task.tokenizer)
  y, y_mask = np.repeat(ids[None], FLAGS.num, 0), np.repeat(mask[None], FLAGS.num, 0)
  scale = config.diffusion.cfg_scale if FLAGS.cfg_scale is None else FLAGS.cfg_scale
  videos = jax.device_get(task.sampler(model, scale)(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(FLAGS.seed)))
  gif, png = write_outputs(videos, FLAGS.out or os.path.join(FLAGS.workdir, "samples"), FLAGS.zoom)
  read = [cells.DIRECTIONS[i] for i in task.classifier.predict(videos)]
  print(f"step {step}, prompt {text!r}, cfg {scale}: classifier reads {read}\n{gif}\n{png}")


if __name__ == "__main__":
  app.run(main)
