"""Vision Transformer for 2D images and 3D volumes / videos.

ViT(cfg)(images [B,H,W,C] or volumes [B,D,H,W,C]) -> {"tokens": [B,N,width], "pooled": [B,width]}.
Pre-LN blocks, GELU MLP, learned or sin-cos position embeddings, MAP / GAP / CLS pooling (SigLIP,
ViT, PaliGemma style) and optional average pooling of the output token grid. A volume or video is
either tubelet-embedded (`patch_embed="3d"`; `inflate_2d_to_3d` turns a 2D checkpoint into such a
tower, ViViT-style) or a sequence of frames (`patch_embed="frames"`, Gemini-style): each frame goes
through the 2D tower (the same parameters as a 2D ViT, so a 2D checkpoint loads as it is) and its
tokens, in frame order, carry a sin-cos embedding of the frame index.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from medjax.nn import flops
from medjax.nn.dtypes import DTYPES
from medjax.nn.patch import PatchEmbed, sincos_1d, sincos_2d
from medjax.nn.transformer import Encoder, MAPHead

POOLS = ("map", "gap", "cls", "none")


def _pair(v):
  return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Architecture of a ViT. 3D (`patch_embed="3d"`) inputs are [B, frames, H, W, C]."""

  image_size: Any = 32  # int or (H, W)
  patch_size: Any = 4  # int or (ph, pw)
  channels: int = 1
  width: int = 64
  depth: int = 2
  heads: int = 4
  mlp_dim: int = 128
  pool: str = "map"  # map | gap | cls | none
  posemb: str = "learn"  # learn | sincos (spatial); 3D adds a learned, zero-initialised time table
  patch_embed: str = "2d"  # 2d | 3d (tubelets) | frames (each frame by the 2D tower)
  frames: int = 8  # 3D / frames: slices / frames per volume
  tubelet: int = 2  # 3D: depth of a tubelet (patch size along frames)
  token_pool: int = 1  # average-pool the output token grid by this factor in H and W
  token_pool_time: int = 1  # 3D: ... and along frames
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  # medjax pipelines give pixels in [0, 1]; the tower maps them linearly onto the range its weights
  # were trained on (SigLIP: (-1, 1), i.e. its processor's mean 0.5 / std 0.5) before patching.
  input_range: tuple = (0.0, 1.0)
  remat: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name, allowed in (
      ("pool", POOLS),
      ("posemb", ("learn", "sincos")),
      ("patch_embed", ("2d", "3d", "frames")),
      ("dtype", tuple(DTYPES)),
      ("param_dtype", tuple(DTYPES)),
    ):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")
    size, patch = _pair(self.image_size), _pair(self.patch_size)
    if any(s % p for s, p in zip(size, patch)):
      raise ValueError(f"image_size: expected a multiple of patch_size {patch}, got {size}")
    if self.width % self.heads:
      raise ValueError(f"width: expected a multiple of heads ({self.heads}), got {self.width}")
    if self.is_3d and self.frames % self.tubelet:
      raise ValueError(
        f"frames: expected a multiple of tubelet ({self.tubelet}), got {self.frames}"
      )
    object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
    if len(self.input_range) != 2 or not self.input_range[0] < self.input_range[1]:
      raise ValueError(f"input_range: expected (low, high) with low < high, got {self.input_range}")
    grid = self.grid
    pool = self.pool_window
    if any(g % p for g, p in zip(grid, pool)):
      raise ValueError(
        f"token_pool: patch grid {grid} is not divisible by the pooling window {pool}"
      )

  @property
  def is_3d(self) -> bool:
    """Tubelet-embedded: the parameters are a 3D tower's."""
    return self.patch_embed == "3d"

  @property
  def takes_frames(self) -> bool:
    """Inputs have a frames axis: [B, frames, H, W, C]."""
    return self.patch_embed != "2d"

  @property
  def patch(self) -> tuple:
    return ((self.tubelet,) if self.is_3d else ()) + _pair(self.patch_size)

  @property
  def input_shape(self) -> tuple:
    """Per-example input shape, e.g. (H, W, C) or (frames, H, W, C)."""
    return ((self.frames,) if self.takes_frames else ()) + _pair(self.image_size) + (self.channels,)

  @property
  def grid(self) -> tuple:
    """The patch grid of one example (of one frame for `patch_embed="frames"`)."""
    spatial = self.input_shape[:-1][1:] if self.patch_embed == "frames" else self.input_shape[:-1]
    return tuple(s // p for s, p in zip(spatial, self.patch))

  @property
  def pool_window(self) -> tuple:
    return ((self.token_pool_time,) if self.is_3d else ()) + (self.token_pool,) * 2

  @property
  def num_tokens(self) -> int:
    """Output tokens per example (after token pooling; all frames for `patch_embed="frames"`)."""
    per = int(np.prod(self.grid) // np.prod(self.pool_window))
    return per * self.frames if self.patch_embed == "frames" else per


PRESETS = {
  "tiny": ViTConfig(),
  "tiny3d": ViTConfig(patch_embed="3d", frames=8, tubelet=2),
  # SigLIP So400m/14 (PaliGemma's vision tower): 224 px -> 16 x 16 = 256 tokens.
  "so400m-14": ViTConfig(
    image_size=224,
    patch_size=14,
    channels=3,
    width=1152,
    depth=27,
    heads=16,
    mlp_dim=4304,
    pool="map",
    input_range=(-1.0, 1.0),
  ),
  # ViT-B/16 (Dosovitskiy et al.): class token, exact GELU; the public checkpoints' LayerNorm eps
  # and pixel normalisation (mean 0.5, std 0.5: inputs in (-1, 1)).
  "b16": ViTConfig(
    image_size=224,
    patch_size=16,
    channels=3,
    width=768,
    depth=12,
    heads=12,
    mlp_dim=3072,
    pool="cls",
    act="gelu",
    norm_eps=1e-12,
    input_range=(-1.0, 1.0),
  ),
}


def vit_config(preset: str = "tiny", **overrides) -> ViTConfig:
  if preset not in PRESETS:
    raise ValueError(f"ViT preset: expected one of {sorted(PRESETS)}, got {preset!r}")
  return dataclasses.replace(PRESETS[preset], **overrides)


class ViT(nn.Module):
  """images [B,H,W,C] (2D) or [B,frames,H,W,C] (3D) -> {"tokens": [B,N,D], "pooled": [B,D] or None}.

  `pooled` is None for pool="none". `train` is accepted for interface symmetry (no dropout).
  """

  cfg: ViTConfig

  def _check(self, x):
    cfg = self.cfg
    want = cfg.input_shape
    names = (
      "[batch, frames, height, width, channels]"
      if cfg.takes_frames
      else "[batch, height, width, channels]"
    )
    if x.ndim != len(want) + 1:
      raise ValueError(f"images: expected rank {len(want) + 1} {names}, got shape {x.shape}")
    if x.shape[-1] != cfg.channels:
      raise ValueError(
        f"images: expected {cfg.channels} channels (last axis), got {x.shape[-1]} (shape {x.shape})"
      )
    spatial = x.shape[1:-1][-len(cfg.patch) :]
    if any(s % p for s, p in zip(spatial, cfg.patch)):
      raise ValueError(f"images: spatial size {spatial} is not divisible by the patch {cfg.patch}")
    if cfg.posemb == "learn" and spatial != want[:-1][-len(cfg.patch) :]:
      raise ValueError(
        f"images: expected spatial size {want[:-1]} (learned position embeddings), got "
        f"{x.shape[1:-1]}"
      )
    if cfg.takes_frames and x.shape[1] != cfg.frames:
      raise ValueError(f"images: expected {cfg.frames} frames, got {x.shape[1]}")

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    cfg = self.cfg
    dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
    self._check(images)
    frames = cfg.frames if cfg.patch_embed == "frames" else 0
    if frames:  # every frame through the 2D tower
      b0 = images.shape[0]
      images = images.reshape((b0 * frames,) + images.shape[2:])
    lo, hi = cfg.input_range
    if (lo, hi) != (0.0, 1.0):
      images = images * (hi - lo) + lo
    x = PatchEmbed(cfg.width, cfg.patch, dtype, pdtype, name="patch_embed")(images.astype(dtype))
    b, grid = x.shape[0], x.shape[1:-1]
    hw = grid[-2:]
    if cfg.posemb == "learn":
      pos = self.param(
        "pos_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed")),
        (1, hw[0] * hw[1], cfg.width),
        pdtype,
      )
    else:
      pos = jnp.asarray(sincos_2d(hw[0], hw[1], cfg.width))[None]
    x = x.reshape(b, -1, hw[0] * hw[1], cfg.width) + pos[:, None].astype(dtype)
    if cfg.is_3d:
      time = self.param(
        "time_embedding",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
        (1, grid[0], cfg.width),
        pdtype,
      )
      x = x + time[:, :, None].astype(dtype)
    x = x.reshape(b, -1, cfg.width)
    if cfg.pool == "cls":
      cls = self.param(
        "cls",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
        (1, 1, cfg.width),
        pdtype,
      )
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, cfg.width)), x], axis=1)
    x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
    x = Encoder(
      cfg.depth,
      cfg.heads,
      cfg.mlp_dim,
      cfg.act,
      cfg.norm_eps,
      cfg.remat,
      dtype,
      pdtype,
      name="encoder",
    )(x)
    if cfg.pool == "cls":
      pooled, x = x[:, 0], x[:, 1:]
    elif cfg.pool == "gap":
      pooled = jnp.mean(x, axis=1)
    elif cfg.pool == "map":
      pooled = MAPHead(cfg.heads, cfg.mlp_dim, cfg.act, cfg.norm_eps, dtype, pdtype, name="head")(x)
    else:
      pooled = None
    if any(w > 1 for w in cfg.pool_window):
      window = cfg.pool_window
      x = nn.avg_pool(x.reshape((b,) + tuple(grid) + (cfg.width,)), window, strides=window)
      x = x.reshape(b, -1, cfg.width)
    if frames:  # frame order, each frame's tokens marked with its index
      index = jnp.asarray(sincos_1d(frames, cfg.width), x.dtype)
      x = (x.reshape(b0, frames, -1, cfg.width) + index[None, :, None]).reshape(b0, -1, cfg.width)
      pooled = None if pooled is None else pooled.reshape(b0, frames, -1).mean(1)
    return {"tokens": x, "pooled": pooled}


