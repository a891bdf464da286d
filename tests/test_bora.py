"""Bora task: synthetic cell videos, the motion classifier, the paper config, training and CFG sampling."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import RUN

from medjax import config_lib
from medjax.data.synthetic import cells
from medjax.tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(variant="tiny"):
  return config_lib.load_module("configs/bora.py").get_config(variant)


def test_cells_videos_match_their_captions():
  rng = np.random.default_rng(0)
  for _ in range(20):
    ex = cells.make_example(rng)
    assert (
      ex["video"].shape == (8, 16, 16, 1) and -1 <= ex["video"].min() and ex["video"].max() <= 1
    )
    spec = cells.parse_caption(ex["caption"])
    assert (
      spec["count"],
      cells.DIRECTIONS.index(spec["direction"]),
      cells.SPEEDS.index(spec["speed"]),
    ) == (ex["count"], ex["direction"], ex["speed"])
  # The cross-correlation peak of a one-cell fast video sits at its captioned displacement.
  ex = next(
    e
    for e in (cells.make_example(np.random.default_rng(s)) for s in range(100))
    if e["count"] == 1 and e["speed"] == 1
  )
  from medjax.eval.faithfulness import motion_features

  shift = np.unravel_index(np.argmax(motion_features(ex["video"][None])[0]), (16, 16))
  dy, dx = [(s + 8) % 16 - 8 for s in shift]
  assert {(-1, 0): 0, (1, 0): 1, (0, -1): 2, (0, 1): 3}[(int(np.sign(dy)), int(np.sign(dx)))] == ex[
    "direction"
  ]
  ids, mask = cells.tokenize("3 cells moving up slow", 8)
  assert mask.sum() == 5 and cells.WORDS[ids[3]] == "up"
  with pytest.raises(ValueError, match="prompt"):
    cells.parse_caption("some cells moving")
  with pytest.raises(ValueError, match="max_len"):
    cells.tokenize("3 cells moving up slow", 4)


def test_crossing_cells_stay_in_the_field_and_start_opposite_their_direction():
  sigma, size = 1.3, 16
  for seed in range(40):
    ex = cells.make_example(np.random.default_rng(seed), motion="cross", sigma=sigma, max_count=1)
    v = ex["video"][..., 0]
    peaks = np.array([np.unravel_index(np.argmax(f), f.shape) for f in v])  # [T, (y, x)]
    assert peaks.min() >= 1 and peaks.max() <= size - 2  # no wrap-around: at least ~1 sigma inside
    axis, sign = {0: (0, -1), 1: (0, 1), 2: (1, -1), 3: (1, 1)}[ex["direction"]]
    assert (
      sign * (peaks[-1, axis] - peaks[0, axis]) > 0 and peaks[-1, 1 - axis] == peaks[0, 1 - axis]
    )
  # Across clips, a "right" clip's first frame holds more cell on the left half than on the right.
  right = [
    e
    for e in (cells.make_example(np.random.default_rng(s)) for s in range(200))
    if e["direction"] == 3
  ]
  first = np.mean([e["video"][0, :, :, 0] for e in right], axis=0)
  assert first[:, : size // 2].mean() > first[:, size // 2 :].mean() + 0.05
  with pytest.raises(ValueError, match=r"speeds: with motion='cross'.*got speeds=\(0.5, 2.0\)"):
    cells.make_example(np.random.default_rng(0), speeds=(0.5, 2.0))
  with pytest.raises(ValueError, match="motion: expected one of"):
    cells.make_example(np.random.default_rng(0), motion="spiral")


def test_faithfulness_classifier_reads_real_videos_and_not_wrong_ones():
  from medjax.eval.faithfulness import FaithfulnessClassifier

  kw = dict(frames=8, size=16)
  clf = FaithfulnessClassifier(kw, num_train=512, steps=250)
  assert clf.heldout_accuracy["direction"] > 0.95 and clf.heldout_accuracy["count"] > 0.9
  src = cells.CellsSource(64, 99, **kw)
  exs = [src[i] for i in range(64)]
  videos = np.stack([e["video"] for e in exs])
  labels = np.array([e["direction"] for e in exs])
  # Played backwards, every clip moves the opposite way: the classifier must say so.
  opposite = np.array([1, 0, 3, 2])[labels]
  assert np.mean(clf.predict(videos[:, ::-1])["direction"] == opposite) > 0.9
  # Static clips (one frame repeated) carry no direction: the pixel-count view still reads the count.
  static = np.repeat(videos[:, :1], 8, axis=1)
  assert np.mean(clf.predict(static)["count"] == np.array([e["count"] - 1 for e in exs])) > 0.8
  assert clf.embed(videos).shape == (64, 64)


def test_config_rejects_unknown_and_bad_values():
  c = _config()
  with pytest.raises(AttributeError):
    c.data.nonexistent = 1
  c = _config().unlock()
  c.data.latent = "wavelets"
  with pytest.raises(ValueError, match="data.latent"):
    get_task(c)


@pytest.mark.slow
def test_paper_config_builds_and_traces():
  c = _config("paper")
  # v1.0 / Bora's 256 px values: space_scale 0.5 on a 16-patch base, 3 guided channels, a fixed
  # null caption (no gradient, frozen in the optimizer).
  assert (c.model.space_scale, c.model.space_base_size, c.diffusion.guided_channels) == (0.5, 16, 3)
  assert c.model.null_caption == "buffer" and "null_embedding" in c.optim.freeze[0]
  task = get_task(c)
  model = task.build_model()
  batch = task.dummy_batch(1)
  assert batch["x"].shape == (1, 40, 32, 32, 4) and batch["y"].shape == (1, 120, 4096)
  params = jax.eval_shape(lambda: nn.unbox(task.init_params(model, jax.random.PRNGKey(0), batch)))
  loss, metrics = jax.eval_shape(
    lambda p: task.loss(model, p, batch, jax.random.PRNGKey(1), 0), params
  )
  assert loss.shape == () and set(metrics) == {"mse", "vb"}
  assert task.count_tokens(batch) == 10_240
  with pytest.raises(ValueError, match="precomputed"):
    task.train_data(batch_size=1, seed=0, shard_index=0, shard_count=1)


def test_bora_csv_builder_reads_bora_rows_and_keeps_whole_clips(tmp_path, caplog):
  """train.csv has Bora's header-less `path, caption` rows, validation.csv Open-Sora's header; clips of
  at least num_frames (4) frames are kept whole (the 5-frame one that the old 7-frame span dropped
  too), the 3-frame one is dropped and counted."""
  pytest.importorskip("av")
  pytest.importorskip("PIL")
  import logging

  import tensorflow_datasets as tfds
  from etils import epath

  mod = config_lib.load_module("data/bora_csv/bora_csv.py")
  builder = mod.BoraCsv(data_dir=str(tmp_path), config="tiny")
  manual = os.path.join(ROOT, "data", "bora_csv", "dummy_data")
  with caplog.at_level(logging.INFO, logger="absl"):  # whatever level earlier tests left
    builder.download_and_prepare(
      file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual)
    )
  assert "train.csv: kept 3 clips; dropped 1 shorter than 4 frames" in caplog.text
  assert "echo_short.mp4 (3 frames)" in caplog.text
  src = builder.as_data_source()
  train = {_text(r["path"]): r for r in (src["train"][i] for i in range(len(src["train"])))}
  assert {k: np.shape(r["video"]) for k, r in train.items()} == {
    "endoscopy_0.mp4": (12, 32, 32, 3),
    "ultrasound_1.mp4": (10, 32, 32, 3),
    "mri_short.mp4": (5, 32, 32, 3),
  }
  assert _text(train["ultrasound_1.mp4"]["text"]) == (
    "A cardiac ultrasound, the left ventricle contracts."
  )  # quoted caption after ", " (Bora's rows)
  video = np.asarray(train["endoscopy_0.mp4"]["video"])
  red = video[..., 0].astype(float)
  cols = [np.argmax(red[t].sum(0)) for t in range(len(video))]
  assert cols == sorted(cols) and cols[-1] > cols[0]  # the red spot drifts right, no flip
  assert len(src["validation"]) == 1  # the header-ed file
  bad = epath.Path(tmp_path / "bad.csv")
  bad.write_text("path,caption\na.mp4,x\n")
  with pytest.raises(ValueError, match=r"header needs columns path,text; missing \['text'\]"):
    mod.read_rows(bad)
  bad.write_text("a.mp4, Real-time MRI, vocal tract\n")  # an unquoted caption keeps its commas
  assert mod.read_rows(bad)[0]["text"] == "Real-time MRI, vocal tract"
  bad.write_text("a.mp4, one caption\nb.mp4\n")
  with pytest.raises(ValueError, match=r"bad.csv:2: expected a row `path, caption`, got 1 field"):
    mod.read_rows(bad)


def _text(v):
  return v.decode() if isinstance(v, bytes) else str(v)


# The tiny config shrunk to learn in the suite's budget: 4 frames of 8x8 with one token per 4x4
# patch (16 tokens a clip), one device, 150 steps, 10 Euler steps; guidance 2 (4 overshoots the count).
FAST = {
  "data.frames": 4,
  "data.size": 8,
  "data.speeds": (0.5, 1.0),
  "data.test_size": 256,
  "model.patch_size": (1, 4, 4),
  "diffusion.sample_steps": 10,
  "diffusion.cfg_scale": 2.0,
  "optim.lr": 3e-3,
  "parallel.num_devices": 1,
  "train.steps": 150,
  "train.batch_size": 32,
  "train.log_every": 10,
  "train.eval_every": 150,
  "train.eval_batch_size": 32,
  "train.eval_batches": 1,
  "train.checkpoint_every": 0,
  "train.async_checkpoints": False,
  "train.eval_ablation": True,
  "train.compiler_options": RUN,  # 150 steps: XLA's defaults (tests/fast_compile.py)
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One FAST run through the training loop -> (config, final metrics, logged rows)."""
  import json

  from medjax.train.loop import train

  c = _config("tiny").unlock()
  c.update_from_flattened_dict(FAST)
  workdir = tmp_path_factory.mktemp("bora")
  out = train(c, str(workdir))
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  return c, out, rows


