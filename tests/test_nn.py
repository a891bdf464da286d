"""Layer-level behaviour: RoPE scaling, masks, GQA, KV cache, norms, the one attention's modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.llm import DecoderLM, lm_config
from medjax.nn import RMSNorm, attention_mask, dot_product_attention, rope_frequencies

LLAMA3 = {
  "rope_type": "llama3",
  "factor": 32.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 8192,
}


def test_llama3_rope_scaling_rule():
  base = rope_frequencies(64, 500_000.0)
  scaled = rope_frequencies(64, 500_000.0, LLAMA3)
  wavelen = 2 * math.pi / base
  high = wavelen < 8192 / 4  # short wavelengths are untouched
  low = wavelen > 8192 / 1  # long wavelengths are divided by the factor
  np.testing.assert_allclose(scaled[high], base[high], rtol=1e-6)
  np.testing.assert_allclose(scaled[low], base[low] / 32.0, rtol=1e-6)
  mid = ~high & ~low
  assert mid.any() and np.all(scaled[mid] < base[mid]) and np.all(scaled[mid] > base[mid] / 32.0)


def test_rope_scaling_rejects_unknown_type():
  with pytest.raises(ValueError, match="rope_type.*'yarn'"):
    rope_frequencies(64, 1e4, {"rope_type": "yarn", "factor": 2.0})


def test_gqa_equals_mha_with_repeated_kv():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((2, 5, 4, 8)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((2, 5, 2, 8)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, 5, 2, 8)), jnp.float32)
  pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
  mask = attention_mask(pos, pos, jnp.ones((2, 5), bool))
  gqa = dot_product_attention(q, k, v, mask, scale=8**-0.5)
  mha = dot_product_attention(
    q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2), mask, scale=8**-0.5
  )
  np.testing.assert_allclose(gqa, mha, atol=1e-6)


def test_masks_causal_prefix_window_padding():
  pos = jnp.arange(6)[None]
  valid = jnp.array([[1, 1, 1, 1, 1, 0]], bool)
  prefix = jnp.array([[1, 1, 1, 0, 0, 0]], bool)
  m = np.asarray(attention_mask(pos, pos, valid, q_prefix=prefix, k_prefix=prefix))[0, 0]
  assert m[0, 2] and m[1, 2]  # prefix tokens see later prefix tokens
  assert not m[2, 3] and m[3, 2]  # but not the answer; the answer sees the prefix
  assert not m[3, 4] and not m[4, 5]  # answer is causal; padding is never a key
  w = np.asarray(attention_mask(pos, pos, valid, window=2))[0, 0]
  assert w[3, 2] and not w[3, 1]


def test_rmsnorm_zero_centered_is_identity_scale_at_init():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 16)), jnp.float32)
  a = RMSNorm(zero_centered=True)
  b = RMSNorm(zero_centered=False)
  ya = a.apply(a.init(jax.random.key(0), x), x)
  yb = b.apply(b.init(jax.random.key(0), x), x)
  np.testing.assert_allclose(ya, yb, atol=1e-6)
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(ya**2, -1)), 1.0, atol=1e-3)


@pytest.mark.parametrize("preset", ["tiny", "tiny-gemma"])
@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decoding_equals_full_forward(preset, scan):
  cfg = lm_config(preset, scan_layers=scan, sliding_window=4 if preset == "tiny-gemma" else None)
  model = DecoderLM(cfg)
  toks = jax.random.randint(jax.random.key(1), (2, 12), 0, 250)
  # An "rbg" key: XLA:CPU compiles its draws several times faster than threefry's.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), toks)
  apply = jax.jit(model.apply)
  full, _ = apply(variables, toks)
  cache = model.init_cache(2, 16)
  pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
  first, cache = apply(variables, toks[:, :8], positions=pos, cache=cache)
  outs = [first]
  for i in range(8, 12):
    step, cache = apply(variables, toks[:, i : i + 1], positions=jnp.full((2, 1), i), cache=cache)
    outs.append(step)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("preset,scan", [("tiny", True), ("tiny-gemma", False)])
def test_samples_sharing_a_prompt_cache_decode_like_the_full_forward(preset, scan):
  """generate keeps each prompt's keys once (PrefixedCache) for all its samples; greedy rows must equal the
  argmax of a full forward pass over prompt + output (sliding windows included), for every sample."""
  from medjax.inference import generate

  cfg = lm_config(preset, scan_layers=scan)
  model = DecoderLM(cfg)
  toks = np.random.RandomState(0).randint(3, 200, (2, 32))
  lens = np.array([32, 9])
  toks[1, 9:] = 0
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.asarray(toks))["params"]
  out, n = generate(
    model,
    params,
    jnp.asarray(toks),
    jnp.asarray(lens),
    jax.random.PRNGKey(1),
    max_new_tokens=12,
    num_samples=2,
  )
  out = np.asarray(out)
  assert np.asarray(n).tolist() == [12] * 4
  forward = jax.jit(model.apply)
  for row in range(4):
    prompt = toks[row // 2, : lens[row // 2]]
    logits, _ = forward({"params": params}, jnp.asarray(np.concatenate([prompt, out[row]])[None]))
    assert np.asarray(jnp.argmax(logits[0, len(prompt) - 1 : -1], -1)).tolist() == out[row].tolist()


def _reference_attention(p, x, ctx, mask, bias, scale):
  """Plain numpy multi-head attention over unboxed Attention params (biases optional)."""
  proj = lambda name, h: np.einsum("bte,ehd->bthd", h, p[name]["kernel"]) + p[name].get("bias", 0)
  q, k, v = proj("q", x), proj("k", ctx), proj("v", ctx)
  logits = np.einsum("bthd,bshd->bhts", q, k) * scale + bias
  logits = np.where(mask, logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("bhts,bshd->bthd", probs, v)
  return np.einsum("bthd,hde->bte", out, p["o"]["kernel"]) + p["o"].get("bias", 0)


def test_one_attention_covers_t5_and_biased_cross_attention():
  import flax.linen as nn

  from medjax.nn import Attention

  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 12)).astype(np.float32)
  ctx = rng.standard_normal((2, 7, 6)).astype(np.float32)

  # T5 mode: no 1/sqrt(d) scaling, an additive relative-position bias, a key padding mask.
  t5 = Attention(3, head_dim=4, query_scale=1.0)
  bias = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
  key_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)[:, None, None, :]
  key = jax.random.key(0, impl="rbg")  # XLA:CPU compiles rbg draws faster than threefry's
  p = nn.unbox(jax.jit(t5.init)(key, x, mask=key_mask, bias=bias))["params"]
  assert set(p) == {"q", "k", "v", "o"} and "bias" not in p["q"]
  got = jax.jit(t5.apply)({"params": p}, x, mask=key_mask, bias=bias)
  want = _reference_attention(jax.tree.map(np.asarray, p), x, x, key_mask, bias, 1.0)
  np.testing.assert_allclose(got, want, atol=1e-5)

  # Cross-attention with biases (ViT / DiT layout), queries and keys of different widths.
  xattn = Attention(2, head_dim=5, use_bias=True, kernel_init="xavier")
  kv_mask = np.array([[1] * 7, [1] * 4 + [0] * 3], bool)[:, None, None, :]
  p = nn.unbox(jax.jit(xattn.init)(jax.random.fold_in(key, 1), x, ctx, kv_mask))["params"]
  p = jax.tree.map(lambda a: a + 0.1, p)  # non-zero biases
  xattn_apply = jax.jit(xattn.apply)
  got = xattn_apply({"params": p}, x, ctx, kv_mask)
  want = _reference_attention(jax.tree.map(np.asarray, p), x, ctx, kv_mask, 0.0, 5**-0.5)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert got.shape == x.shape and p["q"]["kernel"].shape == (12, 2, 5)
  ctx2 = ctx.copy()
  ctx2[1, 4:] = 100.0  # masked keys/values never reach the output
  np.testing.assert_array_equal(xattn_apply({"params": p}, x, ctx2, kv_mask), got)

  with pytest.raises(ValueError, match="inv_freq.*self-attention"):
    xattn.apply({"params": p}, x, ctx, positions=jnp.zeros((2, 5), int), inv_freq=np.ones(2))


def test_remat_names_take_bools_their_strings_and_policy_names():
  from medjax.nn.remat import remat_name

  assert [remat_name(v) for v in (True, False, "False", "true", "dots")] == [
    "full",
    "none",
    "none",
    "full",
    "dots",
  ]
  with pytest.raises(ValueError, match="remat: expected one of"):
    remat_name("sometimes")
