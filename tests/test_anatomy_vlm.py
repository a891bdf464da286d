"""Tests for Anatomy-VLM: box utilities and matching, the synthetic phantom task, the model and its task,
and the colab (the Chest ImaGenome builder and task: tests/test_chest_imagenome.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from fast_compile import RUN

from medjax import config_lib
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
  idx = jax.jit(lambda p, t, v: boxes.hungarian_match(boxes.match_cost(p, t, v)))(
    pred, target, valid
  )
  np.testing.assert_array_equal(np.where(valid, idx, -1), np.where(valid, perm, -1))
  assert all(len(set(row)) == 6 for row in np.asarray(idx))


def test_box_conversions_iou_and_giou():
  a = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]])
  b = jnp.array([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 0.7, 0.7]])
  np.testing.assert_allclose(boxes.iou(a, b), [1 / 7, 0.0], atol=1e-6)
  np.testing.assert_allclose(
    boxes.giou(a, b), [1 / 7 - (0.5625 - 0.4375) / 0.5625, -(0.49 - 0.08) / 0.49], atol=1e-6
  )
  np.testing.assert_allclose(boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(a)), a, atol=1e-7)
  np.testing.assert_allclose(boxes.pairwise_iou(a, b), [[1 / 7, 0.0], [0.0, 0.0]], atol=1e-6)
  l1, g = boxes.box_loss(
    boxes.xyxy_to_cxcywh(a)[None], boxes.xyxy_to_cxcywh(a)[None], jnp.ones((1, 2))
  )
  assert float(l1) == 0.0 and abs(float(g)) < 1e-5


# ---------------------------------------------------------------------------------------------
# Synthetic phantoms
# ---------------------------------------------------------------------------------------------
def test_phantoms_have_varying_boxes_and_consistent_labels():
  exs = anatomy.make_examples(40, seed=0)
  bx = np.stack([e["boxes"] for e in exs])
  assert bx.shape == (40, len(anatomy.REGIONS), 4) and np.all(bx.std(0) > 0.002)
  held = [anatomy.FINDING_NAMES.index(f) for f in anatomy.HELD_OUT]
  assert all(
    e["labels"][held].sum() == 0 for e in exs
  )  # held-out findings never in training images
  for e in exs:
    for f, r in e["findings"]:
      assert e["region_labels"][anatomy.REGIONS.index(r), anatomy.FINDING_NAMES.index(f)] == 1
      assert r in e["phrases"][anatomy.REGIONS.index(r)]
  test = anatomy.make_examples(60, seed=1, findings=anatomy.FINDING_NAMES)
  assert any(e["labels"][held].sum() > 0 for e in test)
  assert (
    all(len(n) == 2 for n in exs[0]["negatives"][:6]) and exs[0]["negatives"][7] == []
  )  # lungs; mediastinum


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"boxes: expected non-empty boxes inside the image"):
    anatomy.check_boxes([[0.9, 0.5, 0.4, 0.2]])
  with pytest.raises(ValueError, match=r"regions: unknown region name 'left elbow'"):
    anatomy.make_example(np.random.default_rng(0), regions=("trachea", "left elbow"))
  with pytest.raises(ValueError, match=r"phrases: expected a non-empty list"):
    anatomy.encode_phrases([], anatomy.word_tokenizer(), 8)
  with pytest.raises(ValueError, match=r"cost: expected \[batch, queries, targets\]"):
    boxes.hungarian_match(jnp.zeros((2, 3, 5)))


# ---------------------------------------------------------------------------------------------
# Model and task
# ---------------------------------------------------------------------------------------------
def _config(variant="tiny", **loss):
  c = config_lib.load_module("configs/anatomy_vlm.py").get_config(variant)
  c.loss.update(loss)
  return c


LOCALISE_STEPS, LOCALISE_MARGIN = 200, 0.12
ZERO_SHOT_STEPS = 800


def _task(**loss):
  from medjax.tasks import get_task

  return get_task(_config(**loss))


def test_paper_config_builds_vit_b16_with_29_regions():
  from medjax.parallel.sharding import strip_boxes
  from medjax.tasks import get_task

  task = get_task(_config("paper"))
  model = task.build_model()
  params = jax.eval_shape(
    lambda r: strip_boxes(task.init_params(model, r, task.dummy_batch(1))), jax.random.PRNGKey(0)
  )
  assert params["queries"].shape == (29, 768)
  n_vision = sum(x.size for x in jax.tree.leaves(params["vision"]))
  assert 85e6 < n_vision < 88e6  # ViT-B/16
  out = jax.eval_shape(
    lambda p, x: model.apply({"params": p}, x, method=model.encode_image),
    params,
    jax.ShapeDtypeStruct((2, 224, 224, 1), jnp.float32),
  )
  assert out["boxes"].shape == (2, 29, 4) and out["region_emb"].shape == (2, 29, 512)


def test_stages_switch_losses_on_by_step_and_text_encoder_is_frozen():
  from medjax.parallel.sharding import strip_boxes

  task = _task(stage_steps=(5, 5), matching="fixed", weights=(1.0, 1.0, 1.0))
  model = task.build_model()
  batch = next(iter(task.train_data(batch_size=4, seed=0, shard_index=0, shard_count=1)))
  # Compiled at XLA:CPU level 0 (FAST): this test checks which terms are summed, not speed, and the
  # two compiles take ~40% of the time at the default level.
  params = jax.jit(lambda r: strip_boxes(task.init_params(model, r, batch)))(jax.random.PRNGKey(0))
  grad_fn = jax.jit(
    jax.value_and_grad(lambda p, b, s: task.loss(model, p, b, None, s), has_aux=True)
  )
  totals = {}
  for step in (0, 5, 10):
    (total, m), grads = grad_fn(params, batch, jnp.int32(step))
    totals[step] = (float(total), m)
  _, m = totals[0]
  np.testing.assert_allclose(totals[0][0], m["loss_anat"], rtol=1e-5)
  np.testing.assert_allclose(totals[5][0], m["loss_anat"] + m["loss_global"], rtol=1e-5)
  np.testing.assert_allclose(
    totals[10][0], m["loss_anat"] + m["loss_global"] + m["loss_fine"], rtol=1e-5
  )
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["text_encoder"]))
  assert float(jnp.abs(grads["text_proj"]["kernel"]).max()) > 0.0
  w = _task(stage_steps=(5, 5), weights=(0.0, 0.0, 1.0))._stage_weights(jnp.int32(0))
  assert [float(x) for x in w] == [0.0, 0.0, 1.0]  # no detection loss: its stage is skipped
  w = _task(stage_steps=(5, 5), weights=(1.0, 1.0, 0.0))._stage_weights(jnp.int32(5))
  assert [float(x) for x in w] == [
    1.0,
    1.0,
    0.0,
  ]  # no global loss: fine alignment follows detection


def test_text_encoder_reads_each_distinct_phrase_once_with_equal_results():
  """`text_unique`: features of the distinct phrases, gathered back, equal every phrase's own (and
  their gradients); a call with more distinct phrases than `text_unique` reads every phrase."""
  import dataclasses

  from medjax.models.anatomy_vlm import AnatomyVLM, AnatomyVLMConfig

  cfg = AnatomyVLMConfig()
  rng = np.random.default_rng(0)
  rows = rng.integers(1, 100, (5, 16))
  rows[:, 10:] = 0  # padded phrases
  tokens = jnp.asarray(rows[rng.integers(0, 5, (3, 7))])  # 21 phrases, 5 distinct
  params = AnatomyVLM(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)), tokens)["params"]

  def grad_and_features(unique):
    model = AnatomyVLM(dataclasses.replace(cfg, text_unique=unique))
    encode = lambda p: model.apply({"params": p}, tokens, method=model.encode_text)
    return jax.jit(lambda p: (jax.grad(lambda q: jnp.sum(encode(q) ** 3))(p), encode(p)))(params)

  want_grads, want = grad_and_features(0)
  for unique in (8, 5, 4):  # room to spare, exactly enough, too few (every phrase is read)
    grads, got = grad_and_features(unique)
    np.testing.assert_allclose(got, want, atol=1e-6)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, atol=1e-5)
  with pytest.raises(ValueError, match="text_unique: expected >= 0"):
    AnatomyVLMConfig(text_unique=-1)


def test_auc_balanced_accuracy_and_f1_match_their_definitions():
  from medjax.eval.classification import balanced_accuracy, f1_score, roc_auc

  rng = np.random.default_rng(0)
  y = rng.random(300) < 0.3
  s = np.round(y * 0.5 + rng.normal(size=300), 1)  # ties
  pos, neg = s[y][:, None], s[~y][None]
  np.testing.assert_allclose(roc_auc(y, s), np.mean((pos > neg) + 0.5 * (pos == neg)), atol=1e-12)
  p = s > 0.3
  np.testing.assert_allclose(balanced_accuracy(y, p), (np.mean(p[y]) + np.mean(~p[~y])) / 2)
  tp = np.sum(p & y)
  np.testing.assert_allclose(f1_score(y, p), tp / (tp + 0.5 * (np.sum(p & ~y) + np.sum(~p & y))))


def _train(tmp_path, steps: int, test_size: int, **loss):
  """train() through the one loop, scored once at the end with its input-ablation control (each
  test phantom read in place of another's image: eval_ablated/*); -> (metrics, task)."""
  from medjax.tasks import get_task
  from medjax.train.loop import train

  c = _config(**loss)
  c.train.update(
    steps=steps,
    eval_every=steps,
    log_every=steps,
    checkpoint_every=0,
    eval_ablation=True,
    compiler_options=RUN,  # hundreds of steps: XLA's defaults (tests/fast_compile.py)
  )
  c.data.test_size = test_size
  c.data.eval_loss = False  # the bars read the test phantoms only, not the validation loss
  c.parallel.num_devices = 1  # ~25% less CPU a step than sharding over the 8 fake devices
  return train(c, str(tmp_path)), get_task(c)


def _mean_box_miou(task, n_train: int = 512) -> float:
  """Image-blind baseline: each region's mean training box, scored on the test phantoms."""
  src = task.source("train")
  mean = np.mean([src[i]["boxes"] for i in range(n_train)], 0)
  true = np.stack([e["boxes"] for e in task.test_examples()])
  pred = np.broadcast_to(mean, true.shape)
  return float(np.mean(boxes.iou(boxes.cxcywh_to_xyxy(pred), boxes.cxcywh_to_xyxy(true))))


@pytest.mark.slow
def test_tiny_training_localises_regions(tmp_path):
  """Detection alone: held-out box mean IoU of the matched queries well above the image-blind mean
  box, which the same model falls below when it reads another phantom's image."""
  res, task = _train(tmp_path, LOCALISE_STEPS, 128, weights=(1.0, 0.0, 0.0))
  base = _mean_box_miou(task)
  assert 0.5 < base < 0.7, base  # the phantoms' anatomy varies: a constant box is far from exact
  assert res["eval/box_miou"] > base + LOCALISE_MARGIN, (res["eval/box_miou"], base)
  assert res["eval_ablated/box_miou"] < base, (res["eval_ablated/box_miou"], base)


@pytest.mark.slow
def test_tiny_training_reads_heldout_findings_zero_shot(tmp_path):
  """Global + fine alignment, unstaged (the ablation's "+ fine alignment" row without detection):
  findings never drawn in a training image (mass: a large round dense spot; bleb: a small round
  lucent spot) are recognised from their knowledge descriptions, whose attribute words seen findings
  use in other combinations, per image and per anatomical region (anatomy-wise). Controls: the other
  held-out finding's description (mass <-> bleb; the image evidence of "a spot is there" alone
  scores it), and each image read in place of another's (2000-step figures of every row:
  docs/results.md)."""
  res, _ = _train(tmp_path, ZERO_SHOT_STEPS, 256, weights=(0.0, 1.0, 3.0), stage_steps=(0, 0))
  e = lambda k: res[f"eval/{k}"]
  ablated = lambda k: res[f"eval_ablated/{k}"]
  for group in ("seen", "heldout"):
    assert e(f"auc_{group}") > e(f"auc_wrong_{group}") + 0.15, res
    assert abs(ablated(f"auc_{group}") - 0.5) < 0.08, res
  assert e("auc_seen") > 0.75 and e("auc_heldout") > 0.65, res
  # One-sided: a wrong description far below 0.5 ranks the other finding's images first, i.e. the
  # model tells the two descriptions apart (seed 1: 0.387); near the right one it would not.
  assert e("auc_wrong_heldout") < 0.6, res
  # Anatomy-wise (finding x region AUC): which region holds the held-out finding, from its
  # description; above the wrong description and at chance with the images rolled.
  assert e("auc_anatomy_heldout") > max(0.6, e("auc_anatomy_wrong_heldout") + 0.08), res
  assert abs(ablated("auc_anatomy_heldout") - 0.5) < 0.08, res


def test_evaluation_metrics_score_an_oracle_perfectly_and_noise_at_chance():
  from medjax.tasks.anatomy_vlm import evaluation_metrics

  exs = anatomy.make_examples(200, seed=3, findings=anatomy.FINDING_NAMES)
  labels = np.stack([e["labels"] for e in exs])
  region_labels = np.stack([e["region_labels"] for e in exs])
  true_xyxy = np.asarray(boxes.cxcywh_to_xyxy(np.stack([e["boxes"] for e in exs])))
  oracle = {
    "boxes": true_xyxy,
    "image_probs": labels * 0.8 + 0.1,
    "region_scores": region_labels,
    "image_region_scores": region_labels.max(1),
    "image_fused_scores": labels,
  }
  allowed = np.array(
    [[r in anatomy.FINDINGS[f].regions for f in anatomy.FINDING_NAMES] for r in anatomy.REGIONS]
  )
  m = evaluation_metrics(oracle, exs, anatomy.FINDING_NAMES, anatomy.SEEN, allowed)
  for k in (
    "box_miou",
    "auc_seen",
    "auc_heldout",
    "auc_fused_heldout",
    "auc_anatomy_heldout",
    "bmac_seen",
    "f1_heldout",
  ):
    assert m[k] == pytest.approx(1.0, abs=1e-4), (k, m[k])
  for f in anatomy.FINDING_NAMES:  # per finding: image level (global head, regions), per region
    assert m[f"pos/{f}"] == labels[:, anatomy.FINDING_NAMES.index(f)].sum() > 0, f
    for k in ("auc", "auc_region", "auc_anatomy"):
      assert m[f"{k}/{f}"] == pytest.approx(1.0, abs=1e-4), (k, f, m[f"{k}/{f}"])
  # Regions without a box (box_valid 0, e.g. dropped from a silver scene graph) are not scored:
  # a wrong box there leaves the oracle's mean IoU at 1, where scoring it would lower it.
  masked = [{**e, "box_valid": np.r_[0.0, np.ones(len(e["boxes"]) - 1)]} for e in exs]
  wrong = true_xyxy.copy()
  wrong[:, 0] = [0.0, 0.0, 0.01, 0.01]
  assert evaluation_metrics(
    {**oracle, "boxes": wrong}, masked, anatomy.FINDING_NAMES, anatomy.SEEN
  )["box_miou"] == pytest.approx(1.0, abs=1e-5)
  assert evaluation_metrics({**oracle, "boxes": wrong}, exs, anatomy.FINDING_NAMES, anatomy.SEEN)[
    "box_miou"
  ] < 1 - 0.5 / len(anatomy.REGIONS)
  rng = np.random.default_rng(0)
  noise = {k: rng.random(v.shape) for k, v in oracle.items() if k != "boxes"}
  m = evaluation_metrics(
    {**noise, "boxes": true_xyxy[:, ::-1]}, exs, anatomy.FINDING_NAMES, anatomy.SEEN
  )
  assert (
    abs(m["auc_seen"] - 0.5) < 0.1 and abs(m["auc_heldout"] - 0.5) < 0.15 and m["box_miou"] < 0.5
  )
  assert abs(m["auc_fused_heldout"] - 0.5) < 0.15
  per_finding = [m[f"auc/{f}"] for f in anatomy.FINDING_NAMES]
  assert abs(np.mean(per_finding) - 0.5) < 0.1, per_finding


# ---------------------------------------------------------------------------------------------
# Colab
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_colab_draws_boxes_and_region_heat(run_colab):
  """colabs/anatomy_vlm.ipynb end to end, with its parameters cell shrunk: the phantom model's
  zero-shot reading, then boxes on a real-format Chest ImaGenome image."""
  text, outputs = run_colab(
    "anatomy_vlm", 'STEPS, NUM_TEST, FINDING, OVERRIDES = 2, 16, "bleb", {"train.log_every": 1}'
  )
  assert "eval/auc_heldout" in text and "'a small round lucent spot'" in text and "<- true" in text
  assert sum(
    line.strip().startswith(r) for line in text.splitlines() for r in anatomy.REGIONS
  ) == len(anatomy.REGIONS)
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # phantom; Chest ImaGenome
  # The builder's report on its real-format fixtures, and the dropped regions of the quirky record.
  assert "train: images 3, images_avoided 1, images_without_scene_graph 1" in text
  assert "boxes_zero_area 1, boxes_negative 1, boxes_outside_image 1" in text
  assert "'mediastinum'" in text.split("regions without a usable box:")[1].splitlines()[0]