@pytest.mark.slow
def test_tiny_trains_through_the_loop_and_evaluates_generation(trained):
  _, out, rows = trained
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
  assert out["eval/classifier_direction_accuracy_real"] > 0.95
  for k in ("direction_accuracy", "count_accuracy"):
    assert 0.0 <= out[f"eval/{k}_cfg"] <= 1.0 and 0.0 <= out[f"eval/{k}_nocfg"] <= 1.0
  assert out["eval/fvd_cfg"] > 0 and out["eval/fvd_nocfg"] > 0
  # The denoiser reads its caption: with captions rolled across the batch the eval loss rises.
  assert out["eval_ablated/loss"] > 1.2 * out["eval/loss"]


@pytest.mark.slow
def test_guidance_makes_samples_follow_their_captions(trained):
  """Count accuracy of generated clips, read by a classifier checked on real clips: guided samples
  beat unguided ones (guidance 1) and chance (the majority count of the prompts); generated from
  captions rolled across the batch, the same guided samples fall to about chance."""
  c, out, _ = trained
  task = get_task(c)
  _, _, labels, _ = task.prompts(c.data.test_size)
  chance = np.bincount(labels["count"]).max() / len(labels["count"])
  assert out["eval/classifier_count_accuracy_real"] > 0.95
  guided, unguided = out["eval/count_accuracy_cfg"], out["eval/count_accuracy_nocfg"]
  rolled = out["eval_ablated/count_accuracy_cfg"]
  assert guided > unguided + 0.05, (guided, unguided)
  assert guided > chance + 0.4, (guided, chance)
  assert abs(rolled - chance) < 0.1 and guided > rolled + 0.4, (guided, rolled, chance)


