"""Encodes a Bora/Open-Sora CSV video dataset once into SD-VAE latents + T5 caption embeddings.

python experiments/cache_latents.py --manual_dir=CSV_DIR --vae=SD_VAE_DIR --text_encoder=T5_DIR --out=CACHE_DIR
then train on it: python experiments/train.py --config=configs/bora.py:paper --config.data.cache_dir=CACHE_DIR ...
Each split becomes CACHE_DIR/<split> (medjax.checkpoints.cache_latents).
"""

from absl import app, flags

from medjax.checkpoints.cache_latents import cache_latents

flags.DEFINE_string("manual_dir", None, "Folder holding train.csv (and validation.csv, test.csv).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for the prepared clips (default ~/...).")
flags.DEFINE_string(
  "builder_config", "bora", "bora_csv config: bora (clips >= 40 frames), opensora_v1, tiny."
)
flags.DEFINE_string("vae", None, "diffusers AutoencoderKL directory (config.json + safetensors).")
flags.DEFINE_string(
  "text_encoder", None, "HF T5 encoder: hf:DIR or DIR (config.json, safetensors, tokenizer)."
)
flags.DEFINE_string("out", None, "Cache root; each split is written to OUT/<split>.")
flags.DEFINE_integer("max_text_len", 120, "Caption tokens (Open-Sora: 120).")
flags.DEFINE_integer("batch_size", 4, "Clips encoded per call.")
flags.DEFINE_integer("frames_per_call", 0, "VAE frames per call (0: all; lower it to save memory).")
flags.DEFINE_bool("sample_posterior", True, "Cache a posterior sample (Open-Sora), not the mean.")
flags.DEFINE_integer("seed", 0, "Seed of the posterior samples.")
flags.DEFINE_string("dtype", "float32", "Storage dtype of the cache (float32 or float16).")
flags.DEFINE_bool("clean_captions", True, "Clean and lower-case captions as Open-Sora before T5.")
flags.DEFINE_integer("max_frames", 0, "Cache at most this many frames of each clip (0: all).")
flags.mark_flags_as_required(["manual_dir", "vae", "text_encoder", "out"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  names = ("out", "manual_dir", "vae", "text_encoder", "builder_config", "data_dir")
  names += ("max_text_len", "batch_size", "frames_per_call", "sample_posterior", "seed", "dtype")
  names += ("clean_captions", "max_frames")
  meta = cache_latents(**{n: getattr(FLAGS, n) for n in names})
  for split, m in meta.items():
    print(f"{split}: {m['count']} clips, latents {m['x_shape']}, text {m['y_shape']}")


if __name__ == "__main__":
  app.run(main)
