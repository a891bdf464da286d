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


def main(argv):
  del argv
  from medjax.train.sample import read_captions, sample_run

  captions = read_captions(FLAGS.prompt, FLAGS.prompts_file)
  lines = sample_run(
    FLAGS.config,
    FLAGS.workdir,
    captions,
    num=FLAGS.num,
    cfg_scale=FLAGS.cfg_scale,
    seed=FLAGS.seed,
    out=FLAGS.out,
    zoom=FLAGS.zoom,
    fps=FLAGS.fps,
    text_encoder=FLAGS.text_encoder,
    vae=FLAGS.vae,
    frames_per_call=FLAGS.frames_per_call,
  )
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
