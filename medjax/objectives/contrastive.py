"""Contrastive losses (SigLIP sigmoid, CLIP softmax, region-phrase InfoNCE with hard negatives,
multi-label sigmoid BCE) and retrieval recall@K."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

SIGLIP_T_PRIME_INIT = float(np.log(10.0))  # temperature t = exp(t'), starts at 10
SIGLIP_BIAS_INIT = -10.0


def _check(zimg, ztxt):
  if zimg.ndim != 2 or zimg.shape != ztxt.shape:
    raise ValueError(
      f"zimg/ztxt: expected two [batch, dim] arrays of one shape, got {zimg.shape} and {ztxt.shape}"
    )


def sigmoid_loss(zimg, ztxt, t_prime, bias):
  """SigLIP (Zhai et al. 2023): -1/B sum_ij log sigmoid(z_ij (exp(t') <x_i, y_j> + b)), z = +1 on the diagonal.

  zimg, ztxt [B, D] L2-normalised; t_prime, bias scalars (learned).
  """
  _check(zimg, ztxt)
  logits = jnp.exp(t_prime) * zimg.astype(jnp.float32) @ ztxt.astype(jnp.float32).T + bias
  labels = 2.0 * jnp.eye(zimg.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / zimg.shape[0]


def softmax_loss(zimg, ztxt, t_prime):
  """CLIP: mean of image->text and text->image cross-entropy with temperature exp(t')."""
  _check(zimg, ztxt)
  logits = jnp.exp(t_prime) * zimg.astype(jnp.float32) @ ztxt.astype(jnp.float32).T
  idx = jnp.arange(zimg.shape[0])
  ce = optax.softmax_cross_entropy_with_integer_labels
  return 0.5 * (ce(logits, idx).mean() + ce(logits.T, idx).mean())


def retrieval_recall(zimg, ztxt, ks=(1, 5), labels=None) -> dict:
  """Recall@K both ways within a batch. A hit is a retrieved item whose `labels` (e.g. an id of the
  report text; default: the row index) equals the query's. Also returns `chance@1`: the expected
  recall@1 of random scores (the mean share of candidates that count as hits).
  """
  _check(zimg, ztxt)
  b = zimg.shape[0]
  labels = jnp.arange(b) if labels is None else jnp.asarray(labels)
  same = labels[:, None] == labels[None, :]
  sim = zimg.astype(jnp.float32) @ ztxt.astype(jnp.float32).T
  out = {}
  for name, s in (("i2t", sim), ("t2i", sim.T)):
    order = jnp.argsort(-s, axis=1)
    hits = jnp.take_along_axis(same, order, axis=1)
    for k in ks:
      out[f"{name}_recall@{k}"] = jnp.mean(
        jnp.any(hits[:, : min(k, b)], axis=1).astype(jnp.float32)
      )
  out["chance@1"] = jnp.mean(same.astype(jnp.float32))
  return out


def info_nce(region_emb, pos_emb, neg_emb, pos_tokens, valid, neg_valid, scale):
  """Region -> phrase InfoNCE over the batch's phrases plus per-region hard negatives.

  region_emb/pos_emb [N,E], neg_emb [N,K,E], pos_tokens [N,T] (identical phrases are not used as
  each other's negatives), valid [N], neg_valid [N,K]. Returns (loss, top-1 accuracy).
  """
  n = region_emb.shape[0]
  same = jnp.all(pos_tokens[:, None] == pos_tokens[None], -1) & ~jnp.eye(n, dtype=bool)
  batch_logits = jnp.where(same | ~valid[None].astype(bool), -1e9, scale * region_emb @ pos_emb.T)
  neg_logits = jnp.where(
    neg_valid.astype(bool), scale * jnp.einsum("ne,nke->nk", region_emb, neg_emb), -1e9
  )
  logits = jnp.concatenate([batch_logits, neg_logits], 1)
  ce = jax.nn.logsumexp(logits, -1) - jnp.diagonal(batch_logits)
  w = valid.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(w), 1.0)
  acc = (jnp.argmax(logits, -1) == jnp.arange(n)).astype(jnp.float32)
  return jnp.sum(ce * w) / denom, jnp.sum(acc * w) / denom


def sigmoid_bce(logits, labels, mask):
  """Mean binary cross-entropy over the labels where `mask` [F] is 1."""
  bce = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  m = jnp.broadcast_to(mask, logits.shape)
  return jnp.sum(bce * m) / jnp.maximum(jnp.sum(m), 1.0)
