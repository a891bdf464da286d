"""Bora's STDiT from public weights: a diffusers PixArt-alpha transformer (init.stdit=diffusers:DIR)
and an Open-Sora v1.0 / Bora checkpoint with its original key names (init.stdit=opensora:FILE)."""

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import config_lib
from medjax.checkpoints import init as init_lib
from medjax.checkpoints.hf_t5 import t5_directory
from medjax.data import latent_cache
from medjax.models.stdit import sincos_1d, sincos_2d
from medjax.tasks import get_task
from medjax.train import loop

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from safetensors.numpy import save_file  # noqa: E402

T, H, C, TEXT, L = 2, 8, 4, 12, 6  # frames, latent size, channels, caption width, caption tokens
# The paper variant at tiny width. PixArt below: sample_size 16 / patch 2 = base 8 at
# interpolation_scale 1; STDiT: base 4 at space_scale 0.5, the same positions (as v1.0: 32 / 1 vs
# 16 / 0.5).
PAPER_TINY = [
  "model.hidden=16",
  "model.depth=2",
  "model.num_heads=2",
  f"model.in_channels={C}",
  f"model.caption_channels={TEXT}",
  f"model.max_text_len={L}",
  "model.space_base_size=4",
  "model.dtype=float32",
  "model.remat=False",
  f"data.frames={T}",
  f"data.size={H}",
  f"data.channels={C}",
  f"data.max_text_len={L}",
  "data.frame_interval=1",
  "train.batch_size=8",
]


def paper_tiny(*overrides):
  return config_lib.config_from_file("configs/bora.py:paper", PAPER_TINY + list(overrides))


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
  """A tiny random PixArtTransformer2DModel saved by diffusers -> (its directory, the model)."""
  torch.manual_seed(0)
  model = diffusers.PixArtTransformer2DModel(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=C,
    out_channels=2 * C,
    num_layers=2,
    cross_attention_dim=16,
    sample_size=16,
    patch_size=2,
    caption_channels=TEXT,
    interpolation_scale=1,
    use_additional_conditions=False,
  ).eval()
  with torch.no_grad():  # diffusers' defaults are fine, but give every bias and table a value
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp("pixart"))
  model.save_pretrained(path)
  return path, model


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, T, H, H, C)).astype(np.float32)
  y = rng.normal(size=(2, L, TEXT)).astype(np.float32)
  y_mask = np.array([[1] * L, [1, 1, 1, 0, 0, 0]], np.int32)
  return x, np.array([10.0, 700.0], np.float32), y, y_mask


