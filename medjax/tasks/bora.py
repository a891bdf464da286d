"""Bora / Open-Sora text-to-video task: STDiT trained with IDDPM (or rectified flow) on video latents.

The embedded task (`data.name = "synthetic_cells"`, `data.latent = "pixels"`) denoises the pixels of
tiny captioned microscopy-like videos directly. Evaluation generates videos for held-out captions and
scores their direction and count with a classifier trained on real synthetic videos (`medjax.eval`),
and their FVD against real videos of the same captions, with and without classifier-free guidance.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from medjax import config_lib, paths
from medjax import diffusion as diffusion_lib
from medjax.data import latent_cache, media_io
from medjax.data.synthetic import cells
from medjax.data.tokenizers import ByteTokenizer
from medjax.eval.faithfulness import FaithfulnessClassifier
from medjax.eval.fvd import fvd
from medjax.models import stdit
from medjax.models.stdit import STDiT, STDiTConfig
from medjax.tasks.base import Task

LATENTS = ("pixels", "vae")
SPLITS = ("train", "validation", "test")
# Each cached clip is listed this many times in the training source, each listing with its own crop,
# so that the pipeline's shuffle draws a fresh crop whenever it meets the clip again.
CROP_REPEATS = 1000


class TemporalCropSource:
  """Records {x [T, ...], y, y_mask} of `source` with x cut to `num_frames` frames by Open-Sora's
  TemporalRandomCrop (`media_io.temporal_crop`) over the clip's `lengths[i]` real frames. Record i of
  the len(source) * repeats listed is clip i % len(source), its crop drawn from (seed, i)."""

  def __init__(self, source, lengths, num_frames: int, interval: int, seed, repeats: int = 1):
    if len(lengths) != len(source):
      raise ValueError(f"lengths: expected {len(source)} clip lengths, got {len(lengths)}")
    self.source, self.lengths = source, np.asarray(lengths)
    self.num_frames, self.interval, self.seed, self.repeats = num_frames, interval, seed, repeats

  def __len__(self):
    return len(self.source) * self.repeats

  def __getitem__(self, i):
    i = int(i)
    clip = i % len(self.source)
    rng = np.random.default_rng([*self.seed, i])
    idx = media_io.temporal_crop(int(self.lengths[clip]), self.num_frames, self.interval, rng)
    record = dict(self.source[clip])
    record["x"] = np.asarray(record["x"])[idx]
    return record


def stdit_config_from(model_cfg, diffusion_cfg) -> STDiTConfig:
  """STDiTConfig from the config's `model` section; learned variance follows the diffusion type."""
  learn_sigma = diffusion_cfg.type == "iddpm" and diffusion_cfg.learn_sigma
  return config_lib.dataclass_from(STDiTConfig, model_cfg, learn_sigma=learn_sigma)


def generate(
  model,
  params,
  diff,
  y,
  y_mask,
  rng,
  *,
  shape,
  cfg_scale: float = 1.0,
  method: str = "ddpm",
  clip_denoised: bool = False,
  guided_channels: int = 0,
):
  """Samples videos [B, *shape] for captions y [B, L(, D)] with classifier-free guidance `cfg_scale`
  (the Python float 1.0: the conditional model alone; a traced scale always runs both branches) on
  the first `guided_channels` latent channels (0: all; v1.0 guides 3 of 4, the rest of the output is
  the conditional prediction).
  `diff` is a (respaced) GaussianDiffusion or a RectifiedFlow; `clip_denoised` clips each step's data
  estimate to [-1, 1] (for data in that range, e.g. pixels)."""
  b = y.shape[0]
  if b == 0:
    raise ValueError(f"y: expected at least one caption, got an empty batch of shape {y.shape}")
  channels = shape[-1]
  if not 0 <= guided_channels <= channels:
    raise ValueError(
      f"diffusion.guided_channels: expected 0 (all) to {channels} latent channels, got "
      f"{guided_channels}"
    )

  def apply(x, t, c):
    return model.apply({"params": params}, x, t, c["y"], c["y_mask"], drop_caption=c["drop"])

  cond = {"y": y, "y_mask": y_mask, "drop": jnp.zeros((b,), bool)}
  if isinstance(cfg_scale, (int, float)) and cfg_scale == 1.0:
    model_fn = lambda x, t: apply(x, t, cond)
  else:
    guided = diffusion_lib.cfg_model_fn(
      apply, cfg_scale, guided_channels=guided_channels or channels
    )
    model_fn = lambda x, t: guided(x, t, cond, {**cond, "drop": jnp.ones((b,), bool)})
  k_noise, k_sample = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (b,) + tuple(shape))
  return diff.sample(model_fn, noise, k_sample, method=method, clip_denoised=clip_denoised)


