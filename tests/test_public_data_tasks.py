"""The medgemini and OpenTSLM tasks read the public datasets' TFDS builders (data.name), here on their
dummy_data fixtures, through the task's data path into the model's loss."""

import os

import flax
import jax
import numpy as np
import pytest
from scripts import run_script

from medjax import config_lib
from medjax.data import builders
from medjax.tasks import get_task
from medjax.tasks import opentslm as tslm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, variant, **overrides):
  config = config_lib.load_module(f"configs/{name}.py").get_config(variant)
  config.update_from_flattened_dict(overrides)
  return config


def _builder(name, tmp_path):
  return {
    "data.name": name,
    "data.data_dir": str(tmp_path / "tfds"),
    "data.manual_dir": os.path.join(ROOT, "data", name, "dummy_data"),
  }


def _first_batch_loss(config):
  """The task's first training batch and the untrained model's loss on it (jitted, as the trainer does)."""
  task = get_task(config)
  batch = next(iter(task.train_data(batch_size=4, seed=0, shard_index=0, shard_count=1)))
  model = task.build_model()
  params = flax.core.meta.unbox(
    jax.jit(lambda r, b: task.init_params(model, r, b))(jax.random.PRNGKey(0), batch)
  )
  loss = jax.jit(lambda p, b: task.loss(model, p, b, None, 0)[0])(params, batch)
  return batch, float(loss), np.log(config.model.lm.vocab_size)


def test_medgemini_loss_on_vqa_rad(tmp_path):
  config = _config("medgemini", "tiny", **_builder("vqa_rad", tmp_path), **{"data.seq_len": 64})
  config.model.lm.num_layers = config.model.image.depth = 1
  batch, loss, chance = _first_batch_loss(config)
  assert abs(loss - chance) < 1.0  # near uniform over the vocabulary at initialisation
  # The tiny model's 32x32 grey input picks the builder's "tiny" config; images arrive scaled to [0, 1].
  src = builders.load_builder("vqa_rad", "train", data_dir=config.data.data_dir, config="tiny")
  images = {np.asarray(src[i]["image"], np.float32).tobytes() for i in range(len(src))}
  assert all(
    (img[0] * 255).round().astype(np.float32).tobytes() in images for img in batch["image"]
  )
  assert batch["image_mask"].tolist() == [[1]] * 4 and set(batch["qtype"].tolist()) == {0, 1}
  val = get_task(config).source("validation")  # VQA-RAD ships no validation split: its test split
  assert len(val) == 2 and val[0]["prompt"].startswith("<image> ")


def test_opentslm_loss_on_tsqa(tmp_path):
  config = _config(
    "opentslm_flamingo",
    "tiny",
    **_builder("tsqa", tmp_path),
    **{"data.num_series": 1, "data.series_len": 128, "data.seq_len": 352},
  )
  config.model.lm.num_layers = 1
  batch, loss, chance = _first_batch_loss(config)
  assert abs(loss - chance) < 1.0
  assert set(batch["series_mask"].sum(axis=(1, 2)).tolist()) <= {
    64,
    128,
  }  # the fixture's series lengths
  for row, mask in zip(
    batch["series"][:, 0], batch["series_mask"][:, 0] > 0
  ):  # z-normalised, zero padding
    assert abs(row[mask].mean()) < 1e-4 and abs(row[mask].std() - 1) < 1e-3 and not row[~mask].any()


def test_ecg_qa_metrics_per_template(tmp_path):
  task = get_task(_config("opentslm_flamingo", "tiny", **_builder("ecg_qa_cot", tmp_path)))
  size, example = task.examples("test", seed=0)
  meta = [tslm.template_and_label(example(i)) for i in range(size)]
  assert sorted(meta) == [("template_1", "no"), ("template_15", "sinus rhythm")]
  records = [
    {
      "template": t,
      "label": label,
      "prediction": label if t == "template_1" else "atrial fibrillation",
    }
    for t, label in meta
  ]
  m = task.summarize(records)
  assert (
    m["template_1/accuracy"] == 1.0 and m["template_15/accuracy"] == 0.0 and m["accuracy"] == 0.5
  )