@pytest.fixture(scope="module")
def fresh():
  """The paper-at-tiny-width task, model and a freshly initialised state."""
  config = paper_tiny()
  mesh, rules, task, model = loop.setup(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, *_ = loop.build_step(config, mesh, rules, task, model)
  return task, model, state.params


def _apply(model, params, inputs):
  x, t, y, y_mask = inputs
  return np.asarray(jax.jit(model.apply)({"params": params}, x, t, y, y_mask))


def _pixart_frames(model, inputs):
  """diffusers on each frame: [B, T, H, W, 2C]."""
  x, t, y, y_mask = inputs
  b = x.shape[0]
  rep = lambda a: torch.tensor(np.repeat(a, T, axis=0))
  with torch.no_grad():
    out = model(
      torch.tensor(x.reshape(b * T, H, H, C)).permute(0, 3, 1, 2),
      encoder_hidden_states=rep(y),
      timestep=rep(t),
      encoder_attention_mask=rep(y_mask),
    ).sample
  return out.permute(0, 2, 3, 1).numpy().reshape(b, T, H, H, 2 * C)


def test_training_from_pixart_equals_diffusers_frame_by_frame(
  pixart, inputs, fresh, tmp_path, train_step0
):
  """experiments/train.py from init.stdit=diffusers:DIR, one step at which nothing moves: STDiT
  (temporal branch at its zero-output init) is the diffusers model on every frame; the fresh model
  is not."""
  path, ref = pixart
  rng = np.random.default_rng(2)
  records = [
    {"video": rng.uniform(-1, 1, (T, H, H, C)).astype(np.float32), "text": str(i)} for i in range(8)
  ]
  latent_cache.write_split(
    str(tmp_path / "cache" / "train"),
    records,
    encode_videos=lambda v: v,
    encode_captions=lambda c: (rng.normal(size=(len(c), L, TEXT)), np.ones((len(c), L))),
  )
  overrides = dict(o.split("=", 1) for o in PAPER_TINY)
  overrides.update({"init.stdit": f"diffusers:{path}", "data.cache_dir": tmp_path / "cache"})
  params, model, _, config, _ = train_step0("bora.py:paper", overrides)
  want = _pixart_frames(ref, inputs)
  np.testing.assert_allclose(_apply(model, params, inputs), want, atol=1e-4, rtol=1e-4)
  task, fresh_model, fresh_params = fresh
  assert np.abs(_apply(fresh_model, fresh_params, inputs) - want).max() > 1e-2
  # The temporal branch is new (output projection at zero), the rest is PixArt's.
  _, (report,) = init_lib.load(fresh_params, task.init_slots(), config.init)
  assert report.new and all("attn_temp" in k or "null_embedding" in k for k in report.new)
  assert not report.unused


def test_pixart_architecture_and_positions_are_checked(pixart, fresh, tmp_path):
  path, _ = pixart
  params = fresh[2]

  def load(source, *overrides):
    config = paper_tiny(*overrides)
    init = {**config.init.to_dict(), "stdit": source}
    return init_lib.load(params, get_task(config).init_slots(), init)

  # PixArt's positions at another scale: the weights would see other positions.
  with pytest.raises(ValueError, match=r"model.space_base_size / model.space_scale"):
    load(f"diffusers:{path}", "model.space_scale=1.0")
  with pytest.raises(ValueError, match=r"num_layers is 2, the config's model.depth implies 3"):
    load(f"diffusers:{path}", "model.depth=3")
  other = tmp_path / "other"
  shutil.copytree(path, other)
  hf = json.load(open(other / "config.json"))
  json.dump({**hf, "use_additional_conditions": True}, open(other / "config.json", "w"))
  with pytest.raises(ValueError, match=r"use_additional_conditions is True"):
    load(f"diffusers:{other}")
  with pytest.raises(ValueError, match=r"config.json"):
    load(f"diffusers:{tmp_path}")
  with pytest.raises(ValueError, match=r"init.stdit: format 'hf' cannot initialise a STDiTConfig"):
    load(f"hf:{path}")


def _to_opensora(params, cfg) -> dict:
  """Open-Sora v1.0 STDiT's state dict (torch layouts, its key names) of STDiT params."""
  p = jax.tree.map(np.asarray, params)

  def linear(name, m, n_in=1):
    kernel = m["kernel"].reshape(int(np.prod(m["kernel"].shape[:n_in])), -1)
    return {f"{name}.weight": kernel.T, f"{name}.bias": m["bias"].reshape(-1)}

  def fused(name, *ms):
    parts = [linear(name, m) for m in ms]
    return {k: np.concatenate([q[k] for q in parts], 0) for k in parts[0]}

  sd = {
    "x_embedder.proj.weight": p["x_embedder"]["kernel"].transpose(4, 3, 0, 1, 2),
    "x_embedder.proj.bias": p["x_embedder"]["bias"],
    **linear("t_embedder.mlp.0", p["t_embedder"]["fc1"]),
    **linear("t_embedder.mlp.2", p["t_embedder"]["fc2"]),
    **linear("t_block.1", p["t_block"]),
    **linear("y_embedder.y_proj.fc1", p["y_embedder"]["fc1"]),
    **linear("y_embedder.y_proj.fc2", p["y_embedder"]["fc2"]),
    "y_embedder.y_embedding": p["y_embedder"]["null_embedding"],
    "final_layer.scale_shift_table": p["final_scale_shift_table"]["table"],
    **linear("final_layer.linear", p["final_linear"]),
    "pos_embed": sincos_2d(cfg.hidden, H // 2, H // 2, cfg.space_scale, cfg.space_base_size)[None],
    "pos_embed_temporal": sincos_1d(cfg.hidden, np.arange(T) / cfg.time_scale)[None],
  }
  for i in range(cfg.depth):
    b, pre = p[f"block_{i}"], f"blocks.{i}."
    for attn, name in (("attn", "attn"), ("attn_temp", "attn_temp")):
      sd.update(fused(pre + name + ".qkv", b[attn]["q"], b[attn]["k"], b[attn]["v"]))
      sd.update(linear(pre + name + ".proj", b[attn]["o"], n_in=2))
    x = b["cross_attn"]
    sd.update(linear(pre + "cross_attn.q_linear", x["q"]))
    sd.update(fused(pre + "cross_attn.kv_linear", x["k"], x["v"]))
    sd.update(linear(pre + "cross_attn.proj", x["o"], n_in=2))
    sd.update(linear(pre + "mlp.fc1", b["mlp"]["up"]))
    sd.update(linear(pre + "mlp.fc2", b["mlp"]["down"]))
    sd[pre + "scale_shift_table"] = b["scale_shift_table"]["table"]
  return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


@pytest.fixture(scope="module")
def opensora(fresh, tmp_path_factory):
  """A random STDiT (temporal branch included) and its Open-Sora state dict."""
  task, model, params = fresh
  leaves, tree = jax.tree.flatten(jax.tree.map(np.asarray, params))
  rng = np.random.default_rng(3)
  params = jax.tree.unflatten(tree, [v + 0.05 * rng.normal(size=v.shape) for v in leaves])
  cfg = model.cfg
  return params, _to_opensora(params, cfg), tmp_path_factory.mktemp("opensora")


def test_opensora_checkpoint_loads_into_the_model_it_was_written_from(fresh, opensora, inputs):
  task, model, fresh_params = fresh
  params, sd, tmp = opensora
  want = _apply(model, params, inputs)
  assert np.abs(_apply(model, fresh_params, inputs) - want).max() > 1e-2  # the fresh model differs
  save_file(sd, str(tmp / "stdit.safetensors"))
  torch.save(
    {"ema": {f"module.{k}": torch.tensor(v) for k, v in sd.items()}, "step": 3}, tmp / "ema.pth"
  )
  for file in ("stdit.safetensors", "ema.pth"):
    loaded, (report,) = init_lib.load(
      fresh_params, task.init_slots(), {"stdit": f"opensora:{tmp / file}"}
    )
    np.testing.assert_allclose(_apply(model, loaded, inputs), want, atol=1e-5, rtol=1e-5)
    assert not report.new and report.unused == ("pos_embed", "pos_embed_temporal")


def test_bad_opensora_checkpoints_fail_naming_the_tensor(fresh, opensora):
  task, model, params = fresh
  _, sd, tmp = opensora
  cfg = model.cfg

  def load(name, state):
    file = tmp / name
    save_file(state, str(file)) if isinstance(state, dict) else file.write_text(state)
    return init_lib.load(params, task.init_slots(), {"stdit": f"opensora:{file}"})

  missing = {k: v for k, v in sd.items() if k != "blocks.1.cross_attn.kv_linear.weight"}
  with pytest.raises(ValueError, match=r"'blocks.1.cross_attn.kv_linear.weight'.*not found"):
    load("missing.safetensors", missing)
  # Nothing half-loaded: a donating load (the loop's) that fails has deleted none of the state.
  state = jax.tree.map(jnp.copy, params)
  with pytest.raises(ValueError, match=r"not found"):
    source = {"stdit": f"opensora:{tmp / 'missing.safetensors'}"}
    init_lib.load(state, task.init_slots(), source, donate=True)
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state))
  wrong = {**sd, "y_embedder.y_proj.fc1.weight": np.zeros((16, TEXT + 1), np.float32)}
  with pytest.raises(
    ValueError, match=r"'y_embedder.y_proj.fc1.weight': expected shape \(16, 12\)"
  ):
    load("shape.safetensors", wrong)
  extra = {**sd, "blocks.2.mlp.fc1.weight": np.zeros((64, 16), np.float32)}
  with pytest.raises(ValueError, match=r"no place in the model.*blocks.2.mlp.fc1.weight"):
    load("deeper.safetensors", extra)
  scale = {**sd, "pos_embed": sincos_2d(cfg.hidden, H // 2, H // 2)[None].astype(np.float32)}
  with pytest.raises(ValueError, match=r"pos_embed\) differ.*model.space_scale=0.5"):
    load("positions.safetensors", scale)
  with pytest.raises(ValueError, match=r"not a safetensors checkpoint"):
    load("text.safetensors", "not a checkpoint")
  with pytest.raises(ValueError, match=r"not a torch checkpoint"):
    load("text.pth", "not a checkpoint")


def test_t5_encoder_source_takes_the_init_syntax():
  assert (
    t5_directory("hf:/ckpt/t5-v1_1-xxl") == t5_directory("/ckpt/t5-v1_1-xxl") == "/ckpt/t5-v1_1-xxl"
  )
  with pytest.raises(ValueError, match=r"text_encoder: expected hf:DIR"):
    t5_directory("opensora:/ckpt/t5.pth")
