"""TFDS builders for VQA-RAD, SLAKE, MIMIC-CXR-style reports and 3D volumes, on their dummy_data fixtures."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax import config_lib
from medjax.data import media_io, pipeline

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def _load(name):
  return config_lib.load_module(os.path.join(DATA, name, f"{name}.py"), f"mm_{name}")


def _build(cls, name, tmp_path, config, manual=None):
  builder = cls(data_dir=str(tmp_path), config=config)
  manual = manual or os.path.join(DATA, name, "dummy_data")
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
  )
  out = {}
  for split, src in builder.as_data_source().items():
    recs = [src[i] for i in range(len(src))]
    out[split] = [
      {
        **pipeline.record_to_example({k: v for k, v in r.items() if k not in ("image", "volume")}),
        **{k: np.asarray(r[k]) for k in ("image", "volume") if k in r},
      }
      for r in recs
    ]
  return out


def _check_marker_image(image, top, bottom):
  """Fixture images: grey, white 4x4 block top-left, black block bottom-right; padded rows [:top], [bottom:]."""
  grey = image[..., 0].astype(float)
  assert grey[:top].sum() == 0 and grey[bottom:].sum() == 0  # letterbox padding, aspect kept
  assert grey[top : top + 2, :2].min() > 200  # white block stays top-left: no flip
  assert 80 < grey[(top + bottom) // 2, 16] < 120


# ---------------------------------------------------------------------------------------------- VQA-RAD
vqa_rad = _load("vqa_rad")


def test_vqa_rad(tmp_path):
  splits = _build(vqa_rad.VqaRad, "vqa_rad", tmp_path, "tiny")
  assert {k: len(v) for k, v in splits.items()} == {"train": 4, "test": 2}
  by_id = {ex["id"]: ex for exs in splits.values() for ex in exs}
  ex = by_id["0"]
  assert (ex["question"], ex["answer"], ex["answer_type"]) == (
    "Are regions of the brain infarcted?",
    "Yes",
    "closed",
  )
  assert (ex["image_organ"], ex["question_type"], ex["image_name"]) == (
    "HEAD",
    "PRES",
    "synpic54610.jpg",
  )
  assert by_id["3"]["answer"] == "Right upper lobe" and by_id["3"]["answer_type"] == "open"
  assert (
    by_id["4"]["answer"] == "2" and by_id["4"]["phrase_type"] == "test_freeform"
  )  # numeric answer in the JSON
  assert {ex["id"] for ex in splits["test"]} == {"4", "5"}
  assert ex["image"].shape == (32, 32, 1) and ex["image"].dtype == np.uint8
  _check_marker_image(ex["image"], 0, 32)
  _check_marker_image(by_id["2"]["image"], 8, 24)  # 32x16 -> centred 32x16 band


def test_vqa_rad_rejects_bad_records():
  good = {
    "qid": 1,
    "image_name": "a.jpg",
    "image_organ": "HEAD",
    "question": "q",
    "answer": "a",
    "answer_type": "CLOSED",
    "question_type": "PRES",
    "phrase_type": "freeform",
  }
  with pytest.raises(
    ValueError, match=r"answer_type: expected one of \['CLOSED', 'OPEN'\], got 'YESNO'"
  ):
    vqa_rad.parse_record({**good, "answer_type": "YESNO"}, "f[0]")
  with pytest.raises(ValueError, match=r"f\[0\].*missing \['image_name'\]"):
    vqa_rad.parse_record({k: v for k, v in good.items() if k != "image_name"}, "f[0]")


def test_missing_image_is_named(tmp_path):
  root = tmp_path / "manual"
  (root / "VQA_RAD Image Folder").mkdir(parents=True)
  rec = {
    "qid": 7,
    "image_name": "synpic1.jpg",
    "image_organ": "HEAD",
    "question": "q",
    "answer": "a",
    "answer_type": "OPEN",
    "question_type": "PRES",
    "phrase_type": "freeform",
  }
  (root / "VQA_RAD Dataset Public.json").write_text(json.dumps([rec]))
  with pytest.raises(ValueError, match=r"image_name: expected an existing file, got .*synpic1.jpg"):
    _build(vqa_rad.VqaRad, "vqa_rad", tmp_path / "out", "tiny", manual=root)


# ------------------------------------------------------------------------------------------------ SLAKE
slake = _load("slake")


@pytest.mark.parametrize(
  "config,counts",
  [
    ("tiny", {"train": 3, "validation": 1, "test": 1}),
    ("tiny_bilingual", {"train": 5, "validation": 1, "test": 2}),
  ],
)
def test_slake(tmp_path, config, counts):
  cfg = (
    config
    if config == "tiny"
    else slake.SlakeConfig(name=config, image_size=32, channels=1, languages=("en", "zh"))
  )
  splits = _build(slake.Slake, "slake", tmp_path, cfg)
  assert {k: len(v) for k, v in splits.items()} == counts
  by_id = {ex["id"]: ex for exs in splits.values() for ex in exs}
  ex = by_id["3"]
  assert (ex["question"], ex["answer"], ex["answer_type"]) == (
    "Does the picture contain liver?",
    "Yes",
    "closed",
  )
  assert (ex["modality"], ex["location"], ex["content_type"], ex["q_lang"]) == (
    "CT",
    "Abdomen",
    "Organ",
    "en",
  )
  assert ex["image_name"] == "xmlab1/source.jpg"
  assert by_id["0"]["answer"] == "MRI" and by_id["0"]["answer_type"] == "open"
  if "bilingual" in config:
    assert by_id["2"]["answer"] == "核磁共振" and by_id["2"]["q_lang"] == "zh"
  assert ex["image"].shape == (32, 32, 1)
  grey = ex["image"][..., 0].astype(float)  # 16 wide x 32 tall -> columns 8..24
  assert grey[:, :8].max() == 0 and grey[:, 24:].max() == 0 and grey[:2, 8:10].min() > 200
  rgb = media_io.load_image(
    os.path.join(DATA, "slake", "dummy_data", "Slake1.0", "imgs", "xmlab1", "source.jpg"), 16, 3
  )
  assert rgb.shape == (16, 16, 3) and rgb[:, :4].sum() == 0 and rgb[0, 4].min() > 200
  with pytest.raises(ValueError, match="channels: expected 1 or 3, got 4"):
    media_io.load_image("x.jpg", 16, 4)


# ------------------------------------------------------------------------------------------- MIMIC-CXR
mimic_cxr = _load("mimic_cxr")


def test_mimic_cxr(tmp_path):
  splits = _build(mimic_cxr.MimicCxr, "mimic_cxr", tmp_path, "tiny")
  # The LATERAL image is not a configured view; study s50771383's report has no FINDINGS / IMPRESSION.
  assert {k: len(v) for k, v in splits.items()} == {"train": 2, "validation": 1, "test": 1}
  by_id = {ex["dicom_id"]: ex for exs in splits.values() for ex in exs}
  ex = by_id["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
  assert (ex["study_id"], ex["subject_id"], ex["view_position"]) == ("50414267", "10000032", "PA")
  assert ex["findings"].startswith(
    "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular"
  )
  assert ex["findings"].endswith("posterior left sixth and seventh ribs are noted.")
  assert ex["impression"] == "No acute cardiopulmonary process."
  assert ex["report"] == ex["findings"] + " " + ex["impression"]
  ap = splits["validation"][0]
  assert (
    ap["view_position"] == "AP"
    and ap["findings"] == ""
    and ap["impression"].startswith("Single portable AP")
  )
  test = splits["test"][0]  # NOTIFICATION after IMPRESSION ends it
  assert test["impression"] == "Right lower lobe pneumonia." and test["findings"].endswith(
    "No pleural effusion."
  )
  assert ex["image"].shape == (32, 32, 1)
  grey = ex["image"][..., 0].astype(float)  # 24 wide x 32 tall -> columns 4..28
  assert grey[:, :4].sum() == 0 and grey[:, 28:].sum() == 0 and grey[:2, 4:6].min() > 200


def test_mimic_cxr_all_views_and_bad_split(tmp_path):
  cfg = mimic_cxr.MimicCxrConfig(name="tiny_all_views", image_size=32, channels=1, views=())
  splits = _build(mimic_cxr.MimicCxr, "mimic_cxr", tmp_path / "all", cfg)
  assert [ex["view_position"] for ex in splits["train"]].count("LATERAL") == 1
  root = tmp_path / "manual"
  root.mkdir()
  (root / "mimic-cxr-2.0.0-split.csv").write_text(
    "dicom_id,study_id,subject_id,split\nd1,1,10000001,val\n"
  )
  (root / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewPosition\nd1,PA\n")
  with pytest.raises(
    ValueError, match=r"split: expected one of \['test', 'train', 'validate'\], got 'val'"
  ):
    _build(mimic_cxr.MimicCxr, "mimic_cxr", tmp_path / "bad", "tiny", manual=root)


# -------------------------------------------------------------------------------------------- 3D volumes
volumes_3d = _load("volumes_3d")


def test_m3d_cap_npy(tmp_path):
  splits = _build(volumes_3d.Volumes3d, "volumes_3d", tmp_path, "m3d_cap_tiny")
  assert {k: len(v) for k, v in splits.items()} == {"train": 1, "validation": 1, "test": 1}
  ex = splits["train"][0]
  assert ex["path"] == "ct_case/000006/Axial_non_contrast.npy"
  assert (
    ex["report"].startswith(
      "There is a large hypodense lesion in the right lobe of the liver with peripheral nodular"
    )
    and "\n" not in ex["report"]
  )
  vol = ex["volume"]  # [1, 8, 16, 16] in [0, 1] -> [8, 32, 32, 1], values kept (window 0..1)
  assert vol.shape == (8, 32, 32, 1) and vol.dtype == np.float32
  assert (
    vol[0, :6, :6].min() > 0.99
    and abs(vol[3, 16, 16, 0] - 0.2) < 1e-6
    and vol[-1, -6:, -6:].max() < 1e-6
  )


def test_m3d_vqa(tmp_path):
  splits = _build(volumes_3d.Volumes3d, "volumes_3d", tmp_path, "m3d_vqa_tiny")
  assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 1}
  ex = {e["question"]: e for e in splits["train"]}["Which organ contains the lesion?"]
  assert (ex["answer"], ex["answer_choice"], ex["question_type"]) == ("Liver", "C", "organ")
  assert ex["options"] == ["Spleen", "Pancreas", "Liver", "Kidney"]
  val = splits["validation"][0]
  assert val["question_type"] == "location" and val["answer"] == "Right lower quadrant"
  assert abs(val["volume"][3, 16, 16, 0] - 0.4) < 1e-6  # the other volume
  with pytest.raises(ValueError, match=r"Answer Choice: expected one of A, B, C, D, got 'E'"):
    volumes_3d.vqa_record(
      {
        "Question Type": "1",
        "Question": "q",
        "Answer": "a",
        "Answer Choice": "E",
        **{f"Choice {c}": c for c in "ABCD"},
      },
      "f.csv:2",
    )


def test_ct_rate_nifti_orientation_and_window(tmp_path):
  splits = _build(volumes_3d.Volumes3d, "volumes_3d", tmp_path, "ct_rate_tiny")
  assert {k: len(v) for k, v in splits.items()} == {"train": 2, "validation": 1}
  ex = {e["id"]: e for e in splits["train"]}["train_1_a_2.nii.gz"]
  assert ex["impression"] == "Nodule in the right lung upper lobe." and ex["findings"].startswith(
    "Trachea, both"
  )
  assert ex["report"] == ex["findings"] + " " + ex["impression"]
  assert splits["validation"][0]["impression"] == "" and splits["validation"][0][
    "report"
  ].startswith("No pleural")
  vol = ex["volume"][..., 0]
  # The +1000 HU voxel at the patient's right-anterior-superior corner: last (superior) slice, top row
  # (anterior), left column (patient right, radiological view); air -1000 HU -> 0, soft tissue 40 HU -> 0.52.
  assert vol.shape == (8, 32, 32) and np.unravel_index(np.argmax(vol), vol.shape) == (7, 0, 0)
  assert vol[7, 0, 0] > 0.9 and vol[0, 0, 31] == 0.0 and abs(vol[3, 16, 16] - 0.52) < 1e-3


def test_volume_errors(tmp_path):
  np.save(tmp_path / "flat.npy", np.zeros((16, 16), np.float32))
  with pytest.raises(
    ValueError, match=r"Image Path: expected a 3D volume \[D, H, W\] .*got shape \(16, 16\)"
  ):
    media_io.load_volume(tmp_path / "flat.npy", "Image Path")
  with pytest.raises(ValueError, match=r"image: expected an existing file, got .*missing.nii.gz"):
    media_io.load_volume(tmp_path / "missing.nii.gz", "image")
  with pytest.raises(ValueError, match=r"volume: expected a .npy, .nii or .nii.gz file, got v.mha"):
    (tmp_path / "v.mha").write_text("")
    media_io.load_volume(tmp_path / "v.mha")


# ------------------------------------------------------------------------------ into the medgemini task
def _task(variant, seq_len=96):
  from medjax.tasks import get_task

  config = config_lib.load_module("configs/medgemini.py").get_config(variant)
  config.update_from_flattened_dict(
    {"data.seq_len": seq_len}
  )  # real questions are longer than the phantoms'
  task = get_task(config)
  return task, {m.name: m.vit.input_shape for m in task.mm_cfg.media}


def test_records_encode_for_the_medgemini_task(tmp_path):
  task, shapes = _task("tiny")  # image (32, 32, 1)
  rad = {e["id"]: e for e in _build(vqa_rad.VqaRad, "vqa_rad", tmp_path / "rad", "tiny")["train"]}[
    "0"
  ]
  ex = media_io.task_example(rad, shapes)
  assert ex["prompt"] == "<image> Are regions of the brain infarcted?" and ex["target"] == "Yes"
  assert ex["qtype"] == media_io.CLOSED and ex["media"]["image"][0].max() == 1.0
  arrays = task.encode(ex)
  assert arrays["image_mask"].tolist() == [1]
  np.testing.assert_allclose(arrays["image"][0], rad["image"] / 255.0, atol=1e-6)
  assert arrays["loss_mask"].sum() == len("Yes") + 1

  task3d, shapes3d = _task("tiny3d")  # image (32, 32, 1) + volume (8, 32, 32, 1)
  vqa = _build(volumes_3d.Volumes3d, "volumes_3d", tmp_path / "m3d", "m3d_vqa_tiny")["validation"][
    0
  ]
  ex = media_io.task_example(vqa, shapes3d)
  assert (
    ex["prompt"] == "<volume> Where is the bowel wall thickening located?"
    and ex["qtype"] == media_io.OPEN
  )
  arrays = task3d.encode(ex)
  assert arrays["volume_mask"].tolist() == [1] and arrays["image_mask"].tolist() == [0]
  np.testing.assert_array_equal(arrays["volume"][0], vqa["volume"])

  rgb = media_io.task_example(
    {"image": np.zeros((32, 32, 1), np.uint8), "report": "r"}, {"image": (32, 32, 3)}
  )
  assert rgb["media"]["image"][0].shape == (32, 32, 3) and rgb["prompt"] == "<image> report:"
  assert rgb["target"] == rgb["report"] == "r"
  with pytest.raises(
    ValueError,
    match=r"image: expected shape \(64, 64, 1\) \(the model's input\), got \(32, 32, 1\)",
  ):
    media_io.task_example(rad, {"image": (64, 64, 1)})
