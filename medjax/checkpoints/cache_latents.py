"""Encodes a Bora/Open-Sora CSV video dataset once into SD-VAE latents + T5 caption embeddings.

Each split of the `bora_csv` TFDS builder (clips decoded, resized and cropped by it) becomes
OUT/<split> in the format of `medjax.data.latent_cache`, which the Bora task reads when
`data.cache_dir` is set. `vae` is a diffusers AutoencoderKL directory, `text_encoder` a HF T5
directory holding tokenizer.json.
"""

import functools
import itertools
import os

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from medjax.checkpoints.diffusers_vae import load_vae
from medjax.checkpoints.hf_t5 import load_t5_encoder
from medjax.data import builders, latent_cache
from medjax.models.vae import encode_video


def load_builder(config: str, data_dir=None):
  """The bora_csv TFDS builder with config `config` (bora, opensora_v1, tiny)."""
  return builders.builder_class("bora_csv")(data_dir=data_dir, config=config)


def video_encoder(vae_dir: str, *, sample: bool, seed: int, frames_per_call: int = 0):
  """-> (encode_videos for `write_split`, VAE config): a jitted frame-by-frame encoder; with
  `sample`, each call draws posterior samples with a fresh key folded from `seed`."""
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
