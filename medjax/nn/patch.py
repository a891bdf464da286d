"""Patch / tubelet embeddings and sin-cos position tables."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


class PatchEmbed(nn.Module):
  """Non-overlapping patches -> linear projection (a strided conv written as reshape + einsum).

  x [B, *spatial, C] with len(spatial) == len(patch) -> [B, *grid, features]. The kernel has the
  conv layout [*patch, C, features] (HWIO / DHWIO), so 2D kernels can be inflated to 3D.
  """

  features: int
  patch: tuple
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    nd = len(self.patch)
    spatial, c = x.shape[1:-1], x.shape[-1]
    grid = tuple(s // p for s, p in zip(spatial, self.patch))
    # [B, g0, p0, g1, p1, ..., C] -> [B, g0, g1, ..., p0, p1, ..., C]
    x = x.reshape((x.shape[0],) + sum(((g, p) for g, p in zip(grid, self.patch)), ()) + (c,))
    perm = (
      (0,)
      + tuple(1 + 2 * i for i in range(nd))
      + tuple(2 + 2 * i for i in range(nd))
      + (2 * nd + 1,)
    )
    x = x.transpose(perm)
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(
        nn.initializers.lecun_normal(in_axis=tuple(range(nd + 1)), out_axis=-1),
        (None,) * (nd + 1) + ("embed",),
      ),
      tuple(self.patch) + (c, self.features),
      self.param_dtype,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (self.features,),
      self.param_dtype,
    )
    letters = "pqrs"[:nd]
    y = jnp.einsum(
      f"...{letters}c,{letters}cf->...f", x.astype(self.dtype), kernel.astype(self.dtype)
    )
    return y + bias.astype(self.dtype)


def sincos_1d(length: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """[length, dim] sin/cos table (first half sin, second half cos)."""
  if dim % 2:
    raise ValueError(f"dim: expected an even width for sin-cos embeddings, got {dim}")
  omega = 1.0 / temperature ** (np.arange(dim // 2) / (dim // 2))
  angles = np.arange(length)[:, None] * omega[None]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """[h * w, dim] 2D sin-cos table (big_vision / MAE layout: y features then x features)."""
  if dim % 4:
    raise ValueError(f"dim: expected a width divisible by 4 for 2D sin-cos embeddings, got {dim}")
  ey, ex = sincos_1d(h, dim // 2, temperature), sincos_1d(w, dim // 2, temperature)
  return np.concatenate([np.repeat(ey, w, axis=0), np.tile(ex, (h, 1))], axis=1)