def test_unknown_names_and_configs_are_named():
  with pytest.raises(
    ValueError,
    match=r"data.name: expected one of \['mimic_cxr', 'phantoms', 'slake', "
    r"'volumes_3d', 'vqa_rad'\], got 'vqarad'",
  ):
    get_task(_config("medgemini", "tiny", **{"data.name": "vqarad"}))
  with pytest.raises(
    ValueError,
    match=r"data.name: expected one of \[.*'ecg_qa_cot'.*'opentslm_har_cot'.*"
    r"'synthetic_har', 'tsqa'\], got 'har_cot'",
  ):
    get_task(_config("opentslm_flamingo", "tiny", **{"data.name": "har_cot"}))
  with pytest.raises(
    ValueError,
    match=r"data.builder_config: volumes_3d has several configs for the model's "
    r"inputs .*\['m3d_cap_tiny', 'm3d_vqa_tiny', 'ct_rate_tiny'\]; name one",
  ):
    builders.media_config("volumes_3d", {"image": (32, 32, 1), "volume": (8, 32, 32, 1)})
  with pytest.raises(
    ValueError, match=r"data.builder_config: vqa_rad has no config .*\['default', 'tiny'\]"
  ):
    builders.media_config("vqa_rad", {"image": (64, 64, 1)})
  assert builders.media_config("slake", {"image": (32, 32, 3)}) == "tiny"  # grey, repeated to RGB


def test_paper_curriculum_stages_name_builders():
  stages = _config("opentslm_curriculum", "flamingo_paper").curriculum
  names = [stages[s].data.name for s in stages.stages]
  assert (
    names
    == ["tsqa", "m4_captions", "opentslm_har_cot", "sleep_cot", "ecg_qa_cot"]
    == list(builders.TIMESERIES)
  )
  assert all(builders.builder_class(n).__name__ for n in names)


@pytest.mark.slow
@pytest.mark.parametrize(
  "name, variant, extra",
  [
    ("vqa_rad", "tiny", {"data.seq_len": 64, "data.test_size": 2, "train.eval_batch_size": 2}),
    ("slake", "tiny", {"data.seq_len": 64, "data.test_size": 1}),
    (
      "mimic_cxr",
      "tiny_report",  # reports are long: ~400 byte tokens
      {"data.seq_len": 512, "model.lm.max_seq_len": 512, "data.test_size": 1},
    ),
  ],
)
def test_medgemini_trains_on_public_fixtures_through_the_script(tmp_path, name, variant, extra):
  """experiments/train.py on a builder's real-format fixtures: the model fits its few training
  examples (the loss falls to well under its first value) and the run ends with the family's
  metrics: generated VQA accuracy beside the majority and chance baselines, or BLEU / ROUGE-L."""
  import json

  overrides = {
    **_builder(name, tmp_path),
    "train.steps": 12,
    "train.batch_size": 2,
    "train.log_every": 1,
    "train.eval_every": 12,
    "train.eval_batch_size": 1,
    "train.eval_batches": 1,
    "model.lm.num_layers": 1,
    "model.image.depth": 1,
    **extra,
  }
  out = run_script(
    "train.py",
    f"--config=configs/medgemini.py:{variant}",
    f"--workdir={tmp_path / 'run'}",
    *(f"--config.{k}={v}" for k, v in overrides.items()),
    devices=1,
  )
  summary = json.loads(out.stdout[out.stdout.index("{") :])
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
  assert len(losses) == 12 and losses[-1] < 0.6 * losses[0], losses
  if variant == "tiny_report":
    assert {"eval/bleu1", "eval/bleu4", "eval/rouge_l"} <= set(summary)
    assert all(0 <= summary[k] <= 100 for k in ("eval/bleu4", "eval/rouge_l"))
  else:
    for k in ("eval/generated_accuracy", "eval/majority_baseline", "eval/chance_baseline"):
      assert 0 <= summary[k] <= 1, (k, summary)
