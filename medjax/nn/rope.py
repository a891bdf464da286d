"""Rotary position embeddings, including the Llama-3 frequency scaling rule."""

import math

import jax.numpy as jnp
import numpy as np


def rope_frequencies(head_dim: int, theta: float, scaling=None) -> np.ndarray:
  """Inverse frequencies [head_dim // 2]; `scaling` follows HF `rope_scaling` (llama3 or linear)."""
  scaling = dict(scaling) if scaling else None
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if not scaling:
    return inv.astype(np.float32)
  kind = scaling.get("rope_type", scaling.get("type"))
  if kind == "linear":
    return (inv / scaling["factor"]).astype(np.float32)
  if kind == "llama3":
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - lo) / (hi - lo)
    scaled = np.where(wavelen > old_len / lo, inv / factor, inv)
    mid = (wavelen <= old_len / lo) & (wavelen >= old_len / hi)
    scaled = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return scaled.astype(np.float32)
  raise ValueError(f"rope_scaling.rope_type: expected 'llama3' or 'linear', got {kind!r}")


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq) -> jnp.ndarray:
  """Rotates x [B, T, H, D] by positions [B, T] (HF 'rotate_half' layout)."""
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
