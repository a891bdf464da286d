"""Encodes a Bora/Open-Sora CSV video dataset once into SD-VAE latents + T5 caption embeddings.

Each split of the `bora_csv` TFDS builder (whole clips, resized and cropped by it) becomes
OUT/<split> in the format of `medjax.data.latent_cache`, which the Bora task reads when
`data.cache_dir` is set. The SD-VAE encodes frame by frame, so every frame of a clip is cached (clips
zero-padded to the split's longest, their lengths in num_frames.npy) and the task takes Open-Sora's
random temporal crop from the latents at training time, as it would from the frames. `vae` is a
diffusers AutoencoderKL directory, `text_encoder` a HF T5 directory holding tokenizer.json; captions
are cleaned as Open-Sora's before T5 unless `clean_captions` is False.
"""

import functools
import itertools
import os

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from medjax.checkpoints.diffusers_vae import load_vae
from medjax.checkpoints.hf_t5 import load_t5_encoder
from medjax.data import builders, latent_cache

LENGTHS = "num_frames.npy"  # int32 [N]: the frames of each cached clip before padding


class PaddedClips:
  """The records of `source` with each video cut to `frames` frames or zero-padded to them."""

  def __init__(self, source, frames: int):
    self.source, self.frames = source, frames

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    r = dict(self.source[i])
    v = np.asarray(r["video"])[: self.frames]
    r["video"] = np.pad(v, ((0, self.frames - len(v)),) + ((0, 0),) * (v.ndim - 1))
    return r


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
  clean_captions: bool = True,
  max_frames: int = 0,
) -> dict:
  """Writes OUT/<split> (and its num_frames.npy) for every split of the dataset; -> {split: meta}.
  `max_frames` > 0 caches at most the first max_frames frames of each clip."""
  builder = load_builder(builder_config, data_dir)
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  encode_videos, vae_cfg = video_encoder(
    vae, sample=sample_posterior, seed=seed, frames_per_call=frames_per_call
  )
  encode_captions = load_t5_encoder(text_encoder, max_len=max_text_len, clean=clean_captions)
  meta = dict(
    vae=os.path.basename(os.path.normpath(vae)),
    scaling_factor=vae_cfg.scaling_factor,
    text_encoder=os.path.basename(os.path.normpath(text_encoder)),
    sample_posterior=sample_posterior,
    clean_captions=clean_captions,
    dataset=f"bora_csv/{builder_config}",
  )
  out_meta = {}
  for split, source in builder.as_data_source().items():
    lengths = np.array([len(source[i]["video"]) for i in range(len(source))], np.int32)
    if max_frames > 0:
      lengths = np.minimum(lengths, max_frames)
    path = os.path.join(out, split)
    out_meta[split] = latent_cache.write_split(
      path,
      PaddedClips(source, int(lengths.max())),
      encode_videos=encode_videos,
      encode_captions=encode_captions,
      batch_size=batch_size,
      dtype=dtype,
      meta={**meta, "split": split, "min_frames": int(lengths.min())},
    )
    with epath.Path(path, LENGTHS).open("wb") as f:
      np.save(f, lengths)
    logging.info("%s: %s", split, out_meta[split])
  return out_meta