@pytest.mark.slow
def test_colab_trains_generates_and_shows_a_clip(run_colab):
  """colabs/bora.ipynb end to end with its parameters cell shrunk: frame grids are displayed."""
  text, outputs = run_colab(
    "bora",
    'STEPS, WORKDIR, PROMPT, NUM, CFG_SCALE, EVAL_VIDEOS = 2, None, "1 cell moving up slow", 2, 4.0, 2\n'
    "OVERRIDES = {'data.frames': 4, 'data.size': 8, 'data.speeds': (0.5, 1.0), "
    "'model.patch_size': (1, 4, 4), 'model.depth': 1, 'diffusion.sample_steps': 2, "
    "'train.batch_size': 8, 'parallel.num_devices': 1}",
  )
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 3  # real clips, guided and unguided samples
  assert "samples/sample_0.mp4" in text  # the first guided clip, written as an MP4 and shown
  assert any("<video" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
  assert "'step': 2.0" in text and "guidance 4.0: classifier reads" in text and "| 4 |" in text


def test_bad_input_errors_name_the_problem():
  c = _config().unlock()
  c.model.patch_size = (2, 4, 4)
  c.data.frames = 7
  with pytest.raises(
    ValueError, match=r"data: \(frames, size, size\) = \(7, 16, 16\) must be divisible"
  ):
    get_task(c).build_model()
  c = _config().unlock()
  c.data.size = 14
  with pytest.raises(ValueError, match="patch_size"):
    get_task(c).build_model()
  task = get_task(_config())
  with pytest.raises(ValueError, match="captions: expected a non-empty list"):
    task.encode_captions([])
  y, y_mask = task.encode_captions(["2 cells moving left fast"])
  with pytest.raises(ValueError, match="y: expected at least one caption"):
    task.sampler(task.build_model(), 4.0)(
      None, y=y[:0], y_mask=y_mask[:0], rng=jax.random.PRNGKey(0)
    )


def test_guided_generation_extrapolates_from_the_null_caption_branch():
  """One Euler step of the task's rectified-flow sampler with guidance s equals noise + dt * (u + s (c - u)),
  with c, u the model's outputs for the caption and for the learned null caption; with v1.0's
  guided_channels=3 of 4 latent channels, the 4th channel keeps the conditional prediction c."""
  from medjax.tasks.bora import generate

  c = _config().unlock()
  c.diffusion.update(type="rflow", sampler="euler", sample_steps=1)
  c.data.update(frames=4, size=8, channels=4)  # the identity holds at any size: small runs faster
  c.model.update(depth=1, in_channels=4)
  task = get_task(c)
  model = task.build_model()
  batch = task.dummy_batch(2)
  # One jitted init (eager ops compile one by one); at XLA:CPU level 0 "unsafe_rbg" draws compile
  # fastest.
  params = jax.jit(lambda k: nn.unbox(task.init_params(model, k, batch)))(
    jax.random.key(0, impl="unsafe_rbg")
  )
  # Perturb the zero-initialised projections so captions matter (host draws: nothing to compile).
  noise_rng = np.random.default_rng(1)
  params = jax.tree.map(
    lambda p: np.asarray(p) + np.float32(0.1) * noise_rng.standard_normal(p.shape, np.float32),
    params,
  )
  y, y_mask = task.encode_captions(["1 cell moving up slow", "3 cells moving left fast"])
  rng = jax.random.PRNGKey(2)
  noise = jax.random.normal(jax.random.split(rng)[0], (2,) + task.video_shape)
  t = jnp.full((2,), float(c.diffusion.num_timesteps))
  f = jax.jit(
    lambda drop: model.apply(
      {"params": params}, noise, t, y, y_mask, drop_caption=jnp.full((2,), drop)
    )
  )
  cond, uncond = f(False), f(True)
  assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-3
  guided = lambda s: uncond + s * (cond - uncond)
  assert float(jnp.max(jnp.abs(guided(4.0) - cond)[..., 3])) > 1e-3  # channel 3 tells them apart
  kw = dict(shape=task.video_shape, method="euler")
  for scale, channels in ((1.0, 0), (4.0, 0), (4.0, 3)):
    # Jitted (eager ops compile one by one); the Python scale and channels stay static.
    got = jax.jit(
      lambda p, y, m, r: generate(  # noqa: B023
        model, p, task.diffusion, y, m, r, cfg_scale=scale, guided_channels=channels, **kw
      )
    )(params, y, y_mask, rng)
    want = (
      guided(scale)
      if channels == 0
      else jnp.concatenate([guided(scale)[..., :3], cond[..., 3:]], -1)
    )
    np.testing.assert_allclose(got, noise - want, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="diffusion.guided_channels: expected 0 .all. to 4.*got 5"):
    generate(model, params, task.diffusion, y, y_mask, rng, cfg_scale=4.0, guided_channels=5, **kw)


def test_temporal_crop_follows_open_sora_and_varies_across_listings():
  """Open-Sora's TemporalRandomCrop: a window of frames x interval frames starting uniformly in
  [0, T - window - 1], sampled at floored linspace positions; a clip of exactly `frames` frames is
  used whole. The old centre clip was the same every epoch; the task's source draws a new crop each
  time a clip is listed, reproducibly from its seed."""
  from medjax.data.media_io import temporal_crop
  from medjax.tasks.bora import TemporalCropSource

  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(temporal_crop(40, 40, 3, rng), np.arange(40))  # Bora's shortest
  crops = np.stack([temporal_crop(200, 40, 3, rng) for _ in range(3000)])
  begins = crops[:, 0]
  assert begins.min() == 0 and begins.max() == 200 - 120 - 1  # every start of v1.0's range
  want = [np.linspace(b, b + 119, 40, dtype=int) for b in begins]  # v1.0's np.linspace(..., int)
  np.testing.assert_array_equal(crops, np.stack(want))
  short = temporal_crop(50, 40, 3, rng)  # shorter than the window: all 50 frames, stretched
  assert short[0] == 0 and short[-1] == 49 and len(short) == 40
  with pytest.raises(ValueError, match="total: expected a clip of at least 40 frames, got 39"):
    temporal_crop(39, 40, 3, rng)

  clips = [{"x": np.arange(30)[:, None] + 100 * i, "y": i, "y_mask": 1} for i in range(2)]
  src = TemporalCropSource(clips, [30, 20], num_frames=4, interval=2, seed=[0, 0], repeats=50)
  assert len(src) == 100
  firsts = {int(src[i]["x"][0, 0]) for i in range(0, 100, 2)}  # clip 0's 50 listings
  assert len(firsts) > 5 and max(firsts) <= 30 - 8 - 1
  assert all(src[i]["x"][-1, 0] < 100 + 20 for i in range(1, 100, 2))  # clip 1: its 20 real frames
  np.testing.assert_array_equal(src[7]["x"], src[7]["x"])
  other = TemporalCropSource(clips, [30, 20], num_frames=4, interval=2, seed=[1, 0], repeats=50)
  assert any(not np.array_equal(src[i]["x"], other[i]["x"]) for i in range(10))


def test_captions_are_cleaned_as_open_sora_before_t5():
  """Lower-cased, URLs / HTML / handles / file names / long ids / shop phrases / stray punctuation
  removed, dashes and quotes normalised; a clean caption passes unchanged."""
  from medjax.data.captions import clean_caption, preprocess_caption

  cases = {
    "A Cardiac Ultrasound, the left ventricle contracts.": (
      "a cardiac ultrasound, the left ventricle contracts."
    ),
    "Endoscopy <b>of the colon</b> see https://example.com/a &amp; @user": "endoscopy of the colon see",
    "“Real‑time MRI” — vocal tract, clip_0001.mp4": '"real-time mri" - vocal tract',
    "cells_moving_to_the_left_fast": "cells moving to the left fast",
    "Frame 800x600 #12 id 1234567 (free shipping)": "frame id",
    '"Fluorescent cells migrating upwards."': "fluorescent cells migrating upwards.",
  }
  for raw, want in cases.items():
    assert preprocess_caption(raw) == want, (raw, preprocess_caption(raw))
    assert raw != want  # every case is changed by cleaning
  assert preprocess_caption(cases[next(iter(cases))]) == cases[next(iter(cases))]
  with pytest.raises(ValueError, match="caption: expected a string, got int"):
    clean_caption(3)
