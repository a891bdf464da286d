"""Decoding in one jit-compiled program each (a while_loop, no Python loop per token): prefill +
KV-cache sampling (`generate`), and greedy decoding of models without a cache (`greedy_decode`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from medjax.nn.attention import PrefixedCache


def sample_logits(rng, logits, temperature=0.0, top_k=0, top_p=1.0):
  """One token per row of logits [B, V]: greedy when temperature == 0, else tempered top-k / top-p."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  neg = jnp.finfo(logits.dtype).min
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    drop_sorted = (
      cum - jax.nn.softmax(sorted_logits, axis=-1) > top_p
    )  # keep the token crossing top_p
    drop = (
      jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
    )
    logits = jnp.where(drop, neg, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def bucket_length(n: int, step: int = 256) -> int:
  """The padded prompt width for `n` tokens: the next power of two (at least 16) up to `step`, then the next
  multiple of `step`. Few distinct widths mean few compilations of `generate` across calls."""
  if n <= step:
    return max(16, 1 << (max(n, 1) - 1).bit_length())
  return -(-n // step) * step


def pad_prompts(prompts: list[list[int]], pad_id: int, multiple: int | None = None):
  """Right-pads token lists to a common width -> (tokens [B,T], lengths [B]).

  The width is `bucket_length` of the longest prompt, or the next multiple of `multiple` when given.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("prompts: expected a non-empty list of non-empty token lists")
  lens = np.array([len(p) for p in prompts], np.int32)
  width = int(-(-lens.max() // multiple) * multiple) if multiple else bucket_length(int(lens.max()))
  out = np.full((len(prompts), width), pad_id, np.int32)
  for i, p in enumerate(prompts):
    out[i, : len(p)] = p
  return out, lens


def stop_token_ids(tokenizer, stop) -> tuple[tuple[int, ...], ...]:
  """Token-id sequences of `stop` strings for `generate(stop_ids=...)` (hashable, so usable as a static arg).

  A subword tokenizer may encode a stop string differently inside a longer text, so the device-side match
  only ends generation early; callers still cut the decoded text at the first stop string.
  """
  return tuple(ids for ids in (tuple(tokenizer.encode(s)) for s in stop) if ids)


def cut_at_stop(text: str, stop) -> str:
  """`text` up to the first occurrence of any of the `stop` strings."""
  for s in stop:
    if s in text:
      text = text[: text.index(s)]
  return text


def _ends_with_stop(out, i, stop_ids):
  """[N] bool: row's tokens out[:, :i+1] end with one of the `stop_ids` sequences."""
  hit = jnp.zeros((out.shape[0],), bool)
  for seq in stop_ids:
    if len(seq) > out.shape[1]:
      continue
    window = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(i + 1 - len(seq), 0), len(seq), axis=1)
    hit |= (i + 1 >= len(seq)) & jnp.all(window == jnp.asarray(seq, jnp.int32), axis=1)
  return hit


@functools.partial(
  jax.jit,
  static_argnames=(
    "model",
    "max_new_tokens",
    "num_samples",
    "temperature",
    "top_k",
    "top_p",
    "eos_id",
    "pad_id",
    "vocab_size",
    "stop_ids",
  ),
)
def generate(
  model,
  params,
  tokens,
  lengths,
  rng,
  *,
  max_new_tokens: int,
  num_samples: int = 1,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int = -1,
  pad_id: int = 0,
  vocab_size: int = 0,
  stop_ids: tuple = (),
):
  """Samples continuations of right-padded prompts tokens [B,T] with per-row `lengths`.

  `vocab_size` > 0 restricts sampling to ids below it (the tokenizer's vocabulary when the model's
  embedding table is padded larger). A row ends at EOS or once its tokens end with one of `stop_ids`
  (token-id sequences, see `stop_token_ids`); the loop ends when every row has.

  The prompt is prefilled once; its keys/values are stored once and read by all `num_samples` samples of that
  prompt (a PrefixedCache), so sampling many continuations costs little more memory traffic than one.
  Returns (new tokens [B * num_samples, max_new_tokens] padded with pad_id after EOS,
  number of generated tokens per row incl. EOS or the stop sequence). Rows are ordered prompt-major.
  """
  b, t = tokens.shape
  n = b * num_samples
  prompt = model.init_cache(b, t)
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  logits, prompt = model.apply({"params": params}, tokens, positions=positions, cache=prompt)
  trim = (lambda x: x[..., :vocab_size]) if vocab_size else (lambda x: x)
  last = trim(jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0])
  # The prompt's keys/values are kept once and shared by its samples; each row caches only its new tokens.
  prompt = prompt.replace(end=jnp.broadcast_to(lengths, prompt.end.shape))
  cache = PrefixedCache(prompt, model.init_cache(n, max_new_tokens))
  last, pos = jnp.repeat(last, num_samples, axis=0), jnp.repeat(lengths, num_samples)
  out = jnp.full((n, max_new_tokens), pad_id, jnp.int32)

  def cond(carry):
    i, _, _, _, done, _, _, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, cache, last, pos, done, out, count, rng = carry
    rng, sub = jax.random.split(rng)
    tok = sample_logits(sub, last, temperature, top_k, top_p)
    tok = jnp.where(done, pad_id, tok)
    out = out.at[:, i].set(tok)
    count = jnp.where(done, count, i + 1)
    done = done | (tok == eos_id) | _ends_with_stop(out, i, stop_ids)
    logits, cache = model.apply(
      {"params": params}, tok[:, None], positions=pos[:, None], cache=cache
    )
    return i + 1, cache, trim(logits[:, 0]), pos + 1, done, out, count, rng

  zeros = jnp.zeros((n,), jnp.int32)
  init = (jnp.int32(0), cache, last, pos, zeros.astype(bool), out, zeros, rng)
  _, _, _, _, _, out, count, _ = jax.lax.while_loop(cond, body, init)
  return out, count


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "eos_id", "vocab_size"))
def greedy_decode(
  model, params, inputs, lengths, *, max_new_tokens: int, eos_id: int, vocab_size: int
):
  """Greedy continuation of prompts (`inputs["tokens"]` [B,T], the first `lengths` tokens real) in place,
  for models without a KV cache (`MultimodalLM`: media sit in its bidirectional prefix).

  `model.apply` takes `inputs` plus tokens, input_mask and prefix_mask (the prompt). Each step reruns
  the prefix-LM over the fixed-length text. Stops when every row wrote EOS or filled T.
  Returns (tokens [B,T], end [B]: one past the last generated token, EOS included).
  """
  tokens = inputs["tokens"]
  pos = jnp.arange(tokens.shape[1])[None]
  prefix = pos < lengths[:, None]

  def cond(carry):
    i, _, _, done = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, tokens, end, done = carry
    logits = model.apply(
      {"params": params},
      **dict(inputs, tokens=tokens, input_mask=pos < end[:, None], prefix_mask=prefix),
    )
    nxt = jnp.argmax(
      jnp.take_along_axis(logits, (end - 1)[:, None, None], axis=1)[:, 0, :vocab_size], -1
    )
    write = ~done
    tokens = jnp.where(
      write[:, None] & (pos == end[:, None]), nxt[:, None].astype(tokens.dtype), tokens
    )
    end = jnp.where(write, end + 1, end)
    return i + 1, tokens, end, done | (nxt == eos_id) | (end >= tokens.shape[1])

  done = lengths >= tokens.shape[1]
  _, tokens, end, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), tokens, lengths, done))
  return tokens, end


def generate_text(
  model,
  params,
  tokenizer,
  prompts: list[str],
  *,
  max_new_tokens: int,
  rng=None,
  num_samples: int = 1,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  stop: tuple[str, ...] = (),
) -> list[str]:
  """Strings in, strings out (prompt-major when num_samples > 1); text is cut at the first stop string."""
  toks, lens = pad_prompts([tokenizer.encode(p, add_bos=True) for p in prompts], tokenizer.pad_id)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  out, n = generate(
    model,
    params,
    jnp.asarray(toks),
    jnp.asarray(lens),
    rng,
    max_new_tokens=max_new_tokens,
    num_samples=num_samples,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=tokenizer.eos_id,
    pad_id=tokenizer.pad_id,
    vocab_size=tokenizer.vocab_size,
    stop_ids=stop_token_ids(tokenizer, stop),
  )
  out, n = np.asarray(out), np.asarray(n)
  return [cut_at_stop(tokenizer.decode(row[:k].tolist()), stop) for row, k in zip(out, n)]
