"""Samples videos from a trained Bora/STDiT run.

Paper path (latent VAE configs): captions -> T5 -> STDiT -> IDDPM (the config's respaced steps and
guidance) -> SD-VAE decode -> one MP4 (H.264) and GIF per caption, and grid.png of all:
  python experiments/sample.py --config=configs/bora.py:paper --workdir=DIR --text_encoder=T5_DIR \
    --vae=SD_VAE_DIR --prompt="An endoscopic view of the colon." [--prompt=... --prompts_file=F]
Embedded cells task (pixels): --config=configs/bora.py:tiny --prompt="3 cells moving left fast"
[--num=4]; prints the count and direction the faithfulness classifier reads from each sample.
Outputs go to --out (default <workdir>/samples; local or gs://).
"""

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/bora.py:tiny.", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir (checkpoints are read from it).")
flags.DEFINE_multi_string("prompt", [], "A caption to generate (repeat the flag for several).")
flags.DEFINE_string(
  "prompts_file", None, "A text file of captions, one per line (added to --prompt)."
)
flags.DEFINE_float(
  "cfg_scale", None, "Classifier-free guidance scale (default: config.diffusion.cfg_scale)."
)
flags.DEFINE_integer("num", None, "Videos per caption (default: 4 for cells, 1 otherwise).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("out", None, "Output folder (default: <workdir>/samples).")
flags.DEFINE_integer("zoom", None, "Pixel upscaling of the written files (default: 8 cells, 1).")
flags.DEFINE_integer("fps", 8, "Frames per second of the MP4 and GIF.")
flags.DEFINE_string("text_encoder", None, "HF T5 encoder: hf:DIR or DIR (paper path).")
flags.DEFINE_string("vae", None, "diffusers AutoencoderKL directory (paper path).")
flags.DEFINE_integer("frames_per_call", 0, "VAE frames decoded per call (0: all).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _captions():
  captions = list(FLAGS.prompt)
  if FLAGS.prompts_file:
    from etils import epath

    captions += [c.strip() for c in epath.Path(FLAGS.prompts_file).read_text().splitlines()]
  captions = [c for c in captions if c.strip()]
  if not captions:
    raise ValueError("--prompt/--prompts_file: expected at least one caption, got none")
  return captions


def main(argv):
  del argv
  import jax
  from etils import epath

  from medjax.eval.frames import write_outputs
  from medjax.tasks.bora import sample_captions
  from medjax.train.loop import trained_params

  config = FLAGS.config
  if config.task != "bora":
    raise ValueError(f"--config: expected a bora config (task 'bora'), got task {config.task!r}")
  params, model, task, _, _, step = trained_params(config, FLAGS.workdir)
  scale = config.diffusion.cfg_scale if FLAGS.cfg_scale is None else FLAGS.cfg_scale
  out = FLAGS.out or str(epath.Path(FLAGS.workdir) / "samples")
  cells_task = config.data.latent == "pixels"
  num = FLAGS.num or (4 if cells_task else 1)
  captions = [c for c in _captions() for _ in range(num)]
  names = [f"{i:03d}" for i in range(len(captions))]
  if cells_task:
    from medjax.data.synthetic import cells

    spec = [cells.parse_caption(c) for c in captions]
    captions = [cells.caption(s["count"], s["direction"], s["speed"]) for s in spec]
    y, y_mask = task.encode_captions(captions)
    sampler = task.sampler(model, scale)
    videos = jax.device_get(sampler(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(FLAGS.seed)))
    read = task.classifier.predict(videos)
    read = [f"{c + 1} {cells.DIRECTIONS[d]}" for d, c in zip(read["direction"], read["count"])]
  else:
    for flag in ("text_encoder", "vae"):
      if not getattr(FLAGS, flag):
        raise ValueError(f"--{flag}: required to sample a latent (VAE) config, got none")
    videos = sample_captions(
      task,
      model,
      params,
      captions,
      text_encoder=FLAGS.text_encoder,
      vae=FLAGS.vae,
      cfg_scale=scale,
      seed=FLAGS.seed,
      frames_per_call=FLAGS.frames_per_call,
    )
    read = None
  paths = write_outputs(videos, out, FLAGS.zoom or (8 if cells_task else 1), FLAGS.fps, names)
  print(f"step {step}, cfg {scale}, {len(captions)} videos of shape {videos.shape[1:]}")
  for i, caption in enumerate(captions):
    extra = f" (classifier reads {read[i]})" if read else ""
    print(f"{paths['mp4'][i]}\t{paths['gif'][i]}\t{caption!r}{extra}")
  print(paths["grid"])


if __name__ == "__main__":
  app.run(main)
