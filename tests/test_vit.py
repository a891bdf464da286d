"""ViT: 2D/3D shapes, presets, token pooling, 2D->3D inflation, input validation."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.vit import ViT, inflate_2d_to_3d, vit_config


@functools.cache
def _init(cfg):
  """Boxed params of ViT(cfg) from one jitted init (cached: the tests only read them)."""
  x = jnp.zeros((1,) + cfg.input_shape)
  return jax.jit(lambda k: ViT(cfg).init(k, x))(jax.random.key(0, impl="rbg"))["params"]


@functools.cache
def _forward(cfg):
  """ViT(cfg).apply jitted once per config."""
  return jax.jit(lambda p, x: ViT(cfg).apply({"params": p}, x))


def _abstract_init(cfg, x):
  """The params' shapes (boxed as init returns them), traced without running: for shape tests."""
  return jax.eval_shape(lambda: ViT(cfg).init(jax.random.PRNGKey(0), x))["params"]


def _abstract_apply(cfg, params, x):
  """The output's shapes; raises the same input errors as a real apply."""
  return jax.eval_shape(lambda p: ViT(cfg).apply({"params": p}, x), params)


@pytest.mark.parametrize("pool", ["map", "gap"])
@pytest.mark.parametrize("method", ["central", "mean"])
def test_inflated_3d_equals_2d_on_identical_slices(pool, method):
  cfg = vit_config("tiny", pool=pool)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 1))
  p2 = _init(cfg)
  out2 = _forward(cfg)(p2, x)
  cfg3 = dataclasses.replace(cfg, patch_embed="3d", frames=6, tubelet=3)
  p3 = inflate_2d_to_3d(p2, 3, frames=6, method=method)
  vol = jnp.repeat(x[:, None], 6, axis=1)
  out3 = _forward(cfg3)(p3, vol)
  np.testing.assert_allclose(out3["pooled"], out2["pooled"], atol=2e-5)
  # Every time slice of the 3D token grid equals the 2D tokens.
  np.testing.assert_allclose(out3["tokens"].reshape(2, 2, 64, -1)[:, 1], out2["tokens"], atol=2e-5)
  # A different slice content changes the features (the inflation is not degenerate).
  vol2 = vol.at[:, 1].set(0.0)  # central frame of the first tubelet
  out_changed = _forward(cfg3)(p3, vol2)
  assert float(jnp.abs(out_changed["pooled"] - out3["pooled"]).max()) > 1e-3


def test_inflated_params_match_fresh_3d_structure():
  cfg = vit_config("tiny")
  x = jnp.zeros((1, 32, 32, 1))
  p3 = jax.eval_shape(lambda p: inflate_2d_to_3d(p, 2, frames=8), _abstract_init(cfg, x))
  cfg3 = vit_config("tiny3d")
  fresh = nn.meta.unbox(_abstract_init(cfg3, jnp.zeros((1, 8, 32, 32, 1))))
  assert jax.tree.map(jnp.shape, p3) == jax.tree.map(jnp.shape, fresh)


@pytest.mark.parametrize(
  "pool,has_pooled", [("map", True), ("gap", True), ("cls", True), ("none", False)]
)
def test_shapes_pools_and_any_channel_count(pool, has_pooled):
  cfg = vit_config("tiny", pool=pool, channels=5, token_pool=2)
  x = jnp.ones((3, 32, 32, 5))
  out = _abstract_apply(cfg, _abstract_init(cfg, x), x)
  assert out["tokens"].shape == (3, cfg.num_tokens, 64) == (3, 16, 64)
  assert (out["pooled"] is not None) == has_pooled
  if has_pooled:
    assert out["pooled"].shape == (3, 64)


def test_3d_tubelets_and_token_pool():
  cfg = vit_config("tiny3d", token_pool=2, token_pool_time=2, posemb="sincos")
  x = jnp.zeros((2, 8, 32, 32, 1))
  out = _abstract_apply(cfg, _abstract_init(cfg, x), x)
  assert cfg.grid == (4, 8, 8)
  assert out["tokens"].shape == (2, 2 * 4 * 4, 64)


