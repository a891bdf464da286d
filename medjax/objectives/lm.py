"""Token-level language-model loss with loss masks."""

import jax.numpy as jnp
import optax


def masked_cross_entropy(logits, targets, mask):
  """Mean cross-entropy over positions where mask > 0 -> (loss, token accuracy, weight)."""
  mask = mask.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  weight = jnp.maximum(mask.sum(), 1.0)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (ce * mask).sum() / weight, (correct * mask).sum() / weight, mask.sum()