# ------------------------------------------------------------------------------ the task
class BoraTask(Task):
  """Loss: the diffusion loss (IDDPM MSE + VB, or rectified-flow MSE) of STDiT on (video, caption)."""

  # The caption is the input a text-to-video model must follow: the ablation control generates each
  # clip from another clip's caption and scores it against its own.
  ablation_keys = ("y", "y_mask")

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.latent not in LATENTS:
      raise ValueError(f"data.latent: expected one of {LATENTS}, got {d.latent!r}")
    if d.tokenizer not in ("words", "byte", ""):
      raise ValueError(
        f"data.tokenizer: expected 'words', 'byte' or '' (precomputed embeddings), got {d.tokenizer!r}"
      )
    self.tokenizer = ByteTokenizer() if d.tokenizer == "byte" else None
    self.diffusion = diffusion_lib.make_diffusion(config.diffusion)
    self._classifier = None
    self._samplers = {}

  @property
  def video_shape(self):
    d = self.config.data
    return (d.frames, d.size, d.size, d.channels)

  @property
  def data_kw(self):
    d = self.config.data
    return dict(
      frames=d.frames,
      size=d.size,
      speeds=tuple(d.speeds),
      max_count=d.max_count,
      start_spread=d.start_spread,
      motion=d.get("motion", "wrap"),
    )

  def init_slots(self):
    return {"stdit": ((), stdit_config_from(self.config.model, self.config.diffusion))}

  def build_model(self):
    cfg = stdit_config_from(self.config.model, self.config.diffusion)
    if cfg.in_channels != self.config.data.channels:
      raise ValueError(
        f"model.in_channels: {cfg.in_channels} != data.channels {self.config.data.channels}"
      )
    t, h, w, _ = self.video_shape
    if any(n % p for n, p in zip((t, h, w), cfg.patch_size)):
      raise ValueError(
        f"data: (frames, size, size) = {(t, h, w)} must be divisible by model.patch_size "
        f"{cfg.patch_size}"
      )
    return STDiT(cfg)

  def dummy_batch(self, batch_size):
    d, m = self.config.data, self.config.model
    batch = {
      "x": np.zeros((batch_size,) + self.video_shape, np.float32),
      "y_mask": np.ones((batch_size, d.max_text_len), np.int32),
    }
    if m.text_vocab_size:
      batch["y"] = np.zeros((batch_size, d.max_text_len), np.int32)
    else:
      batch["y"] = np.zeros((batch_size, d.max_text_len, m.caption_channels), np.float32)
    if d.name == "synthetic_cells":
      batch["direction"] = np.zeros((batch_size,), np.int32)
    return batch

  def init_params(self, model, rng, batch):
    return model.init(
      rng, batch["x"], jnp.zeros((batch["x"].shape[0],)), batch["y"], batch["y_mask"]
    )["params"]

  def _losses(self, model, params, batch, rng, train):
    k_t, k_noise, k_drop = jax.random.split(rng, 3)
    x0 = batch["x"] * self.config.data.latent_scale
    t = self.diffusion.sample_timesteps(k_t, x0.shape[0])
    noise = jax.random.normal(k_noise, x0.shape)
    model_fn = lambda xt, mt: model.apply(
      {"params": params}, xt, mt, batch["y"], batch["y_mask"], train=train, rngs={"dropout": k_drop}
    )
    return self.diffusion.training_losses(model_fn, x0, t, noise)

  def loss(self, model, params, batch, rng, step):
    train = rng is not None
    out = self._losses(model, params, batch, rng if train else jax.random.PRNGKey(0), train)
    return jnp.mean(out["loss"]), {"mse": jnp.mean(out["mse"]), "vb": jnp.mean(out["vb"])}

  def eval_metrics(self, model, params, batch):
    out = self._losses(model, params, batch, jax.random.PRNGKey(0), False)
    n = float(batch["x"].shape[0])
    return {k: (jnp.sum(v), n) for k, v in out.items()}

  def source(self, split):
    """Records of the latent cache split data.cache_dir/<split> (written by
    experiments/cache_latents.py; None without a validation split), or generated cell videos."""
    d, m = self.config.data, self.config.model
    if d.cache_dir:
      path = os.path.join(d.cache_dir, split)
      if split != "train" and not paths.resolve(path).exists():
        return None
      if m.text_vocab_size:
        raise ValueError(
          f"model.text_vocab_size: cached captions are embeddings, expected 0, got "
          f"{m.text_vocab_size}"
        )
      return self._cropped_cache(path, split)
    if d.name != "synthetic_cells" or d.latent != "pixels":
      raise ValueError(
        f"data: only name='synthetic_cells' with latent='pixels' can be generated in-process, got "
        f"name={d.name!r}, latent={d.latent!r} (VAE latents need precomputed data: data.cache_dir)"
      )
    if split == "train":
      return cells.CellsSource(1 << 20, self.config.seed, **self.data_kw)
    # Four global eval batches of held-out videos.
    n = 4 * self.config.train.eval_batch_size
    return cells.CellsSource(n, 10_000 + self.config.seed, **self.data_kw)

  def _cropped_cache(self, path, split):
    """The cache split at `path`, each clip cut to data.frames latents by a seeded random temporal crop."""
    d, m = self.config.data, self.config.model
    src = latent_cache.CacheSource(
      path,
      {"y": ((d.max_text_len, m.caption_channels), "data.max_text_len/model.caption_channels")},
    )
    x_shape = tuple(src.meta["x_shape"])
    if x_shape[1:] != self.video_shape[1:]:
      raise ValueError(
        f"data.size/channels: the cache at {path!r} holds latent frames of shape {x_shape[1:]}, "
        f"the config expects {self.video_shape[1:]}"
      )
    from medjax.checkpoints.cache_latents import LENGTHS

    file = epath.Path(path) / LENGTHS
    if file.exists():
      with file.open("rb") as f:
        lengths = np.load(f)
    else:  # a cache of fixed-length clips
      lengths = np.full(len(src), x_shape[0], np.int32)
    if lengths.min() < d.frames:
      raise ValueError(
        f"data.frames: expected cached clips of at least {d.frames} frames, the cache at {path!r} "
        f"holds clips of {int(lengths.min())} to {int(lengths.max())}"
      )
    repeats = CROP_REPEATS if split == "train" else 1
    seed = [self.config.seed, SPLITS.index(split) if split in SPLITS else len(SPLITS)]
    return TemporalCropSource(src, lengths, d.frames, d.frame_interval, seed, repeats)

  def encode(self, record):
    if self.config.data.cache_dir:
      return record
    return cells.encode(record, self.config.data.max_text_len, self.tokenizer)

  def count_tokens(self, batch):
    p = self.config.model.patch_size
    x = np.shape(batch["x"])
    return int(x[0] * (x[1] // p[0]) * (x[2] // p[1]) * (x[3] // p[2]))

  def flops_per_step(self, model, batch, num_params):
    return stdit.train_flops(model.cfg, np.shape(batch["x"]), np.shape(batch["y"])[1])

  # ---------------------------------------------------------------------------- evaluation
  @property
  def classifier(self) -> FaithfulnessClassifier:
    if self._classifier is None:
      self._classifier = FaithfulnessClassifier(self.data_kw)
    return self._classifier

  def encode_captions(self, captions) -> tuple[np.ndarray, np.ndarray]:
    """Caption strings -> (y [N, L], y_mask [N, L]) in the task's tokenisation."""
    if isinstance(captions, str) or not len(captions):
      raise ValueError(f"captions: expected a non-empty list of caption strings, got {captions!r}")
    enc = [cells.tokenize(c, self.config.data.max_text_len, self.tokenizer) for c in captions]
    return np.stack([e[0] for e in enc]), np.stack([e[1] for e in enc])

  def prompts(self, n: int, seed: int = 20_000):
    """n held-out records -> (y, y_mask, labels {direction, count - 1}, real videos)."""
    src = cells.CellsSource(n, seed, **self.data_kw)
    exs = [src[i] for i in range(n)]
    enc = [cells.encode(e, self.config.data.max_text_len, self.tokenizer) for e in exs]
    labels = {
      "direction": np.array([e["direction"] for e in exs]),
      "count": np.array([e["count"] - 1 for e in exs]),
    }
    return (
      np.stack([e["y"] for e in enc]),
      np.stack([e["y_mask"] for e in enc]),
      labels,
      np.stack([e["video"] for e in exs]),
    )

  def sampler(self, model, cfg_scale: float):
    """A jitted (params, y, y_mask, rng) -> videos (latents / data.latent_scale) using the sampling chain
    with guidance `cfg_scale`. The scale is an argument of one compiled function per model, so every
    scale and repeated evaluations reuse its compilation."""
    if id(model) not in self._samplers:
      diff = diffusion_lib.make_diffusion(self.config.diffusion, sampling=True)
      fn = functools.partial(
        generate,
        model,
        diff=diff,
        shape=self.video_shape,
        method=self.config.diffusion.sampler,
        clip_denoised=self.config.diffusion.get("clip_denoised", False),
        guided_channels=self.config.diffusion.get("guided_channels", 0),
      )
      self._samplers[id(model)] = jax.jit(
        lambda *a, **kw: fn(*a, **kw) / self.config.data.latent_scale
      )
    return functools.partial(self._samplers[id(model)], cfg_scale=jnp.float32(cfg_scale))

  def faithfulness(
    self, model, params, cfg_scale: float, n: int, seed: int = 0, ablate: bool = False
  ) -> dict:
    """Generates n videos for held-out captions -> {direction_accuracy, count_accuracy, fvd} (FVD against
    the real videos of the same captions, on the classifier's penultimate features). `ablate`: each
    video is generated from the caption rolled in by `self.ablate` and scored against its own."""
    y, y_mask, labels, real = self.prompts(n)
    if ablate:
      rolled = self.ablate({"y": y, "y_mask": y_mask})
      y, y_mask = rolled["y"], rolled["y_mask"]
    videos = jax.device_get(
      self.sampler(model, cfg_scale)(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(seed))
    )
    pred = self.classifier.predict(videos)
    out = {f"{k}_accuracy": float(np.mean(pred[k] == labels[k])) for k in labels}
    out["fvd"] = fvd(videos, real, self.classifier.embed)
    return out

  def evaluate(self, model, params, ablate: bool = False):
    """Faithfulness with guidance (`_cfg`) and without (`_nocfg`), beside the classifier's accuracy on
    real clips and chance; with `ablate`, of guided samples for rolled captions only."""
    n = self.config.data.test_size
    if not n or self.config.data.name != "synthetic_cells":
      return {}
    out = {
      "classifier_direction_accuracy_real": self.classifier.heldout_accuracy["direction"],
      "classifier_count_accuracy_real": self.classifier.heldout_accuracy["count"],
      "chance_direction": 1.0 / len(cells.DIRECTIONS),
      "chance_count": 1.0 / self.config.data.max_count,
    }
    scales = {"cfg": self.config.diffusion.cfg_scale, "nocfg": 1.0}
    for name, scale in scales.items():
      if ablate and name != "cfg":
        continue
      r = self.faithfulness(model, params, scale, n, ablate=ablate)
      out.update({f"{k}_{name}": v for k, v in r.items()})
    return out


def sample_captions(
  task: BoraTask,
  model,
  params,
  captions,
  *,
  text_encoder: str,
  vae: str,
  cfg_scale: float,
  seed: int = 0,
  frames_per_call: int = 0,
) -> np.ndarray:
  """Open-Sora's sampling path: captions -> T5 (`text_encoder`, a HF T5 directory; cleaned as
  data.clean_captions) -> STDiT with the configured sampler and guidance -> SD-VAE decode (`vae`, a
  diffusers AutoencoderKL directory) -> videos [N, T, H, W, 3] in [-1, 1]."""
  from medjax.checkpoints.diffusers_vae import load_vae
  from medjax.checkpoints.hf_t5 import load_t5_encoder
  from medjax.models.vae import decode_video

  d, m = task.config.data, task.config.model
  if d.latent != "vae" or m.text_vocab_size:
    raise ValueError(
      f"data.latent / model.text_vocab_size: T5 captions and VAE decoding need 'vae' and 0, got "
      f"{d.latent!r} and {m.text_vocab_size}"
    )
  encoder = load_t5_encoder(text_encoder, max_len=d.max_text_len, clean=d.clean_captions)
  if encoder.width != m.caption_channels:
    raise ValueError(
      f"model.caption_channels: {m.caption_channels} != the text encoder's width {encoder.width}"
    )
  y, y_mask = encoder(list(captions))
  latents = task.sampler(model, cfg_scale)(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(seed))
  vae_model, vae_params = load_vae(vae)
  decode = jax.jit(functools.partial(decode_video, vae_model, batch_size=frames_per_call or None))
  return np.clip(np.asarray(decode(vae_params, latents)), -1.0, 1.0)
