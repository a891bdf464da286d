"""Chest ImaGenome for Anatomy-VLM: the TFDS builder on its dummy_data (the release's layout, with a
record of each real-data quirk), the task's examples, and train.py end to end on the fixtures."""

import csv
import json
import os
import types

import numpy as np
import pytest
from scripts import run_script

from medjax.data import builders
from medjax.data.synthetic import anatomy
from medjax.objectives import boxes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANUAL = os.path.join(ROOT, "data", "chest_imagenome", "dummy_data")
SPLITS = os.path.join(MANUAL, "silver_dataset", "splits")
REGIONS = anatomy.CHEST_IMAGENOME_REGIONS
QUIRKY = "c4a07e12-8d3f5b61-2e9a0c47-b5d81f39-6a2c4e70"  # one box of each kind
AVOIDED = "7b2f9e05-1c6d48a3-95e0b7d2-3f8a61c4-d07e2b58"  # complete, but on the avoid-list
NO_GRAPH = "0d5e3b71-a29c6f84-e17b05d3-9c4a28f6-3b81d7e0"  # listed in train.csv, no scene graph
H, W = 96, 80  # the fixture images: padded 8 px each side to a square


def _dec(s):
  return s.decode() if isinstance(s, bytes) else str(s)


def _graph(dicom_id):
  path = os.path.join(MANUAL, "silver_dataset", "scene_graph", f"{dicom_id}_SceneGraph.json")
  return json.load(open(path))


