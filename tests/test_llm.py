"""Decoder LM presets, scan/remat equivalence and input checks."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.llm import DecoderLM, lm_config

# Published parameter counts (Hugging Face model cards / config arithmetic).
PUBLISHED = {
  "llama-3.2-1b": 1_235_814_400,
  "llama-3.2-3b": 3_212_749_824,
  "gemma-3-270m": 268_098_176,
  "gemma-3-1b": 999_885_952,
}


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_sizes(preset):
  model = DecoderLM(lm_config(preset))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32)))
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert n == PUBLISHED[preset]


def _unstack(scanned, num_layers):
  """Scanned params (layers/layer/... with a leading layer axis) -> layer_i/... params."""
  flat = flax.traverse_util.flatten_dict(scanned)
  out = {}
  for k, v in flat.items():
    if k[0] == "layers":
      for i in range(num_layers):
        out[(f"layer_{i}",) + k[2:]] = v[i]
    else:
      out[k] = v
  return flax.traverse_util.unflatten_dict(out)


@pytest.mark.parametrize("preset", ["tiny", "tiny-gemma"])
def test_scan_and_remat_match_the_plain_model(preset):
  toks = jax.random.randint(jax.random.key(1), (2, 24), 0, 250)
  scan_cfg = lm_config(preset, scan_layers=True, remat="full")
  key = jax.random.key(0, impl="rbg")  # XLA:CPU compiles rbg draws faster than threefry's
  scanned = jax.jit(DecoderLM(scan_cfg).init)(key, toks)["params"]
  scanned = flax.linen.meta.unbox(scanned)
  plain_cfg = dataclasses.replace(scan_cfg, scan_layers=False, remat="none")
  plain = _unstack(scanned, scan_cfg.num_layers)
  loss = lambda cfg, p: DecoderLM(cfg).apply({"params": p}, toks)[0].mean()
  a, ga = jax.jit(jax.value_and_grad(lambda p: loss(scan_cfg, p)))(scanned)
  b, gb = jax.jit(jax.value_and_grad(lambda p: loss(plain_cfg, p)))(plain)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for x, y in zip(jax.tree.leaves(_unstack(ga, scan_cfg.num_layers)), jax.tree.leaves(gb)):
    np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="remat:.*'everything'"):
    lm_config("tiny", remat="everything")
  with pytest.raises(ValueError, match="num_kv_heads"):
    lm_config("tiny", num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="LM preset.*'llama-9'"):
    lm_config("llama-9")
  model = DecoderLM(lm_config("tiny"))
  # Traced only (eval_shape): the input checks raise while tracing.
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"embeds: expected \[batch, length, 128\]"):
    jax.eval_shape(lambda p: model.apply(p, embeds=jnp.ones((1, 4, 64))), params)
