"""Token-level language-model loss with loss masks, whole or over chunks of positions."""

import functools

import jax
import jax.numpy as jnp
import optax


def masked_cross_entropy(logits, targets, mask):
  """Mean cross-entropy over positions where mask > 0 -> (loss, token accuracy, weight)."""
  mask = mask.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  weight = jnp.maximum(mask.sum(), 1.0)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (ce * mask).sum() / weight, (correct * mask).sum() / weight, mask.sum()


def _chunk_sums(logits, targets, mask):
  """Masked cross-entropy sum, correct-token count and d(sum)/d(logits) of one chunk."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  dlogits = (jax.nn.softmax(logits) - jax.nn.one_hot(targets, logits.shape[-1])) * mask[..., None]
  return (ce * mask).sum(), (correct * mask).sum(), dlogits


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_sums(logits_fn, weights, hidden, targets, mask):
  """(cross-entropy sum, correct count) over chunks [n, B, C, ...]; one chunk's logits at a time."""

  def body(carry, xs):
    h, t, m = xs
    ce, correct, _ = _chunk_sums(logits_fn(weights, h), t, m)
    return (carry[0] + ce, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  return jax.lax.scan(body, (zero, zero), (hidden, targets, mask))[0]


def _scan_sums_fwd(logits_fn, weights, hidden, targets, mask):
  # The gradient of the sum is taken chunk by chunk on the way forward (no logits are kept or
  # recomputed): d/dweights accumulates over chunks, d/dhidden is stacked.
  def body(carry, xs):
    ce_sum, correct_sum, dw = carry
    h, t, m = xs
    logits, vjp = jax.vjp(logits_fn, weights, h)
    ce, correct, dlogits = _chunk_sums(logits, t, m)
    dw_chunk, dh = vjp(dlogits)
    dw = jax.tree.map(lambda a, b: a + b.astype(a.dtype), dw, dw_chunk)
    return (ce_sum + ce, correct_sum + correct, dw), dh

  zero = jnp.zeros((), jnp.float32)
  dw0 = jax.tree.map(lambda w: jnp.zeros(w.shape, jnp.float32), weights)
  (ce, correct, dw), dh = jax.lax.scan(body, (zero, zero, dw0), (hidden, targets, mask))
  dw = jax.tree.map(lambda d, w: d.astype(w.dtype), dw, weights)
  return (ce, correct), (dw, dh)


def _scan_sums_bwd(logits_fn, res, g):
  del logits_fn
  dw, dh = res
  g_ce = g[0]  # the correct count has no gradient
  return (
    jax.tree.map(lambda d: (d * g_ce).astype(d.dtype), dw),
    (dh * g_ce).astype(dh.dtype),
    None,
    None,
  )


_scan_sums.defvjp(_scan_sums_fwd, _scan_sums_bwd)


def chunked_cross_entropy(logits_fn, weights, hidden, targets, mask, chunk: int):
  """`masked_cross_entropy` of logits_fn(weights, hidden) computed `chunk` positions at a time.

  hidden [B,T,E]; logits_fn(weights, h [B,C,E]) -> float32 logits [B,C,V]. Only one chunk's
  [B, C, V] logits exist at a time, forward and backward (the gradient of each chunk is taken as it
  is computed). T need not be a multiple of `chunk`: the last chunk is padded with masked positions.
  """
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
    raise ValueError(f"logits_chunk: expected a positive int, got {chunk!r}")
  b, t = targets.shape
  chunk = min(chunk, t)
  n = -(-t // chunk)
  pad = n * chunk - t
  mask = mask.astype(jnp.float32)
  padded = lambda x: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)) if pad else x
  split = lambda x: jnp.moveaxis(padded(x).reshape((b, n, chunk) + x.shape[2:]), 1, 0)
  ce, correct = _scan_sums(logits_fn, weights, split(hidden), split(targets), split(mask))
  weight = jnp.maximum(mask.sum(), 1.0)
  return ce / weight, correct / weight, mask.sum()


def lm_loss(model, params, batch):
  """A DecoderLM's next-token loss on {tokens, targets, loss_mask, input_mask}
  -> (loss, token accuracy, weight); over chunks of `model.cfg.logits_chunk` positions when > 0."""
  chunk = model.cfg.logits_chunk
  out, _ = model.apply(
    {"params": params}, batch["tokens"], input_mask=batch["input_mask"], return_hidden=bool(chunk)
  )
  if not chunk:
    return masked_cross_entropy(out, batch["targets"], batch["loss_mask"])
  logits_fn = lambda w, h: model.apply({"params": w}, h, method="logits")
  return chunked_cross_entropy(
    logits_fn, model.output_params(params), out, batch["targets"], batch["loss_mask"], chunk
  )