def test_paper_presets_token_counts_and_size():
  so = vit_config("so400m-14")
  assert so.num_tokens == 256
  shapes = jax.eval_shape(lambda: ViT(so).init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  n = sum(np.prod(s.shape) for s in jax.tree.leaves(nn.meta.unbox(shapes)))
  assert 390e6 < n < 440e6  # So400m (vision tower ~0.4B)
  b16 = vit_config("b16")
  assert b16.num_tokens == 196


def test_params_carry_logical_axes():
  cfg = vit_config("tiny", pool="cls")
  params = _abstract_init(cfg, jnp.zeros((1, 32, 32, 1)))
  leaves = jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
  assert all(isinstance(v, nn.LogicallyPartitioned) for v in leaves)


def test_sincos_accepts_other_sizes():
  cfg = vit_config("tiny", posemb="sincos", pool="gap")
  p = _abstract_init(cfg, jnp.zeros((1, 32, 32, 1)))
  out = _abstract_apply(cfg, p, jnp.zeros((1, 48, 16, 1)))
  assert out["tokens"].shape == (1, 12 * 4, 64)


@pytest.mark.parametrize(
  "shape,match",
  [
    ((2, 32, 32), r"images: expected rank 4"),
    ((2, 32, 32, 3), r"images: expected 1 channels.*got 3"),
    ((2, 30, 32, 1), r"images: spatial size \(30, 32\) is not divisible by the patch \(4, 4\)"),
    ((2, 64, 64, 1), r"images: expected spatial size \(32, 32\)"),
  ],
)
def test_bad_inputs_raise(shape, match):
  cfg = vit_config("tiny")
  p = _abstract_init(cfg, jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match=match):
    _abstract_apply(cfg, p, jnp.zeros(shape))


def test_bad_3d_input_and_config():
  cfg = vit_config("tiny3d")
  p = _abstract_init(cfg, jnp.zeros((1, 8, 32, 32, 1)))
  with pytest.raises(ValueError, match=r"images: expected rank 5 \[batch, frames"):
    _abstract_apply(cfg, p, jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match=r"images: expected spatial size \(8, 32, 32\)"):
    _abstract_apply(cfg, p, jnp.zeros((1, 4, 32, 32, 1)))
  with pytest.raises(ValueError, match="image_size: expected a multiple of patch_size"):
    vit_config("tiny", image_size=30)
  with pytest.raises(ValueError, match="pool: expected one of"):
    vit_config("tiny", pool="max")
  with pytest.raises(ValueError, match="params_2d: expected a 2D ViT patch_embed kernel"):
    inflate_2d_to_3d(p, 2)


@pytest.mark.parametrize("patch", [(4, 4), (2, 4, 4)])
def test_patch_embed_equals_strided_conv(patch):
  from medjax.nn.patch import PatchEmbed

  x = jax.random.normal(jax.random.PRNGKey(0), (2,) + (4,) * (len(patch) - 2) + (8, 8, 3))
  m = PatchEmbed(5, patch)
  p = nn.meta.unbox(jax.jit(m.init)(jax.random.key(1, impl="rbg"), x))["params"]
  dims = ("NHWC", "HWIO", "NHWC") if len(patch) == 2 else ("NDHWC", "DHWIO", "NDHWC")
  ref = jax.jit(
    lambda x, p: (
      jax.lax.conv_general_dilated(x, p["kernel"], patch, "VALID", dimension_numbers=dims)
      + p["bias"]
    )
  )(x, p)
  np.testing.assert_allclose(jax.jit(m.apply)({"params": p}, x), ref, atol=1e-5)


def test_frames_mode_is_the_2d_tower_per_frame_with_frame_indices():
  """A video as frames in context: each frame's tokens are the 2D tower's (same parameters), in
  frame order, plus the frame index's sin-cos embedding; reordering frames reorders their tokens
  but the index embedding stays with the position."""
  from medjax.nn.patch import sincos_1d

  cfg2d = vit_config("tiny", pool="gap", token_pool=2)
  cfg = dataclasses.replace(cfg2d, patch_embed="frames", frames=3)
  assert cfg.input_shape == (3, 32, 32, 1) and cfg.num_tokens == 3 * 16
  video = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 32, 32, 1))
  params = _init(cfg)
  assert jax.tree.structure(params) == jax.tree.structure(_init(cfg2d))
  out = _forward(cfg)(params, video)
  assert out["tokens"].shape == (2, 48, cfg.width)
  per_frame = [_forward(cfg2d)(params, video[:, f]) for f in range(3)]
  index = sincos_1d(3, cfg.width)
  want = jnp.concatenate([o["tokens"] + index[f] for f, o in enumerate(per_frame)], axis=1)
  np.testing.assert_allclose(out["tokens"], want, atol=1e-5)
  np.testing.assert_allclose(
    out["pooled"], jnp.mean(jnp.stack([o["pooled"] for o in per_frame]), 0), atol=1e-5
  )
  with pytest.raises(ValueError, match=r"images: expected 3 frames, got 2"):
    _abstract_apply(cfg, params, video[:, :2])
  with pytest.raises(ValueError, match=r"patch_embed: expected one of"):
    vit_config("tiny", patch_embed="tubes")
