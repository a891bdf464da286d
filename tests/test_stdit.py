"""STDiT: shapes and size, which attention mixes what across frames, caption masking, sharded parity."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import parallel
from medjax.models.stdit import CaptionEmbedder, STDiT, stdit_config
from medjax.parallel.sharding import param_shardings

B, T, H, W = 2, 4, 8, 8


@functools.cache
def _inputs(cfg, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(k[0], (B, T, H, W, cfg.in_channels))
  y = jax.random.randint(k[1], (B, 6), 1, cfg.text_vocab_size)
  mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
  return x, jnp.array([3, 700]), y, mask


def _perturbed_init(cfg, seed=0):
  """Params of STDiT(cfg) from one jitted init, every one perturbed (the zero-initialised
  projections would hide mixing)."""
  init = jax.jit(lambda k, *a: nn.unbox(STDiT(cfg).init(k, *a))["params"])
  # At level 0 "unsafe_rbg" draws compile fastest (~2.0 s; threefry 2.6, rbg 3.3); the
  # perturbation is drawn on the host (no compiles).
  params = init(jax.random.key(seed, impl="unsafe_rbg"), *_inputs(cfg))
  rng = np.random.default_rng(seed + 1)
  return jax.tree.map(
    lambda p: np.asarray(p) + np.float32(0.05) * rng.standard_normal(p.shape, np.float32), params
  )


@pytest.fixture(scope="module")
def tiny():
  """tiny(**overrides) -> (cfg, model, params) of a tiny STDiT; one init per distinct config."""

  @functools.cache
  def build(cfg):
    return cfg, STDiT(cfg), _perturbed_init(cfg)

  return lambda **kw: build(stdit_config("tiny", **kw))


@functools.cache
def _forward(cfg):
  """STDiT(cfg).apply(params, *inputs, **kw), jitted once per config."""
  return jax.jit(lambda p, *a, **kw: STDiT(cfg).apply({"params": p}, *a, **kw))


def test_paper_size_and_output_shape(tiny):
  cfg = stdit_config("STDiT-XL/2")
  shapes = jax.eval_shape(
    STDiT(cfg).init,
    jax.random.PRNGKey(0),
    jnp.zeros((1, 4, 32, 32, 4)),
    jnp.zeros((1,)),
    jnp.zeros((1, 120, 4096)),
    jnp.ones((1, 120)),
  )
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))
  c = 1152
  block = (
    3 * (4 * c * c + 4 * c) + (8 * c * c + 5 * c) + 6 * c
  )  # spatial, temporal, cross attn; mlp; table
  embed = (
    (16 * c + c)
    + (256 * c + c + c * c + c)
    + (6 * c * c + 6 * c)
    + (4096 * c + c + c * c + c)
    + 120 * 4096
  )
  final = c * 32 + 32 + 2 * c
  assert n == 28 * block + embed + final
  assert 700e6 < n < 780e6  # ~760M counted this way (the Open-Sora report quotes ~724M)
  cfg, model, params = tiny()
  out = _forward(cfg)(params, *_inputs(cfg))
  assert out.shape == (B, T, H, W, 2 * cfg.in_channels) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("temporal", [True, False])
def test_only_temporal_attention_mixes_frames(tiny, temporal):
  cfg, model, params = tiny(temporal_attention=temporal)
  x, t, y, mask = _inputs(cfg)
  f = lambda x: _forward(cfg)(params, x, t, y, mask)
  base, moved = f(x), f(x.at[:, 1].add(1.0))
  changed = np.asarray(jnp.max(jnp.abs(moved - base), axis=(2, 3, 4)))  # [B, T]
  assert changed[:, 1].min() > 1e-3  # the perturbed frame always changes
  others = changed[:, [0, 2, 3]]
  if temporal:
    assert others.min() > 1e-4
  else:
    assert others.max() == 0.0  # spatial attention, cross-attention and the MLP never mix frames


def test_padded_caption_tokens_are_ignored_and_null_caption_differs(tiny):
  cfg, model, params = tiny()
  x, t, y, mask = _inputs(cfg)
  forward = _forward(cfg)
  f = lambda y, **kw: forward(params, x, t, y, mask, **kw)
  base = f(y)
  np.testing.assert_array_equal(f(y.at[0, 4:].set(7)), base)  # row 0's tokens 4, 5 are padding
  assert float(jnp.max(jnp.abs(f(y.at[0, 0].set(7))[0] - base[0]))) > 1e-4
  dropped = f(y, drop_caption=jnp.array([True, False]))
  np.testing.assert_array_equal(dropped[1], base[1])
  np.testing.assert_allclose(
    dropped[0], f(y.at[0].set(5), drop_caption=jnp.array([True, False]))[0], atol=1e-6
  )
  assert float(jnp.max(jnp.abs(dropped[0] - base[0]))) > 1e-4
  with pytest.raises(ValueError, match="y_mask"):
    f(y[:, :4])
  with pytest.raises(ValueError, match="x: "):
    model.apply({"params": params}, x[:, :, :7], t, y, mask)


@pytest.mark.parametrize("pos", ["sincos", "sincos_stream"])
def test_where_the_frame_index_reaches_the_tokens(tiny, pos):
  """Identical frames with temporal attention off: only "sincos_stream" puts the frame index in the tokens
  themselves (v1.0's "sincos" reaches them only through block 0's temporal attention)."""
  cfg, model, params = tiny(temporal_attention=False, temporal_pos=pos)
  x, t, y, mask = _inputs(cfg)
  out = _forward(cfg)(params, jnp.repeat(x[:, :1], T, axis=1), t, y, mask)
  spread = float(jnp.max(jnp.abs(out - out[:, :1])))
  assert spread > 1e-3 if pos == "sincos_stream" else spread == 0.0
  with pytest.raises(ValueError, match="temporal_pos: expected one of"):
    tiny(temporal_pos="learned")


@pytest.mark.parametrize("kw", [dict(temporal_pos="rope", qk_norm=True), dict(remat=True)])
def test_options_build_and_run(tiny, kw):
  cfg, model, params = tiny(**kw)
  out = _forward(cfg)(params, *_inputs(cfg))
  assert out.shape == (B, T, H, W, 2 * cfg.in_channels) and bool(jnp.all(jnp.isfinite(out)))
  if "qk_norm" in kw:
    assert "q_norm" in params["block_0"]["attn_temp"]


@pytest.mark.parametrize("seq", [2, 4])
def test_sequence_sharded_forward_matches_unsharded(tiny, seq):
  cfg, model, params = tiny()
  inputs = _inputs(cfg)
  ref = _forward(cfg)(params, *inputs)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 1, "tensor": 8 // (2 * seq), "sequence": seq})
  rules = parallel.logical_rules("fsdp_tp_sp")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]
    shardings = param_shardings(boxed, mesh, rules)
    sharded = jax.device_put(params, shardings)
    # A fresh jit: traced here, under the mesh and the logical axis rules.
    forward = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
    compiled = forward.lower(sharded, *inputs).compile()
    out, text = compiled(sharded, *inputs), compiled.as_text()
  assert (
    "all-to-all" in text or "all-gather" in text or "collective-permute" in text
  )  # really distributed
  np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.fixture(scope="module")
def one_block():
  """(cfg, perturbed params) of a one-block tiny STDiT, initialised in one jitted call."""
  cfg = stdit_config("tiny", depth=1)
  return cfg, _perturbed_init(cfg)


def test_space_scale_places_patches_as_v1(one_block):
  """v1.0's spatial positions are i * (base / grid) / space_scale: at scale 0.5 (Bora, 256 px) a
  4x4 grid gets the embedding an unscaled 8x8 grid has at its even positions, as does a 4x4 grid
  on a base of 8; scale 1 on the grid itself is the unscaled embedding."""
  from medjax.models.stdit import sincos_2d

  d = 16
  finer = sincos_2d(d, 8, 8).reshape(8, 8, d)[::2, ::2].reshape(16, d)
  np.testing.assert_allclose(sincos_2d(d, 4, 4, scale=0.5), finer, atol=1e-12)
  np.testing.assert_allclose(sincos_2d(d, 4, 4, base_size=8), finer, atol=1e-12)
  assert np.abs(sincos_2d(d, 4, 4) - finer).max() > 0.1
  np.testing.assert_array_equal(sincos_2d(d, 4, 4, 1.0, 4), sincos_2d(d, 4, 4))
  # The model reads it: the same params give other outputs at space_scale 0.5 (one block suffices).
  cfg, params = one_block
  x, t, y, mask = _inputs(cfg)
  models = [STDiT(stdit_config("tiny", depth=1, space_scale=s)) for s in (1.0, 0.5)]
  out, out_half = jax.jit(lambda p: [m.apply({"params": p}, x, t, y, mask) for m in models])(params)
  assert float(jnp.max(jnp.abs(out - out_half))) > 1e-3
  with pytest.raises(ValueError, match="space_scale.*got 0.0"):
    STDiT(stdit_config("tiny", space_scale=0.0)).apply({"params": params}, x, t, y, mask)


def test_null_caption_buffer_keeps_the_caption_mask_and_gets_no_gradient(one_block):
  """v1.0 ("buffer"): a dropped caption is the fixed null embedding seen through the caption's own
  padding mask, and training never moves it; the "learned" option (the old behaviour) shows all
  null tokens and trains them."""
  cfg, params = one_block
  x, t, y, mask = _inputs(cfg)  # row 0: tokens 4, 5 are padding
  drop = jnp.array([True, False])
  both = jnp.concatenate([mask, jnp.ones_like(mask)])  # row 0 with its mask, then fully visible
  xx, tt, yy, dd = (jnp.concatenate([a, a]) for a in (x, t, y, drop))
  got = {}
  for mode in ("buffer", "learned"):
    c = stdit_config("tiny", depth=1, null_caption=mode)
    model, embed = STDiT(c), CaptionEmbedder(c)
    out = jax.jit(
      lambda p: model.apply({"params": p}, xx, tt, yy, both, drop_caption=dd)  # noqa: B023
    )(params)
    # The caption embedder alone carries the null caption's gradient (cheaper than the model's).
    grad = jax.jit(
      jax.grad(
        lambda p: jnp.sum(embed.apply({"params": p}, y, jnp.array([True, True])) ** 2)  # noqa: B023
      )
    )(params["y_embedder"])
    got[mode] = (
      float(jnp.max(jnp.abs(out[0] - out[2]))),
      float(jnp.max(jnp.abs(grad["null_embedding"]))),
    )
  assert got["buffer"][0] > 1e-4 and got["buffer"][1] == 0.0, got
  assert got["learned"][0] == 0.0 and got["learned"][1] > 1e-6, got
  with pytest.raises(ValueError, match="null_caption: expected one of"):
    STDiT(stdit_config("tiny", null_caption="zeros")).apply({"params": params}, x, t, y, mask)


def test_step_options_keep_the_loss_and_its_gradient(one_block):
  """The speed options a GPU step may switch on (benchmarks/gpu_vision.py) leave a training loss and
  its gradient where the default puts them (float32, to rounding). One program computes all."""
  cfg, params = one_block
  x, t, y, mask = _inputs(cfg)
  options = [
    dict(),
    dict(remat=True),
    dict(remat="dots_no_batch"),
    dict(fused_modulation=True),
  ]

  def loss(c, p):
    return jnp.mean(jnp.square(STDiT(c).apply({"params": p}, x, t, y, mask) - 0.5))

  grads = lambda p: [
    jax.value_and_grad(functools.partial(loss, dataclasses.replace(cfg, **kw)))(p) for kw in options
  ]
  (want, want_grad), *rest = jax.jit(grads)(params)
  for kw, (got, got_grad) in zip(options[1:], rest):
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(kw))
    for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=str(kw))


def test_cudnn_attention_passes_cudnns_checks_in_every_stdit_attention(monkeypatch):
  """attention_impl="cudnn" meets cuDNN's trace-time checks (bf16 q/k/v, a mask spanning queries
  and keys) in the spatial, temporal and caption cross-attention of a training step, at XL/2's head
  dim 72. No GPU here: cuDNN's version check is stubbed and the step is only traced."""
  fused = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
  monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
  cfg = stdit_config(
    "tiny", hidden=144, num_heads=2, depth=1, dtype="bfloat16", attention_impl="cudnn"
  )
  x, t, y, mask = _inputs(cfg)
  model = STDiT(cfg)
  params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), x, t, y, mask)))
  loss = lambda p: jnp.mean(
    model.apply(p, x, t, y, mask, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  )
  grads = jax.eval_shape(jax.grad(loss), params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
