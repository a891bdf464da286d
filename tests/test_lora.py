"""LoRA adapters on the decoder LM's attention and MLP projections (medjax/nn/lora.py)."""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from medjax.models.llm import DecoderLM, LMConfig
from medjax.nn import lora as lora_lib
from medjax.train.optim import make_optimizer

BASE = LMConfig(
  vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
)
LORA = dataclasses.replace(BASE, lora_rank=4, lora_alpha=8.0)
TOKENS = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 64)


@functools.cache
def _init(cfg, abstract=False):
  """Params of DecoderLM(cfg) (cached: tests share an init; none modifies it)."""
  init = DecoderLM(cfg).init
  run = functools.partial(jax.eval_shape, init) if abstract else jax.jit(init)
  # An "rbg" key: XLA:CPU compiles its draws several times faster than threefry's.
  return flax.core.meta.unbox(run(jax.random.key(0, impl="rbg"), TOKENS)["params"])


@functools.cache
def _forward(cfg):
  """One jitted forward per config, so repeated calls reuse its compilation."""
  return jax.jit(lambda p: DecoderLM(cfg).apply({"params": p}, TOKENS)[0])


def _logits(cfg, params):
  return _forward(cfg)(params)


def _flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep="/")


def _is_lora(path):
  return path.endswith(("/lora_a", "/lora_b"))


def test_lora_off_keeps_the_tree_and_on_starts_as_the_base():
  base, lora = _init(BASE), _init(LORA)
  assert not any(_is_lora(k) for k in _flat(base))
  flat = _flat(lora)
  assert {k: v.shape for k, v in flat.items() if not _is_lora(k)} == {
    k: v.shape for k, v in _flat(base).items()
  }
  # the base weights are the same draws, and B = 0 makes the adapted LM the base LM at init
  np.testing.assert_array_equal(flat["layer_0/attn/q/kernel"], _flat(base)["layer_0/attn/q/kernel"])
  np.testing.assert_array_equal(_logits(LORA, lora), _logits(BASE, base))
  assert all(np.all(v == 0) for k, v in flat.items() if k.endswith("lora_b"))
  assert all(np.std(v) > 0 for k, v in flat.items() if k.endswith("lora_a"))
  # the adapter is live: a non-zero B changes the logits
  moved = flax.traverse_util.unflatten_dict(
    {k: v + 0.1 if k.endswith("lora_b") else v for k, v in flat.items()}, sep="/"
  )
  assert not np.allclose(_logits(LORA, moved), _logits(BASE, base), atol=1e-3)


@pytest.mark.parametrize("targets", [lora_lib.TARGETS, ("q", "v")])
def test_lora_param_count(targets):
  cfg = dataclasses.replace(LORA, lora_targets=targets)
  e, h, k, d, f, r = (
    cfg.embed_dim,
    cfg.num_heads,
    cfg.num_kv_heads,
    cfg.head_dim,
    cfg.mlp_dim,
    cfg.lora_rank,
  )
  per_proj = {
    "q": e + h * d,
    "k": e + k * d,
    "v": e + k * d,
    "o": h * d + e,
    "gate": e + f,
    "up": e + f,
    "down": f + e,
  }
  expected = cfg.num_layers * r * sum(per_proj[t] for t in targets)
  lora = {k: v for k, v in _flat(_init(cfg, abstract=True)).items() if _is_lora(k)}
  assert sum(v.size for v in lora.values()) == expected
  assert {k.split("/")[-2] for k in lora} == set(targets)
  # with layers scanned the adapters are stacked over layers: same count
  scanned = _flat(_init(dataclasses.replace(cfg, scan_layers=True), abstract=True))
  scanned = {k: v for k, v in scanned.items() if _is_lora(k)}
  assert sum(v.size for v in scanned.values()) == expected
  assert all(v.shape[0] == cfg.num_layers for v in scanned.values())


def test_only_lora_params_train_under_the_freeze_mask():
  params = _init(LORA)
  optim = ml_collections.ConfigDict(
    dict(
      name="adamw",
      lr=1e-2,
      warmup_steps=0,
      schedule="constant",
      end_lr_frac=0.0,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,
      grad_clip=1.0,
      freeze=(lora_lib.frozen_base(""),),
    )
  )
  tx, _ = make_optimizer(optim, params, 10)
  targets = jnp.roll(TOKENS, -1, axis=1)

  def loss(p):
    logits = DecoderLM(LORA).apply({"params": p}, TOKENS)[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def step(p, s):
    l, g = jax.value_and_grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l, g

  p, s = params, tx.init(params)
  p, s, l0, g = step(p, s)
  g = _flat(g)
  assert all(
    np.any(g[k] != 0) for k in g if k.endswith("lora_b")
  )  # B gets gradients at init (A cannot: B = 0)
  assert np.any(g["embed/embedding"] != 0)  # the base gets gradients too, but the mask drops them
  for _ in range(4):
    p, s, l, _ = step(p, s)
  assert float(l) < float(l0)
  before, after = _flat(params), _flat(p)
  for k in before:
    changed = not np.array_equal(before[k], after[k])
    assert changed == _is_lora(k), k


def test_lora_config_errors():
  with pytest.raises(
    ValueError, match=r"lora targets: expected a non-empty subset .* got \('q', 'qkv'\)"
  ):
    dataclasses.replace(LORA, lora_targets=("q", "qkv"))
  with pytest.raises(ValueError, match="lora_rank: expected >= 0"):
    dataclasses.replace(BASE, lora_rank=-1)