def forward_flops(cfg: ViTConfig, batch: int) -> float:
  """Forward matmul FLOPs of the tower on `batch` inputs (`medjax.nn.flops`): patch embedding, the
  encoder blocks (per frame for patch_embed="frames"; a class token adds one) and the MAP head."""
  n = int(np.prod(cfg.grid))
  per = flops.dense(n, int(np.prod(cfg.patch)) * cfg.channels, cfg.width)
  per += flops.encoder(n + (cfg.pool == "cls"), cfg.width, cfg.mlp_dim, cfg.depth)
  if cfg.pool == "map":
    per += flops.attention(1, n, cfg.width) + flops.mlp(1, cfg.width, cfg.mlp_dim)
  return batch * (cfg.frames if cfg.patch_embed == "frames" else 1) * per


def inflate_2d_to_3d(
  params_2d, depth_patch: int, *, frames: int | None = None, method: str = "central"
):
  """2D ViT params -> params of the same ViT with `patch_embed="3d"`, `tubelet=depth_patch`.

  method "central": the 2D patch kernel goes to the central tubelet frame, zeros elsewhere;
  "mean": the 2D kernel / depth_patch on every frame. Either way a volume of identical slices gets
  the 2D patch embeddings, and (with the zero time embedding) the same pooled features as the 2D
  encoder on one slice for pool "map"/"gap". `frames` sizes the time embedding (frames //
  depth_patch entries); without it the caller supplies `time_embedding`. Returns unboxed params.
  """
  if method not in ("central", "mean"):
    raise ValueError(f"method: expected 'central' or 'mean', got {method!r}")
  if depth_patch < 1:
    raise ValueError(f"depth_patch: expected a positive int, got {depth_patch}")
  params = dict(nn.meta.unbox(params_2d))
  if "patch_embed" not in params or params["patch_embed"]["kernel"].ndim != 4:
    got = None if "patch_embed" not in params else params["patch_embed"]["kernel"].shape
    raise ValueError(f"params_2d: expected a 2D ViT patch_embed kernel [ph, pw, C, D], got {got}")
  k = jnp.asarray(params["patch_embed"]["kernel"])
  if method == "mean":
    k3 = jnp.broadcast_to(k / depth_patch, (depth_patch,) + k.shape)
  else:
    k3 = jnp.zeros((depth_patch,) + k.shape, k.dtype).at[depth_patch // 2].set(k)
  params["patch_embed"] = {**params["patch_embed"], "kernel": k3}
  if frames is not None:
    if frames % depth_patch:
      raise ValueError(f"frames: expected a multiple of depth_patch ({depth_patch}), got {frames}")
    params["time_embedding"] = jnp.zeros((1, frames // depth_patch, k.shape[-1]), k.dtype)
  return params
