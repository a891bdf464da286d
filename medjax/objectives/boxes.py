"""Boxes for set prediction (DETR style): conversions, IoU/GIoU, Hungarian matching, L1 + GIoU loss.

Boxes are normalised to [0, 1]; "cxcywh" is (centre x, centre y, width, height), "xyxy" is
(x0, y0, x1, y1). Matching runs on the host (an exact O(n^3) Hungarian solver, reached from jit
through `jax.pure_callback`); the losses are jit-friendly.
"""

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-7


def cxcywh_to_xyxy(b):
  cx, cy, w, h = jnp.moveaxis(jnp.asarray(b), -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def xyxy_to_cxcywh(b):
  x0, y0, x1, y1 = jnp.moveaxis(jnp.asarray(b), -1, 0)
  return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def box_area(b):
  """Area of xyxy boxes (0 for degenerate boxes)."""
  return jnp.maximum(b[..., 2] - b[..., 0], 0) * jnp.maximum(b[..., 3] - b[..., 1], 0)


def _iou_parts(a, b):
  """Elementwise (broadcasting) IoU, union and enclosing area of xyxy boxes."""
  lt = jnp.maximum(a[..., :2], b[..., :2])
  rb = jnp.minimum(a[..., 2:], b[..., 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  union = box_area(a) + box_area(b) - inter
  iou = inter / (union + _EPS)
  enc = jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2])
  return iou, union, jnp.maximum(enc[..., 0], 0) * jnp.maximum(enc[..., 1], 0)


def iou(a, b):
  """Elementwise IoU of xyxy boxes [..., 4] (broadcasting)."""
  return _iou_parts(a, b)[0]


def giou(a, b):
  """Elementwise generalised IoU of xyxy boxes, in [-1, 1]."""
  i, union, enclosing = _iou_parts(a, b)
  return i - (enclosing - union) / (enclosing + _EPS)


def pairwise_iou(a, b):
  """[..., N, 4] x [..., M, 4] -> [..., N, M]."""
  return iou(a[..., :, None, :], b[..., None, :, :])


def pairwise_giou(a, b):
  """[..., N, 4] x [..., M, 4] -> [..., N, M]."""
  return giou(a[..., :, None, :], b[..., None, :, :])


# ---------------------------------------------------------------------------------------------------
# Hungarian matching.
# ---------------------------------------------------------------------------------------------------
def linear_sum_assignment(cost) -> tuple[np.ndarray, np.ndarray]:
  """Minimum-cost assignment of a [n, m] cost matrix (host, numpy), like scipy's.

  Shortest augmenting paths with row/column potentials (Kuhn-Munkres / Jonker-Volgenant), O(n^2 m).
  Returns (rows, cols): min(n, m) pairs, sorted by row.
  """
  cost = np.asarray(cost, np.float64)
  if cost.ndim != 2:
    raise ValueError(f"cost: expected a 2-D matrix, got shape {cost.shape}")
  if not np.all(np.isfinite(cost)):
    raise ValueError("cost: expected finite entries, got inf or nan")
  if cost.shape[0] > cost.shape[1]:
    cols, rows = linear_sum_assignment(cost.T)
    order = np.argsort(rows)
    return rows[order], cols[order]
  n, m = cost.shape
  u, v = np.zeros(n + 1), np.zeros(m + 1)
  match = np.zeros(
    m + 1, np.int64
  )  # match[j]: row (1-based) assigned to column j; column 0 is virtual
  for i in range(1, n + 1):
    match[0] = i
    j0 = 0
    minv = np.full(m + 1, np.inf)
    way = np.zeros(m + 1, np.int64)
    used = np.zeros(m + 1, bool)
    while match[j0] != 0:
      used[j0] = True
      i0 = match[j0]
      free = ~used[1:]
      reduced = cost[i0 - 1] - u[i0] - v[1:]
      better = free & (reduced < minv[1:])
      minv[1:] = np.where(better, reduced, minv[1:])
      way[1:] = np.where(better, j0, way[1:])
      cand = np.where(free, minv[1:], np.inf)
      j1 = int(np.argmin(cand)) + 1
      delta = cand[j1 - 1]
      u[match[used]] += delta
      v[used] -= delta
      minv[1:] = np.where(free, minv[1:] - delta, minv[1:])
      j0 = j1
    while j0:
      j1 = way[j0]
      match[j0] = match[j1]
      j0 = j1
  cols = np.nonzero(match[1:])[0]
  rows = match[1:][cols] - 1
  order = np.argsort(rows)
  return rows[order], cols[order]


def _match_batch(cost: np.ndarray) -> np.ndarray:
  """[B, Q, T] costs (Q >= T) -> [B, T] int32: the query matched to each target."""
  out = np.zeros(cost.shape[::2], np.int32)
  for b, c in enumerate(np.asarray(cost)):
    rows, cols = linear_sum_assignment(c)
    out[b, cols] = rows
  return out


def hungarian_match(cost):
  """Traceable: [B, Q, T] costs (Q >= T) -> [B, T] query index per target (no gradient)."""
  if cost.ndim != 3 or cost.shape[1] < cost.shape[2]:
    raise ValueError(
      f"cost: expected [batch, queries, targets] with queries >= targets, got {cost.shape}"
    )
  out = jax.ShapeDtypeStruct(cost.shape[::2], jnp.int32)
  return jax.pure_callback(
    _match_batch, out, jax.lax.stop_gradient(cost).astype(jnp.float32), vmap_method="sequential"
  )


def match_cost(
  pred_boxes,
  target_boxes,
  target_valid,
  class_probs=None,
  *,
  l1_weight=5.0,
  giou_weight=2.0,
  class_weight=1.0,
):
  """DETR matching cost [B, Q, T] of cxcywh boxes. Invalid targets cost 0 for every query, so they
  take the queries left over and never change the assignment of the valid ones.

  class_probs: optional [B, Q, T] probability that query q shows target t's class (region identity).
  """
  l1 = jnp.sum(jnp.abs(pred_boxes[:, :, None] - target_boxes[:, None]), -1)
  g = pairwise_giou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(target_boxes))
  cost = l1_weight * l1 - giou_weight * g
  if class_probs is not None:
    cost = cost - class_weight * class_probs
  return jnp.where(target_valid[:, None, :], cost, 0.0)


def box_loss(pred_boxes, target_boxes, valid):
  """Mean L1 (over coordinates) and mean (1 - GIoU) over valid matched pairs of cxcywh boxes [B, T, 4]."""
  valid = valid.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(valid), 1.0)
  l1 = jnp.sum(jnp.mean(jnp.abs(pred_boxes - target_boxes), -1) * valid) / n
  g = giou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(target_boxes))
  return l1, jnp.sum((1.0 - g) * valid) / n


def gather_queries(x, idx):
  """x [B, Q, ...], idx [B, T] -> [B, T, ...]."""
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