def _ids(split_file):
  with open(os.path.join(SPLITS, split_file)) as f:
    return [row["dicom_id"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The "tiny" config (32 px) prepared once: (builder, {split: source})."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  builders.load_builder(
    "chest_imagenome", "train", data_dir=data_dir, manual_dir=MANUAL, config="tiny"
  )
  builder = builders.builder_class("chest_imagenome")(data_dir=data_dir, config="tiny")
  return builder, builder.as_data_source()


def test_builder_reads_scene_graphs(prepared):
  _, src = prepared
  assert {k: len(v) for k, v in src.items()} == {"train": 3, "validation": 1, "test": 2}
  ex = next(
    src["train"][i] for i in range(3) if _dec(src["train"][i]["image_id"]).startswith("3f1e")
  )
  image, bx, valid = np.asarray(ex["image"]), np.asarray(ex["boxes"]), np.asarray(ex["box_valid"])
  assert image.shape == (32, 32, 1) and image.dtype == np.uint8
  graph = _graph(_dec(ex["image_id"]))
  names = {o["bbox_name"] for o in graph["objects"]}
  assert "left cardiophrenic angle" in names  # not one of the 29: skipped
  assert {REGIONS[i] for i in np.nonzero(valid)[0]} == names & set(REGIONS)
  rl = next(o for o in graph["objects"] if o["bbox_name"] == "right lung")
  want = np.array(
    [rl["original_x1"] + 8, rl["original_y1"], rl["original_x2"] + 8, rl["original_y2"]]
  )
  np.testing.assert_allclose(
    np.asarray(boxes.cxcywh_to_xyxy(bx[REGIONS.index("right lung")])), want / H, atol=1e-5
  )
  anatomy.check_boxes(bx[valid])
  lung = boxes.cxcywh_to_xyxy(bx[REGIONS.index("right lower lung zone")]) * 32
  heart = boxes.cxcywh_to_xyxy(bx[REGIONS.index("cardiac silhouette")]) * 32
  crop = lambda b: image[int(b[1]) + 1 : int(b[3]) - 1, int(b[0]) + 1 : int(b[2]) - 1].mean()
  assert crop(lung) < crop(heart) - 40  # dark lung, bright heart: boxes and pixels agree
  assert [_dec(t) for t in ex["phrases"]["text"]] == [
    "Small nodular opacity projecting over the right mid lung.",
    "The left lung is clear without pneumothorax.",
  ]
  assert list(ex["phrases"]["region"]) == [
    REGIONS.index("right mid lung zone"),
    REGIONS.index("left lung"),
  ]
  pos = {_dec(n) for n, p in zip(ex["attributes"]["name"], ex["attributes"]["positive"]) if p}
  assert pos == {"lung opacity", "mass/nodule (not otherwise specified)", "normal"}


def test_builder_skips_and_mends_real_data_quirks_and_reports_counts(prepared):
  """Each quirk has a fixture record; the report's counts are recounted here from the raw files."""
  builder, src = prepared
  kept = {_dec(src["train"][i]["image_id"]) for i in range(len(src["train"]))}
  assert AVOIDED in _ids("train.csv") and AVOIDED in _ids("images_to_avoid.csv")
  assert NO_GRAPH in _ids("train.csv") and AVOIDED not in kept and NO_GRAPH not in kept
  assert kept == set(_ids("train.csv")) - {AVOIDED, NO_GRAPH}

  def recount(ids):
    """Boxes of the 29 regions by kind, straight from the scene graphs."""
    n = dict(boxes=0, boxes_clipped=0, boxes_zero_area=0, boxes_negative=0, boxes_outside_image=0)
    for i in ids:
      for o in _graph(i)["objects"]:
        if o["bbox_name"] not in REGIONS:
          continue
        x1, y1, x2, y2 = (o[f"original_{k}"] for k in ("x1", "y1", "x2", "y2"))
        if x1 == x2 or y1 == y2:
          n["boxes_zero_area"] += 1
        elif x2 < x1 or y2 < y1:
          n["boxes_negative"] += 1
        elif x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
          n["boxes_outside_image"] += 1
        else:
          n["boxes"] += 1
          n["boxes_clipped"] += int(min(x1, y1) < 0 or x2 > W or y2 > H)
    return n

  report = builder.info.metadata["report"]  # read back from the prepared dataset's files
  assert report["train"] == {
    "images": 3,
    "images_avoided": 1,
    "images_without_scene_graph": 1,
    **recount(kept),
  }
  assert report["train"]["boxes_zero_area"] == report["train"]["boxes_negative"] == 1
  assert report["train"]["boxes_outside_image"] == 1 and report["train"]["boxes_clipped"] >= 2
  assert report["test"] == {
    "images": 2,
    "images_avoided": 0,
    "images_without_scene_graph": 0,
    **recount(_ids("test.csv")),
  }
  ex = next(src["train"][i] for i in range(3) if _dec(src["train"][i]["image_id"]) == QUIRKY)
  valid = dict(zip(REGIONS, np.asarray(ex["box_valid"])))
  assert not valid["trachea"] and not valid["mediastinum"] and not valid["right costophrenic angle"]
  assert valid["right lung"] and valid["left lung"]
  xyxy = np.asarray(boxes.cxcywh_to_xyxy(np.asarray(ex["boxes"]))) * H - [8, 0, 8, 0]
  np.testing.assert_allclose(xyxy[REGIONS.index("right lung")], [0, 14, 30, 74], atol=1e-3)
  np.testing.assert_allclose(xyxy[REGIONS.index("left lung")], [44, 12, W, 75], atol=1e-3)


def test_bad_scene_graphs_and_splits_raise_clear_errors(tmp_path):
  # The builder file's functions (data/ is not a package: loaded by path, not importable).
  mod = types.SimpleNamespace(**builders.builder_class("chest_imagenome")._info.__globals__)
  obj = {"bbox_name": "right lung", "original_x1": 10, "original_y1": 5, "original_x2": 30}
  with pytest.raises(ValueError, match=r"g.json object 'right lung': expected field 'original_y2'"):
    mod.parse_boxes({"objects": [obj]}, 200, 80, "g.json")
  with pytest.raises(
    ValueError, match=r"expected finite numbers original_x1/y1/x2/y2, got \[10, 5"
  ):
    mod.parse_boxes({"objects": [{**obj, "original_y2": "60"}]}, 200, 80, "g.json")
  entry = {"bbox_name": "left lung", "attributes": [], "phrases": []}
  with pytest.raises(
    ValueError, match=r"attributes of 'left lung': expected a non-empty list of phrases, got \[\]"
  ):
    mod.parse_findings({"attributes": [entry]}, "g.json")
  with pytest.raises(ValueError, match=r"expected 'category\|yes/no\|name', got 'opacity'"):
    mod.parse_findings(
      {"attributes": [{**entry, "phrases": ["x"], "attributes": [["opacity"]]}]}, "g.json"
    )
  graph = {"patient_id": 10000032, "study_id": 50414267, "image_id": "missing"}
  with pytest.raises(
    ValueError, match=r"g.json: expected its image files/p10/p10000032/s50414267/missing.jpg"
  ):
    mod.read_image(mod.epath.Path(MANUAL), graph, "g.json")
  (tmp_path / "train.csv").write_text("image,path\na,b\n")
  with pytest.raises(ValueError, match=r"train.csv: expected a dicom_id column, got columns"):
    mod.read_split(mod.epath.Path(tmp_path / "train.csv"))


def test_task_examples_from_scene_graph_records(prepared):
  """Labels, region labels, phrases and hard negatives of a record follow its scene graph."""
  from medjax.tasks.anatomy_vlm import imagenome_example

  _, src = prepared
  findings = ("lung opacity", "pleural effusion", "pneumothorax")
  rec = next(src["train"][i] for i in range(3) if _dec(src["train"][i]["image_id"]) == QUIRKY)
  ex = imagenome_example(rec, findings, num_negatives=2, seed=0)
  r = REGIONS.index
  assert ex["labels"].tolist() == [0, 0, 1]  # the apical pneumothorax only
  assert np.argwhere(ex["region_labels"]).tolist() == [[r("left upper lung zone"), 2]]
  assert ex["phrases"][r("left upper lung zone")] == "Small left apical pneumothorax."
  assert np.nonzero(ex["phrase_valid"])[0].tolist() == [r("right lung"), r("left upper lung zone")]
  assert ex["negatives"][r("left upper lung zone")] == ["the left upper lung zone is clear"]
  assert ex["negatives"][r("right lung")] == ["lung opacity in the right lung"]  # denied there
  assert ex["box_valid"][r("trachea")] == 0 and ex["image"].max() <= 1.0
  anatomy.check_boxes(ex["boxes"])  # the dropped regions hold a placeholder box, not zeros


# Paper architecture (ViT + BERT + anatomy-query decoder) at tiny width, on the 32 px builder config.
TINY_PAPER = {
  "model.vit.image_size": 32,
  "model.vit.patch_size": 8,
  "model.vit.width": 32,
  "model.vit.depth": 1,
  "model.vit.heads": 2,
  "model.vit.mlp_dim": 64,
  "model.vit.dtype": "float32",
  "model.text.vocab_size": 256,
  "model.text.width": 32,
  "model.text.depth": 1,
  "model.text.heads": 2,
  "model.text.mlp_dim": 64,
  "model.text.max_len": 16,
  "model.decoder_depth": 1,
  "model.decoder_heads": 2,
  "model.decoder_mlp_dim": 64,
  "model.embed_dim": 32,
}


@pytest.mark.slow
def test_train_py_end_to_end_on_chest_imagenome_fixtures(tmp_path):
  """experiments/train.py (paper config) from the raw fixtures: the builder prepares them and logs
  its report, the loss terms train (against the run's first step), and the final evaluation scores
  per-finding AUCs (image and region level) for the findings the test split has both ways."""
  steps = 16
  flags = {
    **TINY_PAPER,
    "data.manual_dir": MANUAL,
    "data.data_dir": str(tmp_path / "tfds"),
    "data.train_findings": "('lung opacity',)",  # pleural effusion: scored zero-shot only
    "data.test_size": 8,
    "data.eval_loss": False,
    "loss.stage_steps": "(4,4)",
    "optim.lr": 3e-3,
    "train.steps": steps,
    "train.batch_size": 8,
    "train.eval_batch_size": 2,
    "train.eval_every": steps,
    "train.log_every": 1,
    "train.checkpoint_every": 0,
    "train.eval_ablation": True,
    "parallel.num_devices": 1,
    "parallel.rules": "dp",
  }
  out = run_script(
    "train.py",
    "--config=configs/anatomy_vlm.py:paper",
    *(f"--config.{k}={v}" for k, v in flags.items()),
    f"--workdir={tmp_path / 'run'}",
    devices=1,
  )
  assert "chest_imagenome train: images 3, images_avoided 1, images_without_scene_graph 1" in (
    out.stderr
  )
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  first, last = rows[0], rows[-1]
  assert last["step"] == steps and first["step"] == 1
  # Detection runs from step 0: its loss falls and the matched boxes overlap more.
  # (16 steps: 6.5 -> 4.8 and 0.21 -> 0.33.)
  assert last["train/loss_anat"] < 0.85 * first["train/loss_anat"], (first, last)
  assert last["train/box_miou"] > first["train/box_miou"] + 0.07, (first, last)
  for prefix in ("eval", "eval_ablated"):
    assert 0 < last[f"{prefix}/box_miou"] <= 1
    for f in ("lung_opacity", "pleural_effusion"):  # both ways in the test split
      assert last[f"{prefix}/pos/{f}"] == 1
      for k in ("auc", "auc_region", "auc_anatomy"):
        assert 0 <= last[f"{prefix}/{k}/{f}"] <= 1
  assert not any(k.startswith("eval/auc/pneumothorax") for k in last)  # one class only: no AUC
  assert last["eval/auc_seen"] == last["eval/auc/lung_opacity"]
  assert last["eval/auc_heldout"] == last["eval/auc/pleural_effusion"]
