"""Stable-Diffusion VAE (diffusers `AutoencoderKL`) in Flax, applied frame by frame to videos.

Images are channels-last [N, H, W, C] in [-1, 1]. The encoder (conv_in, down blocks of ResNet blocks
with GroupNorm + SiLU and strided-conv downsampling, a mid block with one single-head self-attention,
GroupNorm + SiLU + conv_out, quant_conv) gives the mean and log-variance of a diagonal Gaussian over
latents [N, H/f, W/f, latent_channels], f = 2**(len(block_out_channels) - 1). The decoder mirrors it with
nearest-neighbour upsampling. Latents are returned unscaled; diffusion multiplies them by
`scaling_factor` (0.18215 for SD) and divides generated latents by it before `decode`.
Submodule names follow diffusers (`down_blocks_0` <-> `down_blocks.0`), see checkpoints/diffusers_vae.py.
The VAE is frozen in this codebase, so its params are replicated (no logical axis names).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.nn.attention import Attention


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  dtype: str = "float32"

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)


PRESETS = {"sd-vae": VAEConfig()}  # stabilityai/sd-vae-ft-ema (Open-Sora v1.0 / Bora), 83.7M params


def _conv(features, kernel, name, dtype, stride=1, padding=None):
  """A kernel x kernel conv, padded by kernel // 2 on each side unless `padding` is given."""
  pad = ((kernel // 2, kernel // 2),) * 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=pad, dtype=dtype, name=name)


def _group_norm(groups, name, dtype):
  return nn.GroupNorm(
    num_groups=groups, epsilon=1e-6, use_fast_variance=False, dtype=dtype, name=name
  )


class ResnetBlock(nn.Module):
  """x + conv2(silu(norm2(conv1(silu(norm1(x)))))) with a 1x1 `conv_shortcut` when channels change."""

  features: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = _conv(self.features, 3, "conv1", self.dtype)(
      nn.silu(_group_norm(self.groups, "norm1", self.dtype)(x))
    )
    h = _conv(self.features, 3, "conv2", self.dtype)(
      nn.silu(_group_norm(self.groups, "norm2", self.dtype)(h))
    )
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, "conv_shortcut", self.dtype)(x)
    return x + h


class AttentionBlock(nn.Module):
  """GroupNorm -> single-head self-attention over the H*W positions -> residual."""

  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    tokens = _group_norm(self.groups, "group_norm", self.dtype)(x).reshape(n, h * w, c)
    out = Attention(1, use_bias=True, dtype=self.dtype, name="attention")(tokens)
    return x + out.reshape(n, h, w, c)


class MidBlock(nn.Module):
  """resnets_0 -> attentions_0 (optional) -> resnets_1."""

  groups: int
  attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = ResnetBlock(c, self.groups, self.dtype, name="resnets_0")(x)
    if self.attention:
      x = AttentionBlock(self.groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock(c, self.groups, self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
  config: VAEConfig

  @nn.compact
  def __call__(self, x):
    cfg, dtype = self.config, jnp.dtype(self.config.dtype)
    x = _conv(cfg.block_out_channels[0], 3, "conv_in", dtype)(x)
    for i, ch in enumerate(cfg.block_out_channels):
      for j in range(cfg.layers_per_block):
        x = ResnetBlock(ch, cfg.norm_num_groups, dtype, name=f"down_blocks_{i}_resnets_{j}")(x)
      if i < len(cfg.block_out_channels) - 1:  # diffusers pads (0, 1, 0, 1), then a stride-2 conv
        x = _conv(ch, 3, f"down_blocks_{i}_downsamplers_0_conv", dtype, 2, ((0, 1), (0, 1)))(x)
    x = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, dtype, name="mid_block")(x)
    x = nn.silu(_group_norm(cfg.norm_num_groups, "conv_norm_out", dtype)(x))
    return _conv(2 * cfg.latent_channels, 3, "conv_out", dtype)(x)


class Decoder(nn.Module):
  config: VAEConfig

  @nn.compact
  def __call__(self, z):
    cfg, dtype = self.config, jnp.dtype(self.config.dtype)
    chans = tuple(reversed(cfg.block_out_channels))
    x = _conv(chans[0], 3, "conv_in", dtype)(z)
    x = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, dtype, name="mid_block")(x)
    for i, ch in enumerate(chans):
      for j in range(cfg.layers_per_block + 1):
        x = ResnetBlock(ch, cfg.norm_num_groups, dtype, name=f"up_blocks_{i}_resnets_{j}")(x)
      if i < len(chans) - 1:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour 2x
        x = _conv(ch, 3, f"up_blocks_{i}_upsamplers_0_conv", dtype)(x)
    x = nn.silu(_group_norm(cfg.norm_num_groups, "conv_norm_out", dtype)(x))
    return _conv(cfg.out_channels, 3, "conv_out", dtype)(x)


class AutoencoderKL(nn.Module):
  """`encode` x [N, H, W, in_channels] -> (mean, logvar) [N, H/f, W/f, latent_channels];
  `decode` z -> [N, H, W, out_channels]; `__call__` reconstructs (from the mean, or a sample given `rng`)."""

  config: VAEConfig

  def setup(self):
    cfg, dtype = self.config, jnp.dtype(self.config.dtype)
    self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
    if cfg.use_quant_conv:
      self.quant_conv = _conv(2 * cfg.latent_channels, 1, None, dtype)
    if cfg.use_post_quant_conv:
      self.post_quant_conv = _conv(cfg.latent_channels, 1, None, dtype)

  def _check(self, name, x, channels, multiple):
    if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % multiple or x.shape[2] % multiple:
      raise ValueError(
        f"{name}: expected [N, H, W, {channels}] with H and W multiples of {multiple}, got shape "
        f"{tuple(x.shape)}"
      )

  def encode(self, x):
    cfg = self.config
    self._check("x", x, cfg.in_channels, cfg.downsample_factor)
    moments = self.encoder(x)
    if cfg.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    self._check("z", z, self.config.latent_channels, 1)
    if self.config.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x, rng=None):
    mean, logvar = self.encode(x)
    return self.decode(mean if rng is None else sample_posterior(mean, logvar, rng))


