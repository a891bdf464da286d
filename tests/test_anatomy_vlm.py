"""Tests for Anatomy-VLM: box utilities and matching, the synthetic phantom task, the model and its task."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from medjax.data.synthetic import anatomy
from medjax.objectives import boxes


# ---------------------------------------------------------------------------------------------
# Boxes and matching
# ---------------------------------------------------------------------------------------------
def test_hungarian_matches_scipy_on_random_costs():
  rng = np.random.default_rng(0)
  for k in range(200):
    n, m = rng.integers(1, 16, 2)
    cost = rng.normal(size=(n, m))
    if k % 3 == 0:
      cost = np.round(cost)  # ties
    rows, cols = boxes.linear_sum_assignment(cost)
    ref_rows, ref_cols = scipy.optimize.linear_sum_assignment(cost)
    assert len(rows) == min(n, m) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    np.testing.assert_allclose(cost[rows, cols].sum(), cost[ref_rows, ref_cols].sum(), atol=1e-9)
    if k % 3:  # continuous costs: the optimum is unique
      np.testing.assert_array_equal(cols, ref_cols)


def test_hungarian_match_under_jit_with_invalid_targets():
  rng = np.random.default_rng(1)
  pred = jnp.asarray(rng.uniform(0.2, 0.8, (3, 6, 4)) * [1, 1, 0.3, 0.3], jnp.float32)
  perm = np.stack([rng.permutation(6) for _ in range(3)])
  target = jnp.take_along_axis(pred, perm[..., None], 1) + 0.01
  valid = jnp.asarray(rng.random((3, 6)) < 0.7).at[:, 0].set(True)
  idx = jax.jit(lambda p, t, v: boxes.hungarian_match(boxes.match_cost(p, t, v)))(pred, target, valid)
  np.testing.assert_array_equal(np.where(valid, idx, -1), np.where(valid, perm, -1))
  assert all(len(set(row)) == 6 for row in np.asarray(idx))


def test_box_conversions_iou_and_giou():
  a = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]])
  b = jnp.array([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 0.7, 0.7]])
  np.testing.assert_allclose(boxes.iou(a, b), [1 / 7, 0.0], atol=1e-6)
  np.testing.assert_allclose(boxes.giou(a, b), [1 / 7 - (0.5625 - 0.4375) / 0.5625, -(0.49 - 0.08) / 0.49], atol=1e-6)
  np.testing.assert_allclose(boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(a)), a, atol=1e-7)
  np.testing.assert_allclose(boxes.pairwise_iou(a, b), [[1 / 7, 0.0], [0.0, 0.0]], atol=1e-6)
  l1, g = boxes.box_loss(boxes.xyxy_to_cxcywh(a)[None], boxes.xyxy_to_cxcywh(a)[None], jnp.ones((1, 2)))
  assert float(l1) == 0.0 and abs(float(g)) < 1e-5


# ---------------------------------------------------------------------------------------------
# Synthetic phantoms
# ---------------------------------------------------------------------------------------------
def test_phantoms_have_varying_boxes_and_consistent_labels():
  exs = anatomy.make_examples(40, seed=0)
  bx = np.stack([e["boxes"] for e in exs])
  assert bx.shape == (40, len(anatomy.REGIONS), 4) and np.all(bx.std(0) > 0.002)
  held = [anatomy.FINDING_NAMES.index(f) for f in anatomy.HELD_OUT]
  assert all(e["labels"][held].sum() == 0 for e in exs)  # held-out findings never in training images
  for e in exs:
    for f, r in e["findings"]:
      assert e["region_labels"][anatomy.REGIONS.index(r), anatomy.FINDING_NAMES.index(f)] == 1
      assert r in e["phrases"][anatomy.REGIONS.index(r)]
  test = anatomy.make_examples(60, seed=1, findings=anatomy.FINDING_NAMES)
  assert any(e["labels"][held].sum() > 0 for e in test)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"boxes: expected non-empty boxes inside the image"):
    anatomy.check_boxes([[0.9, 0.5, 0.4, 0.2]])
  with pytest.raises(ValueError, match=r"regions: unknown region name 'left elbow'"):
    anatomy.make_example(np.random.default_rng(0), regions=("trachea", "left elbow"))
  with pytest.raises(ValueError, match=r"phrases: expected a non-empty list"):
    anatomy.encode_phrases([], anatomy.word_tokenizer(), 8)
  with pytest.raises(ValueError, match=r"cost: expected \[batch, queries, targets\]"):
    boxes.hungarian_match(jnp.zeros((2, 3, 5)))
