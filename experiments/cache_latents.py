"""Encodes a Bora/Open-Sora CSV video dataset once into SD-VAE latents + T5 caption embeddings.

python experiments/cache_latents.py --manual_dir=CSV_DIR --vae=SD_VAE_DIR --text_encoder=T5_DIR --out=CACHE_DIR
then train on it: python experiments/train.py --config=configs/bora.py:paper --config.data.cache_dir=CACHE_DIR ...
Each split of the `bora_csv` TFDS builder (clips decoded, resized and cropped by it) becomes CACHE_DIR/<split>.
`--vae` is a diffusers AutoencoderKL directory, `--text_encoder` a HF T5 directory holding tokenizer.json.
"""

import functools
import itertools
import os

from absl import app, flags, logging


def define_flags():
  """Command-line flags (defined only when run as a script, so tests import this module beside others)."""
  flags.DEFINE_string(
    "manual_dir", None, "Folder holding train.csv (and validation.csv, test.csv) with path,text."
  )
  flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir for the prepared clips (default ~/tensorflow_datasets)."
  )
  flags.DEFINE_string(
    "builder_config", "bora", "bora_csv config: bora (40 frames), opensora_v1 (16) or tiny."
  )
  flags.DEFINE_string("vae", None, "diffusers AutoencoderKL directory (config.json + safetensors).")
  flags.DEFINE_string(
    "text_encoder", None, "HF T5 directory (config.json, model.safetensors, tokenizer.json)."
  )
  flags.DEFINE_string("out", None, "Cache root; each split is written to OUT/<split>.")
  flags.DEFINE_integer("max_text_len", 120, "Caption tokens (Open-Sora: 120).")
  flags.DEFINE_integer("batch_size", 4, "Clips encoded per call.")
  flags.DEFINE_integer(
    "frames_per_call", 0, "VAE frames per call within a batch (0: all; lower it to save memory)."
  )
  flags.DEFINE_bool(
    "sample_posterior", True, "Cache a posterior sample (Open-Sora) instead of the mean."
  )
  flags.DEFINE_integer("seed", 0, "Seed of the posterior samples.")
  flags.DEFINE_string(
    "dtype", "float32", "Storage dtype of latents and embeddings (float32 or float16)."
  )


def load_builder(config: str, data_dir=None):
  """The bora_csv TFDS builder with config `config` (bora, opensora_v1, tiny)."""
  from medjax.data import builders

  return builders.builder_class("bora_csv")(data_dir=data_dir, config=config)


def video_encoder(vae_dir: str, *, sample: bool, seed: int, frames_per_call: int = 0):
  """-> (encode_videos for `write_split`, VAE config): a jitted frame-by-frame encoder; with `sample`, each call
  draws posterior samples with a fresh key folded from `seed`."""
  import jax
  import numpy as np

  from medjax.checkpoints.diffusers_vae import load_vae
  from medjax.models.vae import encode_video

  vae, params = load_vae(vae_dir)
  fn = jax.jit(functools.partial(encode_video, vae, batch_size=frames_per_call or None))
  calls = itertools.count()

  def encode(videos):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), next(calls)) if sample else None
    return np.asarray(fn(params, videos, rng))

  return encode, vae.config


def cache_latents(
  *,
  out: str,
  manual_dir: str,
  vae: str,
  text_encoder: str,
  builder_config: str = "bora",
  data_dir=None,
  max_text_len: int = 120,
  batch_size: int = 4,
  frames_per_call: int = 0,
  sample_posterior: bool = True,
  seed: int = 0,
  dtype: str = "float32",
) -> dict:
  """Writes OUT/<split> for every split of the dataset; -> {split: meta}."""
  import tensorflow_datasets as tfds

  from medjax.checkpoints.hf_t5 import load_t5_encoder
  from medjax.data import latent_cache

  builder = load_builder(builder_config, data_dir)
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  encode_videos, vae_cfg = video_encoder(
    vae, sample=sample_posterior, seed=seed, frames_per_call=frames_per_call
  )
  encode_captions = load_t5_encoder(text_encoder, max_len=max_text_len)
  meta = dict(
    vae=os.path.basename(os.path.normpath(vae)),
    scaling_factor=vae_cfg.scaling_factor,
    text_encoder=os.path.basename(os.path.normpath(text_encoder)),
    sample_posterior=sample_posterior,
    dataset=f"bora_csv/{builder_config}",
  )
  out_meta = {}
  for split, source in builder.as_data_source().items():
    out_meta[split] = latent_cache.write_split(
      os.path.join(out, split),
      source,
      encode_videos=encode_videos,
      encode_captions=encode_captions,
      batch_size=batch_size,
      dtype=dtype,
      meta={**meta, "split": split},
    )
    logging.info("%s: %s", split, out_meta[split])
  return out_meta


def main(argv):
  del argv
  f = flags.FLAGS
  for name in ("manual_dir", "vae", "text_encoder", "out"):
    if not getattr(f, name):
      raise app.UsageError(f"--{name} is required")
  meta = cache_latents(
    out=f.out,
    manual_dir=f.manual_dir,
    vae=f.vae,
    text_encoder=f.text_encoder,
    builder_config=f.builder_config,
    data_dir=f.data_dir,
    max_text_len=f.max_text_len,
    batch_size=f.batch_size,
    frames_per_call=f.frames_per_call,
    sample_posterior=f.sample_posterior,
    seed=f.seed,
    dtype=f.dtype,
  )
  for split, m in meta.items():
    print(f"{split}: {m['count']} clips, latents {m['x_shape']}, text {m['y_shape']}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