def sample_posterior(mean, logvar, rng):
  """A sample of the diagonal Gaussian N(mean, exp(logvar))."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def _frames(fn, video, name, batch_size):
  """Applies `fn` [N, H, W, C] -> [N, h, w, c] to the frames of video [B, T, H, W, C], `batch_size` frames
  at a time (all at once if None)."""
  if video.ndim != 5:
    raise ValueError(
      f"{name}: expected a video batch [B, T, H, W, C], got shape {tuple(video.shape)}"
    )
  b, t = video.shape[:2]
  frames = video.reshape((b * t,) + video.shape[2:])
  n = b * t
  if batch_size is None or batch_size >= n:
    out = fn(frames)
  else:  # sequential chunks of `batch_size` frames (the last one zero-padded)
    chunks = -(-n // batch_size)
    frames = jnp.pad(frames, ((0, chunks * batch_size - n),) + ((0, 0),) * 3)
    out = jax.lax.map(fn, frames.reshape((chunks, batch_size) + frames.shape[1:]))
    out = out.reshape((chunks * batch_size,) + out.shape[2:])[:n]
  return out.reshape((b, t) + out.shape[1:])


def encode_video(vae: AutoencoderKL, params, video, rng=None, batch_size=None):
  """video [B, T, H, W, C] in [-1, 1] -> unscaled latents [B, T, H/f, W/f, latent_channels], encoded frame by
  frame: the posterior mean, or a posterior sample when `rng` is given (Open-Sora samples)."""

  def encode(frames):
    return jnp.concatenate(
      vae.apply({"params": params}, frames, method=AutoencoderKL.encode), axis=-1
    )

  mean, logvar = jnp.split(_frames(encode, video, "video", batch_size), 2, axis=-1)
  return mean if rng is None else sample_posterior(mean, logvar, rng)


def decode_video(vae: AutoencoderKL, params, latents, batch_size=None):
  """Unscaled latents [B, T, h, w, latent_channels] -> videos [B, T, h*f, w*f, out_channels], frame by frame."""
  decode = lambda z: vae.apply({"params": params}, z, method=AutoencoderKL.decode)
  return _frames(decode, latents, "latents", batch_size)
