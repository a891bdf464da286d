"""STDiT (Open-Sora v1.0 / Bora): a spatial-temporal diffusion transformer over video latents.

Latents [B, T, H, W, C] are cut into (1, 2, 2) patches -> tokens [B, T*S, D] (frame-major). Each block:
adaLN-single modulation (its own (6, D) table + the shared t0 = Linear(SiLU(t_emb))), spatial
self-attention over (B*T, S), temporal self-attention over (B*S, T), cross-attention to projected
text tokens (padding-masked), and a modulated, gated GELU-tanh MLP. A T2I final layer (its own (2, D)
table) and unpatchify give [B, T, H, W, C_out] (C_out = 2C with learned variance).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.nn.adaln import ScaleShiftTable, TimestepEmbedder, layer_norm_modulate, modulate
from medjax.nn.attention import Attention, attention_mask
from medjax.nn.mlp import MLP, activation, dense
from medjax.nn.norms import layer_norm
from medjax.nn.remat import REMAT_POLICIES, remat_name
from medjax.nn.rope import rope_frequencies

_TOKENS = ("act_batch", "act_length", "act_embed")
TEMPORAL_POS = ("sincos", "sincos_stream", "rope", "none")
NULL_CAPTION = ("buffer", "learned")


@dataclasses.dataclass(frozen=True)
class STDiTConfig:
  in_channels: int = 4
  patch_size: tuple = (1, 2, 2)
  hidden: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  learn_sigma: bool = True  # output 2 * in_channels (eps and variance interpolation)
  caption_channels: int = 4096  # text embedding width (T5-XXL: 4096)
  max_text_len: int = 120
  caption_dropout: float = 0.1  # training-time prob of replacing the caption by the null embedding
  # "buffer" (v1.0): a fixed random null caption that gets no gradient and keeps the caption's
  # padding mask; "learned": a trained null caption, visible in full.
  null_caption: str = "buffer"
  text_vocab_size: int = 0  # > 0: captions are token ids embedded by a learned table
  temporal_attention: bool = True
  # "sincos": added to block 0's temporal-attention input (v1.0); "sincos_stream": added to the tokens with
  # the spatial embedding, so every block sees each token's frame (as Latte); "rope" (v1.1+) | "none".
  temporal_pos: str = "sincos"
  # Sin-cos positions: spatial i * (space_base_size / grid) / space_scale (v1.0's PixArt embedding;
  # space_base_size 0: the patch grid itself), temporal i / time_scale.
  space_scale: float = 1.0
  space_base_size: int = 0
  time_scale: float = 1.0
  qk_norm: bool = False
  rope_theta: float = 10000.0
  # Rematerialise each block: a medjax.nn.remat.REMAT_POLICIES name, what the block keeps for the
  # backward pass ("full": nothing, v1.0's checkpointing; "dots_no_batch": the projection and MLP
  # matmul outputs, attention and elementwise work recomputed); True / False: "full" / "none".
  remat: str = "none"
  # LayerNorm and adaLN modulation as one float32 expression, rounded to `dtype` once (the default
  # rounds the normalised tokens, then modulates in `dtype`; the same to float32 rounding).
  fused_modulation: bool = False
  attention_impl: str = "xla"
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "remat", remat_name(self.remat))

  @property
  def out_channels(self):
    return self.in_channels * (2 if self.learn_sigma else 1)


PRESETS = {
  "tiny": STDiTConfig(
    in_channels=1,
    patch_size=(1, 2, 2),
    hidden=64,
    depth=2,
    num_heads=4,
    caption_channels=32,
    max_text_len=8,
    text_vocab_size=32,
    null_caption="learned",
  ),
  "STDiT-XL/2": STDiTConfig(space_base_size=16),  # v1.0's PixArt base grid (256 px / 8 / 2)
}


def stdit_config(preset: str, **overrides) -> STDiTConfig:
  if preset not in PRESETS:
    raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
  return dataclasses.replace(PRESETS[preset], **overrides)


def sincos_1d(dim: int, pos) -> np.ndarray:
  """[len(pos), dim]: [sin, cos] of pos times 1/10000^(i/(dim/2))."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.asarray(pos, np.float64).reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(
  dim: int, grid_h: int, grid_w: int, scale: float = 1.0, base_size: int = 0
) -> np.ndarray:
  """[grid_h*grid_w, dim] (row-major): first half encodes the column, second half the row (MAE
  layout), at positions i * (base_size / grid) / scale (base_size 0: the grid itself)."""
  pos = lambda g: np.arange(g, dtype=np.float64) * ((base_size or g) / g) / scale
  w, h = np.meshgrid(pos(grid_w), pos(grid_h))
  return np.concatenate([sincos_1d(dim // 2, w), sincos_1d(dim // 2, h)], axis=1)


class PatchEmbed3D(nn.Module):
  """[B, T, H, W, C] -> [B, T/pt, (H/ph)*(W/pw), D]: a strided conv written as reshape + einsum."""

  patch_size: tuple
  hidden: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, h, w, c = x.shape
    pt, ph, pw = self.patch_size
    x = x.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = x.reshape(b, t // pt, (h // ph) * (w // pw), pt, ph, pw, c)
    init = nn.initializers.variance_scaling(
      1.0, "fan_avg", "uniform", in_axis=(0, 1, 2, 3), out_axis=4
    )
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(init, (None, None, None, None, "embed")),
      (pt, ph, pw, c, self.hidden),
      self.param_dtype,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (self.hidden,),
      self.param_dtype,
    )
    return jnp.einsum(
      "btsijkc,ijkcd->btsd", x.astype(self.dtype), kernel.astype(self.dtype)
    ) + bias.astype(self.dtype)


class CaptionEmbedder(nn.Module):
  """Text [B, L, Dtext] (or ids [B, L]) -> [B, L, D] via a GELU-tanh MLP; dropped captions use the null
  embedding [L, Dtext] (classifier-free guidance), fixed (no gradient) when cfg.null_caption is
  "buffer" as v1.0's `y_embedding` buffer."""

  cfg: STDiTConfig

  @nn.compact
  def __call__(self, y, drop):
    cfg, dt, pdt = self.cfg, jnp.dtype(self.cfg.dtype), jnp.dtype(self.cfg.param_dtype)
    if cfg.text_vocab_size:
      table = self.param(
        "token_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", None)),
        (cfg.text_vocab_size, cfg.caption_channels),
        pdt,
      )
      y = jnp.take(table, y, axis=0)
    null_init = lambda key, shape, dtype: (
      jax.random.normal(key, shape, dtype) / cfg.caption_channels**0.5
    )
    null = self.param(
      "null_embedding",
      nn.with_logical_partitioning(null_init, (None, None)),
      (cfg.max_text_len, cfg.caption_channels),
      pdt,
    )
    if cfg.null_caption == "buffer":
      null = jax.lax.stop_gradient(null)
    y = jnp.where(drop[:, None, None], null[None, : y.shape[1]].astype(y.dtype), y)
    init = nn.initializers.normal(0.02)
    y = dense(cfg.hidden, (None, "embed"), "fc1", dt, pdt, True, init)(y)
    return dense(cfg.hidden, ("mlp", "embed"), "fc2", dt, pdt, True, init)(
      activation("gelu_tanh")(y)
    )


class STDiTBlock(nn.Module):
  cfg: STDiTConfig

  @nn.compact
  def __call__(self, x, t0, y, y_mask, num_frames, tpe=None, rope=None):
    """x [B, T*S, D]; t0 [B, 6D]; y [B, L, D]; y_mask [B, 1, 1, L]; tpe [T, D] or None."""
    cfg, dt, pdt = self.cfg, jnp.dtype(self.cfg.dtype), jnp.dtype(self.cfg.param_dtype)
    b, n, d = x.shape
    t_len, s_len = num_frames, n // num_frames
    attn = lambda name, **kw: Attention(
      cfg.num_heads,
      use_bias=True,
      qk_norm=cfg.qk_norm,
      implementation=cfg.attention_impl,
      dtype=dt,
      param_dtype=pdt,
      name=name,
      **kw,
    )
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ScaleShiftTable(
      6, name="scale_shift_table"
    )(t0)

    def norm_modulate(name, h, shift, scale):
      if cfg.fused_modulation:
        return layer_norm_modulate(h, shift, scale, dtype=dt)
      return modulate(layer_norm(name, dtype=dt, affine=False)(h), shift, scale)

    # Spatial attention: each frame's S tokens attend to each other.
    x_m = norm_modulate("norm1", x, shift_msa, scale_msa)
    x_s = attn("attn")(x_m.reshape(b * t_len, s_len, d)).reshape(b, n, d)
    x = nn.with_logical_constraint(x + gate_msa * x_s, _TOKENS)

    # Temporal attention: each spatial position attends across frames (unmodulated input, gate_msa).
    if cfg.temporal_attention:
      x_t = x.reshape(b, t_len, s_len, d).transpose(0, 2, 1, 3).reshape(b * s_len, t_len, d)
      if tpe is not None:
        x_t = x_t + tpe[None].astype(x_t.dtype)
      pos = None if rope is None else jnp.broadcast_to(jnp.arange(t_len)[None], (b * s_len, t_len))
      x_t = attn("attn_temp", zero_init_out=True)(x_t, positions=pos, inv_freq=rope)
      x_t = x_t.reshape(b, s_len, t_len, d).transpose(0, 2, 1, 3).reshape(b, n, d)
      x = nn.with_logical_constraint(x + gate_msa * x_t, _TOKENS)

    # Cross-attention to the caption tokens (no modulation, as in PixArt).
    x = x + attn("cross_attn", zero_init_out=True)(x, context=y, mask=y_mask)

    # Modulated, gated MLP.
    h = norm_modulate("norm2", x, shift_mlp, scale_mlp)
    h = MLP(
      int(d * cfg.mlp_ratio),
      "gelu_tanh",
      use_bias=True,
      kernel_init=nn.initializers.xavier_uniform(),
      dtype=dt,
      param_dtype=pdt,
      name="mlp",
    )(h)
    return nn.with_logical_constraint(x + gate_mlp * h, _TOKENS)


class STDiT(nn.Module):
  """__call__(x [B,T,H,W,C], timesteps [B], y [B,L,Dtext] or ids [B,L], y_mask [B,L], *, train,
  drop_caption [B] bool) -> [B,T,H,W,C_out]. `train` with caption_dropout > 0 needs a 'dropout' rng."""

  cfg: STDiTConfig

  def _check(self, x, y, y_mask):
    cfg = self.cfg
    if cfg.temporal_pos not in TEMPORAL_POS:
      raise ValueError(f"temporal_pos: expected one of {TEMPORAL_POS}, got {cfg.temporal_pos!r}")
    if cfg.null_caption not in NULL_CAPTION:
      raise ValueError(f"null_caption: expected one of {NULL_CAPTION}, got {cfg.null_caption!r}")
    if not (cfg.space_scale > 0 and cfg.time_scale > 0 and cfg.space_base_size >= 0):
      raise ValueError(
        f"space_scale, time_scale, space_base_size: expected > 0, > 0, >= 0, got "
        f"{cfg.space_scale}, {cfg.time_scale}, {cfg.space_base_size}"
      )
    if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
      raise ValueError(f"x: expected [B, T, H, W, {cfg.in_channels}], got {x.shape}")
    if any(s % p for s, p in zip(x.shape[1:4], cfg.patch_size)):
      raise ValueError(
        f"x: (T, H, W) = {x.shape[1:4]} must be divisible by patch_size {cfg.patch_size}"
      )
    want = (
      (x.shape[0], y.shape[1])
      if cfg.text_vocab_size
      else (x.shape[0], y.shape[1], cfg.caption_channels)
    )
    if y.shape != want or y.shape[1] > cfg.max_text_len:
      raise ValueError(
        f"y: expected {'ids [B, L]' if cfg.text_vocab_size else '[B, L, Dtext]'} = {want} with "
        f"L <= {cfg.max_text_len}, got {y.shape}"
      )
    if y_mask is not None and y_mask.shape != y.shape[:2]:
      raise ValueError(f"y_mask: expected {y.shape[:2]}, got {y_mask.shape}")

  @nn.compact
  def __call__(self, x, timesteps, y, y_mask=None, *, train: bool = False, drop_caption=None):
    cfg, dt, pdt = self.cfg, jnp.dtype(self.cfg.dtype), jnp.dtype(self.cfg.param_dtype)
    self._check(x, y, y_mask)
    b, t, h, w, _ = x.shape
    pt, ph, pw = cfg.patch_size
    nt, nh, nw = t // pt, h // ph, w // pw
    d = cfg.hidden

    tokens = PatchEmbed3D(cfg.patch_size, d, dt, pdt, name="x_embedder")(x)  # [B, nt, S, D]
    spatial = sincos_2d(d, nh, nw, cfg.space_scale, cfg.space_base_size)
    tokens = tokens + jnp.asarray(spatial, dt)[None, None]
    frame_pos = jnp.asarray(sincos_1d(d, np.arange(nt) / cfg.time_scale), dt)  # [nt, D]
    if cfg.temporal_pos == "sincos_stream":
      tokens = tokens + frame_pos[None, :, None]
    tokens = nn.with_logical_constraint(tokens.reshape(b, nt * nh * nw, d), _TOKENS)

    temb = TimestepEmbedder(d, dtype=dt, param_dtype=pdt, name="t_embedder")(timesteps)
    t0 = dense(6 * d, ("embed", "mlp"), "t_block", dt, pdt, True, nn.initializers.normal(0.02))(
      jax.nn.silu(temb)
    )

    drop = jnp.zeros((b,), bool) if drop_caption is None else drop_caption.astype(bool)
    if train and cfg.caption_dropout > 0:
      drop |= jax.random.bernoulli(self.make_rng("dropout"), cfg.caption_dropout, (b,))
    y_valid = jnp.ones(y.shape[:2], bool) if y_mask is None else y_mask.astype(bool)
    if cfg.null_caption == "learned":
      y_valid |= drop[:, None]  # the learned null caption is visible in full
    y_emb = CaptionEmbedder(cfg, name="y_embedder")(y, drop)
    q_pos = jnp.zeros((b, 1), jnp.int32)
    y_attn_mask = attention_mask(
      q_pos, jnp.zeros(y.shape[:2], jnp.int32), y_valid, causal=False
    )  # [B,1,1,L]

    tpe = frame_pos if cfg.temporal_pos == "sincos" else None
    rope = (
      rope_frequencies(d // cfg.num_heads, cfg.rope_theta) if cfg.temporal_pos == "rope" else None
    )
    block_cls = STDiTBlock
    if cfg.remat != "none":
      policy = REMAT_POLICIES[cfg.remat]
      block_cls = nn.remat(STDiTBlock, static_argnums=(5,), policy=policy)
    for i in range(cfg.depth):
      tokens = block_cls(cfg, name=f"block_{i}")(
        tokens, t0, y_emb, y_attn_mask, nt, tpe if i == 0 else None, rope
      )

    shift, scale = ScaleShiftTable(2, shared=True, name="final_scale_shift_table")(temb)
    out = modulate(layer_norm("norm_final", dtype=dt, affine=False)(tokens), shift, scale)
    out = dense(
      pt * ph * pw * cfg.out_channels,
      ("embed", None),
      "final_linear",
      dt,
      pdt,
      True,
      nn.initializers.zeros,
    )(out)
    out = out.reshape(b, nt, nh, nw, pt, ph, pw, cfg.out_channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return out.reshape(b, t, h, w, cfg.out_channels).astype(jnp.float32)


def train_flops(cfg: STDiTConfig, video_shape, text_len: int) -> float:
  """Training FLOPs of an STDiT step on latents [B, T, H, W, C] with `text_len` caption tokens.

  Forward matmul FLOPs are 2 x the weights each token meets: per block and video token the spatial
  and temporal attention projections (4 D^2 each), cross-attention q/out (2 D^2) and the MLP
  (2 r D^2); per text token the cross-attention k/v (2 D^2); plus 4 D per (query, key) pair over S
  spatial, F temporal and L text keys. Training = 3 x forward; embedders and the final layer are
  omitted (< 1% at XL/2).
  """
  b, t, h, w, _ = video_shape
  f, s = t // cfg.patch_size[0], (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
  d, tokens = cfg.hidden, f * s
  mlp = 2 * int(cfg.mlp_ratio * d) * d
  temporal = cfg.temporal_attention
  proj = tokens * (2 * (4 + 4 * temporal + 2) * d * d + 2 * mlp) + text_len * 4 * d * d
  attn = 4 * d * tokens * (s + temporal * f + text_len)
  return 3.0 * b * cfg.depth * (proj + attn)
