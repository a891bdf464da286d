"""OpenTSLM: perceiver/gated cross-attention layers, both model variants, host checks, training."""

import os
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import RUN

from medjax import config_lib
from medjax.data.synthetic import ecg, har
from medjax.data.tokenizers import ByteTokenizer
from medjax.eval import classification
from medjax.inference import parsing
from medjax.models import opentslm as ot
from medjax.models.llm import DecoderLM, LMConfig
from medjax.nn.gated_xattn import GatedCrossAttentionBlock
from medjax.nn.lora import frozen_base
from medjax.nn.perceiver import PerceiverResampler
from medjax.tasks import opentslm as task_lib
from medjax.train.optim import param_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()
TRAIN_STEPS = 100  # about a minute of CPU per variant
LM = LMConfig(embed_dim=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, mlp_dim=128)
SMALL = dict(
  enc_dim=32,
  resampler_layers=2,
  num_latents=8,
  resampler_heads=2,
  resampler_head_dim=16,
  ff_mult=2,
  xattn_heads=2,
  xattn_head_dim=16,
  encoder_layers=1,
  encoder_heads=2,
  encoder_mlp=64,
)


def _config(name, variant="tiny"):
  return config_lib.load_module(f"configs/{name}.py").get_config(variant)


def _cfg(variant, **kw):
  return ot.TSLMConfig(lm=LM, variant=variant, **{**SMALL, **kw})


def _batch(variant, series_len=40, pad_to=None, seed=0):
  """Two HAR examples (3 series each, cropped to `series_len`), padded to `pad_to` samples."""
  pad_to = pad_to or series_len
  kw = dict(
    ts_token_id=259,
    num_series=3,
    series_len=pad_to,
    max_samples=4096,
    patch=4 if variant == "softprompt" else None,
  )
  rows = []
  for i in range(2):
    prompt, series, target = har.format_example(har.example(seed, i))
    rows.append(
      task_lib.encode_example(
        prompt, [s[: series_len - 3 * i] for s in series], target, TOK, seq_len=200, **kw
      )
    )
  b = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
  return b


def _apply_body(model, params, b):
  return model.apply(
    {"params": params},
    b["tokens"],
    series=b["series"],
    series_mask=b["series_mask"],
    series_pos=b["series_pos"],
    input_mask=b["input_mask"],
  )[0]


def _apply(model, params, b):
  return jax.jit(lambda p, b: _apply_body(model, p, b))(params, b)


def _init(model, b, open_gates=False):
  init = lambda b: model.init(
    jax.random.PRNGKey(0),
    b["tokens"],
    series=b["series"],
    series_mask=b["series_mask"],
    series_pos=b["series_pos"],
  )["params"]
  params = flax.core.meta.unbox(jax.jit(init)(b))
  if open_gates:  # gates at 0 hide the cross-attention; open them to test what it sees
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    flat = {k: (jnp.ones_like(v) if k.endswith("_gate") else v) for k, v in flat.items()}
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return params


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------
def test_perceiver_ignores_padded_inputs():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 16))
  m = PerceiverResampler(num_layers=2, num_latents=4, num_heads=2, head_dim=8, ff_mult=2)
  params = jax.jit(m.init)(jax.random.PRNGKey(0), x)
  apply = jax.jit(m.apply)
  mask = jnp.arange(10)[None] < jnp.array([[6], [10]])
  out = apply(params, x, mask)
  garbage = jnp.where(mask[..., None], x, 100.0)
  padded = jnp.concatenate([garbage, jnp.full((2, 5, 16), -50.0)], 1)
  out2 = apply(params, padded, jnp.pad(mask, ((0, 0), (0, 5))))
  assert out.shape == (2, 4, 16)
  np.testing.assert_allclose(out, out2, atol=1e-5)
  assert not np.allclose(
    out[0], apply(params, x, jnp.ones_like(mask))[0], atol=1e-3
  )  # the mask does matter


def test_gated_xattn_zero_at_init_and_per_token_media_mask():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 16))
  media = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 3, 8))
  # token 0 sees nothing, tokens 1-2 see medium 0, tokens 3-4 see media 0 and 1
  mask = jnp.array([[[0, 0], [1, 0], [1, 0], [1, 1], [1, 1]]], bool)
  blk = GatedCrossAttentionBlock(num_heads=2, head_dim=8, ff_mult=2)
  params = jax.jit(blk.init)(jax.random.PRNGKey(2), x, media, mask)
  apply = jax.jit(blk.apply)
  np.testing.assert_array_equal(apply(params, x, media, mask), x)
  params = jax.tree.map(
    lambda p: jnp.ones_like(p) if p.ndim == 0 else p, flax.core.meta.unbox(params)
  )
  y = apply(params, x, media, mask)
  y2 = apply(params, x, media.at[:, 1].add(1.0), mask)
  np.testing.assert_array_equal(y[:, 0], x[:, 0])  # no preceding media: unchanged
  np.testing.assert_allclose(y[:, :3], y2[:, :3], atol=1e-6)  # medium 1 is invisible before token 3
  assert not np.allclose(y[:, 3:], y2[:, 3:], atol=1e-4)
  with pytest.raises(ValueError, match="media_mask: expected"):
    blk.apply(params, x, media, mask[:, :4])


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def test_flamingo_equals_base_lm_at_init():
  b = _batch("flamingo")
  model = ot.build(_cfg("flamingo"))
  params = _init(model, b)
  assert set(params) >= {"lm", "encoder", "resampler", "xattn_0", "xattn_1", "ts_embed"}
  base, _ = jax.jit(DecoderLM(LM).apply)(
    {"params": params["lm"]}, b["tokens"], input_mask=b["input_mask"]
  )
  np.testing.assert_allclose(_apply(model, params, b), base, atol=1e-6)
  # the base LM's parameters are exactly DecoderLM's tree, so a base checkpoint loads unchanged
  lm_params = jax.eval_shape(DecoderLM(LM).init, jax.random.PRNGKey(0), b["tokens"])["params"]
  assert jax.tree.structure(flax.core.meta.unbox(lm_params)) == jax.tree.structure(params["lm"])


def test_softprompt_lora_starts_as_the_base_and_only_adapters_train_in_the_lm():
  b = _batch("softprompt")
  lora_cfg = ot.TSLMConfig(
    lm=LMConfig(
      **{**LM.__dict__, "lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ("q", "v", "down")}
    ),
    variant="softprompt",
    **SMALL,
  )
  params = _init(ot.build(lora_cfg), b)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  base = flax.traverse_util.unflatten_dict(
    {k: v for k, v in flat.items() if "/lora_" not in k}, sep="/"
  )
  np.testing.assert_array_equal(
    _apply(ot.build(lora_cfg), params, b), _apply(ot.build(_cfg("softprompt")), base, b)
  )
  labels = flax.traverse_util.flatten_dict(param_labels(params, (frozen_base("lm/"),)), sep="/")
  assert sorted(k for k, v in labels.items() if k.startswith("lm/") and v == "train") == sorted(
    f"lm/layer_{i}/{m}/{p}/lora_{ab}"
    for i in range(2)
    for m, p in (("attn", "q"), ("attn", "v"), ("mlp", "down"))
    for ab in "ab"
  )
  assert all(
    v == "train" for k, v in labels.items() if not k.startswith("lm/")
  )  # encoder and projector


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_padding_series_does_not_change_outputs(variant):
  model = ot.build(_cfg(variant))
  short, padded = _batch(variant, 37), _batch(variant, 37, pad_to=90)
  params = _init(model, short, open_gates=True)
  valid = np.asarray(short["input_mask"], bool)
  out = np.asarray(_apply(model, params, short))[valid]
  out2 = np.asarray(_apply(model, params, padded))[valid]
  np.testing.assert_allclose(out, out2, atol=2e-5)
  # and the series do reach the text: changing a series changes the outputs
  changed = dict(short, series=short["series"].at[:, 0].multiply(-1.0))
  assert not np.allclose(out, np.asarray(_apply(model, params, changed))[valid], atol=1e-3)


def test_flamingo_tokens_attend_only_to_earlier_series():
  b = _batch("flamingo")
  model = ot.build(_cfg("flamingo"))
  params = _init(model, b, open_gates=True)
  out = _apply(model, params, b)
  out2 = _apply(model, params, dict(b, series=b["series"].at[:, 2].multiply(-1.0)))
  p2 = int(b["series_pos"][0, 2])
  np.testing.assert_allclose(out[0, :p2], out2[0, :p2], atol=1e-6)
  assert not np.allclose(out[0, p2:], out2[0, p2:], atol=1e-3)


def test_flamingo_description_attends_to_its_series():
  """The original's layout (`<ts>`, its description, end-of-chunk) lets a builder record's series
  description read that series. The baseline, "text_first" (the order before this fix: the
  description before its marker), fails the same check: the description cannot see the series."""
  from medjax.data import timeseries_io as tsio

  rng = np.random.default_rng(0)
  rec = tsio.make_example(
    "k", [rng.normal(size=32), rng.normal(size=32)], ["a", "b"], pre_prompt="Q\n", post_prompt="?"
  )
  prompt, series, _ = tsio.format_example(rec)
  desc = TOK.encode(rec["series_text"][0])  # series 0's description
  model = ot.build(_cfg("flamingo"))
  apply = jax.jit(lambda p, b: _apply_body(model, p, b))
  params, seen = None, {}
  for layout in ("series_first", "text_first"):
    kw = dict(KW, series_len=32, layout=layout, eoc_token_id=260)
    ids, arr, mask, pos = task_lib.encode_prompt(prompt, series, TOK, **kw)
    tokens = np.zeros(128, np.int32)
    tokens[: len(ids)] = ids  # one padded length: both layouts share one compilation
    b = {
      "tokens": jnp.asarray(tokens[None]),
      "series": jnp.asarray(arr[None]),
      "series_mask": jnp.asarray(mask[None]),
      "series_pos": jnp.asarray(pos[None]),
      "input_mask": jnp.asarray((np.arange(128) < len(ids))[None].astype(np.int32)),
    }
    params = _init(model, b, open_gates=True) if params is None else params
    out = np.asarray(apply(params, b))
    out2 = np.asarray(apply(params, dict(b, series=b["series"].at[:, 0].multiply(-1.0))))
    start = next(i for i in range(len(ids)) if ids[i : i + len(desc)] == desc)
    span = slice(start, start + len(desc))
    if layout == "series_first":
      assert ids[pos[0]] == 259 and ids[span.stop] == 260  # marker, description, end-of-chunk
    seen[layout] = not np.allclose(out[0, span], out2[0, span], atol=1e-3)
  assert seen == {"series_first": True, "text_first": False}


def test_softprompt_one_token_per_patch():
  b = _batch("softprompt", 37)
  assert np.sum(np.asarray(b["tokens"][0]) == 259) == 3 * 10  # ceil(37 / 4) per series
  assert np.sum(np.asarray(b["tokens"][1]) == 259) == 3 * 9  # ceil(34 / 4)


def test_model_rejects_too_long_series():
  cfg = _cfg("flamingo", max_patches=8)
  b = _batch("flamingo", 40)
  with pytest.raises(ValueError, match="series: expected at most 32 samples"):
    _init(ot.build(cfg), b)
  with pytest.raises(ValueError, match="variant: expected one of"):
    _cfg("gru")
  with pytest.raises(ValueError, match="scan_layers"):
    ot.TSLMConfig(lm=LMConfig(scan_layers=True))


# ---------------------------------------------------------------------------------------------
# Host boundary: encoding, parsing, metrics
# ---------------------------------------------------------------------------------------------
KW = dict(ts_token_id=259, num_series=3, series_len=128, max_samples=4096)


def test_encode_rejects_bad_inputs():
  s = np.zeros(16, np.float32)
  with pytest.raises(ValueError, match=r"one <ts> placeholder per series \(1\), got 2"):
    task_lib.encode_prompt("a <ts> b <ts>", [s], TOK, **KW)
  with pytest.raises(ValueError, match=r"expected finite values, got 1 NaN"):
    task_lib.encode_prompt("a <ts>", [np.where(np.arange(16) == 3, np.nan, s)], TOK, **KW)
  with pytest.raises(ValueError, match=r"series\[0\]: expected a 1-D series of 1..4096 samples"):
    task_lib.encode_prompt("a <ts>", [np.zeros(5000)], TOK, **dict(KW, series_len=8192))
  with pytest.raises(ValueError, match="at most 3 series"):
    task_lib.encode_prompt("<ts>" * 4, [s] * 4, TOK, **KW)
  with pytest.raises(ValueError, match="data.seq_len"):
    task_lib.encode_example("a <ts>", [s], "answer", TOK, seq_len=8, **KW)


def test_encode_example_layout():
  prompt, series, target = har.format_example(har.example(0, 0))
  ex = task_lib.encode_example(prompt, series, target, TOK, seq_len=200, **KW)
  toks, n = ex["tokens"], int(ex["input_mask"].sum())
  assert [int(toks[p]) for p in ex["series_pos"]] == [259] * 3
  assert "mean" in prompt and "std" in prompt
  np.testing.assert_allclose([np.mean(s) for s in series], 0.0, atol=1e-5)  # z-normalised
  tgt = ex["targets"][ex["loss_mask"] > 0]
  assert TOK.decode(tgt.tolist()) == target and tgt[-1] == TOK.eos_id  # answer tokens + EOS only
  np.testing.assert_array_equal(ex["targets"][: n - 1], toks[1:n])


def test_parse_and_macro_f1():
  assert parsing.answer_text("Answer: no. Fast oscillation. Answer: Running.") == "running"
  assert parsing.answer_text("no answer") == ""
  labels = ["a", "a", "b", "b"]
  m = classification.classification_metrics(["a", "zzz", "b", "b"], labels, ["a", "b"])
  # a: tp 1, fn 1 (the out-of-set prediction is not a false positive of anything) -> 2/3; b: 1
  assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)


def _beats(lead):
  """R-peak sample indices of a raw lead: local maxima above half the strip's peak."""
  x = lead - np.median(lead)
  return np.array(
    [
      i
      for i in range(1, len(x) - 1)
      if x[i] > 0.5 * x.max() and x[i] >= x[i - 1] and x[i] > x[i + 1]
    ]
  )


def test_synthetic_ecg_has_the_physiology_its_labels_claim():
  stats = {f: [] for f in ecg.FINDINGS}
  for i in range(150):
    ex = ecg.example(3, i)
    assert ex["label"] in ecg.LABEL_SETS[ex["template"]] and ex["series"].shape == (3, ecg.LENGTH)
    r = _beats(ex["series"][1])
    rr = np.diff(r) / ecg.FS
    t = np.arange(ecg.LENGTH)
    st = [ex["series"][1][(t > p + 0.1 * ecg.FS) & (t < p + 0.2 * ecg.FS)].mean() for p in r[:-1]]
    stats[ex["finding"]].append(
      (60 / np.median(rr), np.std(rr) / np.mean(rr), np.mean(st) - np.median(ex["series"][1]))
    )
  s = {f: np.median(np.array(v), axis=0) for f, v in stats.items()}  # (bpm, RR variation, ST level)
  assert s["bradycardia"][0] < 50 < 60 < s["normal"][0] < 90 < 115 < s["tachycardia"][0]
  assert (
    s["atrial fibrillation"][1]
    > 0.1
    > 0.05
    > max(s[f][1] for f in ("normal", "tachycardia", "st elevation"))
  )
  assert s["st elevation"][2] > 0.15 > 0.05 > s["normal"][2]
  np.testing.assert_array_equal(
    ecg.example(3, 7)["series"], ecg.example(3, 7)["series"]
  )  # deterministic
  prompt, series, target = ecg.format_example(ecg.example(3, 0))
  assert prompt.count(har.TS) == 3 and target.rsplit("Answer: ", 1)[1] == ecg.example(3, 0)["label"]


STAT = re.compile(r"mean (-?\d+\.\d+) std (-?\d+\.\d+)")


def _prompt_features(module, seed, n, label_key):
  """(numbers parsed from the prompts' "mean .. std .." statements, labels, summed series spectra)."""
  stats, labels, spectra = [], [], []
  for i in range(n):
    ex = module.example(seed, i)
    prompt, series, _ = module.format_example(ex)
    stats.append([float(v) for m in STAT.findall(prompt) for v in m])
    labels.append(ex[label_key])
    spectra.append(np.abs(np.fft.rfft(np.stack(series), axis=-1)).sum(0))  # any axis order
  return np.array(stats), np.array(labels, object), np.array(spectra)


def _one_nn_macro_f1(train, test, label_set):
  """Macro-F1 on `test` of the 1-nearest-neighbour (standardised features) of `train`."""
  (xa, ya), (xb, yb) = train, test
  mu, sd = xa.mean(0), xa.std(0) + 1e-9
  xa, xb = (xa - mu) / sd, (xb - mu) / sd
  d = (xb**2).sum(1)[:, None] - 2 * xb @ xa.T + (xa**2).sum(1)[None]
  return classification.classification_metrics(ya[d.argmin(1)], yb, label_set)["macro_f1"]


@pytest.mark.parametrize("module", [har, ecg], ids=["har", "ecg"])
def test_prompt_statistics_do_not_reveal_the_label(module):
  """A 1-NN on the per-series mean and std written in the prompt scores near chance; the same 1-NN
  on the series' spectra scores far above it (the label is in the series, and the 1-NN works)."""
  label_key, label_set = ("label", har.LABELS) if module is har else ("finding", ecg.FINDINGS)
  xa, ya, sa = _prompt_features(module, 0, 400, label_key)
  xb, yb, sb = _prompt_features(module, 1, 200, label_key)
  assert xa.shape == (400, 6)  # mean and std of 3 series
  rng = np.random.default_rng(0)  # chance: held-out labels guessed by a shuffle of themselves
  shuffled = [
    classification.classification_metrics(rng.permutation(yb), yb, label_set) for _ in range(50)
  ]
  chance = np.mean([m["macro_f1"] for m in shuffled])
  stats_f1 = _one_nn_macro_f1((xa, ya), (xb, yb), label_set)
  series_f1 = _one_nn_macro_f1((sa, ya), (sb, yb), label_set)
  assert abs(chance - 1 / len(label_set)) < 0.03
  assert stats_f1 < chance + 0.1, (stats_f1, chance)
  assert series_f1 > chance + 0.5, (series_f1, chance)


def test_template_metrics():
  rec = lambda t, p, l: {"template": t, "prediction": p, "label": l}
  records = [
    rec("rate", "fast", "fast"),
    rec("rate", "slow", "normal"),
    rec("st", "yes", "yes"),
    rec("st", "no", "no"),
  ]
  m = classification.template_metrics(
    records, {"rate": ("slow", "normal", "fast"), "st": ("yes", "no")}
  )
  # rate: fast f1 1, slow f1 0 (fp), normal f1 0 (fn) -> 1/3; st: 1
  assert (
    m["rate/accuracy"] == 0.5
    and m["rate/macro_f1"] == pytest.approx(1 / 3)
    and m["st/macro_f1"] == 1.0
  )
  assert (
    m["accuracy"] == 0.75
    and m["macro_f1"] == pytest.approx(2 / 3)
    and m["chance"] == pytest.approx(5 / 12)
  )


# ---------------------------------------------------------------------------------------------
# Configs and training through the one loop
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["opentslm_flamingo", "opentslm_softprompt"])
def test_paper_config_builds_with_frozen_base(name):
  c = _config(name, "paper")
  cfg = task_lib.tslm_config_from(c.model)
  assert (
    cfg.lm.embed_dim == 2048 and cfg.lm.num_layers == 16 and cfg.patch == 4 and cfg.enc_dim == 128
  )
  z = lambda *shape: np.zeros(shape, np.int32)
  shapes = jax.eval_shape(
    lambda: ot.build(cfg).init(
      jax.random.PRNGKey(0),
      z(1, 8),
      series=np.zeros((1, 3, 16)),
      series_mask=z(1, 3, 16),
      series_pos=z(1, 3),
    )["params"]
  )
  count = lambda tree: sum(x.size for x in jax.tree.leaves(flax.core.meta.unbox(tree)))
  assert (
    count(shapes["lm"]) == cfg.lm.num_params() + 2048 * 33
  )  # + the 33 RMSNorm scales of Llama-3.2-1B
  # the freezing patterns freeze exactly the base LM (checked on a small model with the same layout)
  small = ot.build(_cfg(cfg.variant))
  b = _batch(cfg.variant)
  shapes = jax.eval_shape(lambda: _init(small, b))
  labels = flax.traverse_util.flatten_dict(param_labels(shapes, c.optim.freeze), sep="/")
  assert labels and all((v == "frozen") == k.startswith("lm/") for k, v in labels.items())


def _input_blind_chance(labels, label_set) -> float:
  """The better macro-F1 of two input-blind guesses: the majority label, and each example's label
  taken from the previous example (what a model that ignores its series scores when it is given
  another example's series)."""
  majority = max(label_set, key=labels.count)
  return max(
    classification.classification_metrics([majority] * len(labels), labels, label_set)["macro_f1"],
    classification.classification_metrics(np.roll(labels, 1), labels, label_set)["macro_f1"],
  )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["opentslm_flamingo", "opentslm_softprompt"])
def test_learns_synthetic_har(name, tmp_path):
  """Far above input-blind chance, and back near it with the series rolled across the batch."""
  from medjax.train.loop import train

  c = _config(name)
  with c.unlocked():
    # the held-out loss is not checked here: one small batch of it (the 48 test questions are the
    # first 48 of the eval split, so eval_size stays >= test_size)
    c.train.update(
      steps=TRAIN_STEPS,
      eval_every=TRAIN_STEPS,
      eval_ablation=True,
      async_checkpoints=False,
      eval_batch_size=8,
      eval_batches=1,
      compiler_options=RUN,  # XLA's defaults for the steps (tests/fast_compile.py)
    )
    c.data.update(test_size=48, eval_gen_batch=48, eval_size=48)
    if c.model.variant == "softprompt":  # a token per 8 samples: 48 series tokens instead of 96
      c.model.patch = 8
      c.data.seq_len -= 48
  result = train(c, str(tmp_path))
  labels = [har.example(c.data.eval_seed, i)["label"] for i in range(c.data.test_size)]
  chance = _input_blind_chance(labels, har.LABELS)
  f1, ablated = result["eval/macro_f1"], result["eval_ablated/macro_f1"]
  assert f1 > chance + 0.5, (f1, chance)
  assert ablated < chance + 0.1, (ablated, chance)
  assert f1 - ablated > 0.4, (f1, ablated)


# ---------------------------------------------------------------------------------------------
# Best params, early stopping and the curriculum
# ---------------------------------------------------------------------------------------------
def test_best_params_keeps_the_lowest_loss_and_stops_after_patience(tmp_path):
  from medjax.train.best import BestParams, load_params

  p = lambda v: {"enc": {"w": jnp.full((2, 3), v)}, "b": jnp.full((4,), v)}
  best = BestParams(str(tmp_path / "best"), patience=2)
  assert [best.update(s, loss, p(s)) for s, loss in ((1, 2.0), (2, 1.0), (3, 1.5))] == [
    True,
    True,
    False,
  ]
  assert not best.stop
  best = BestParams(str(tmp_path / "best"), patience=2)  # a restart keeps the record
  assert best.record["step"] == 2 and best.record["bad_evals"] == 1
  assert (
    not best.update(4, 1.0, p(4)) and best.stop
  )  # equal is not better: second evaluation without improvement
  new = {"enc": {"w": jnp.zeros((2, 3)), "lora_a": jnp.ones(5)}, "b": jnp.zeros(4)}
  loaded, n = load_params(str(tmp_path / "best"), new)
  assert (
    n == 2 and float(loaded["enc"]["w"][0, 0]) == 2.0 and float(loaded["b"][0]) == 2.0
  )  # step 2's params
  np.testing.assert_array_equal(
    loaded["enc"]["lora_a"], 1.0
  )  # not in the saved tree: keeps its init
  with pytest.raises(ValueError, match=r"param enc/w: expected shape \(3, 3\), got \(2, 3\)"):
    load_params(str(tmp_path / "best"), {**new, "enc": {"w": jnp.zeros((3, 3))}})
  with pytest.raises(ValueError, match="1 saved params are not in this model"):
    load_params(str(tmp_path / "best"), {"enc": new["enc"]})
  with pytest.raises(FileNotFoundError, match="train.init_from: expected best params"):
    load_params(str(tmp_path / "nowhere"), new)


def test_curriculum_stage_two_starts_from_stage_one_best_and_stops_early(tmp_path):
  import orbax.checkpoint as ocp

  from medjax.train import curriculum as runner
  from medjax.train.metrics import read_metrics

  c = _config("opentslm_curriculum", "flamingo_tiny")
  assert tuple(c.curriculum.stages) == ("har", "ecg")
  with c.unlocked():
    c.model.lm.num_layers = 1
    c.train.update(
      batch_size=8, eval_batch_size=8, eval_batches=1, log_every=2, async_checkpoints=False
    )
    c.curriculum.test_size = 0
    c.curriculum.har.train.update(steps=6, eval_every=2)
    c.curriculum.ecg.train.update(steps=40, eval_every=2, early_stop_patience=2)
    c.curriculum.ecg.optim = {"lr": 0.0}  # a stage that cannot improve: early stopping must end it
    c.curriculum.ecg.model = {
      "lm": {"lora_rank": 2}
    }  # adapters that appear in stage 2 (SoftPrompt: stage 3)
  out = runner.run(c, str(tmp_path))
  evals = {
    r["step"]: r["eval/loss"] for r in read_metrics(str(tmp_path / "har")) if "eval/loss" in r
  }
  assert out[0]["best/step"] == min(evals, key=evals.get) and out[0]["best/early_stopped"] == 0
  assert out[1]["init_from"] == str(tmp_path / "har" / "best")
  assert (
    out[1]["best/early_stopped"] == 1 and out[1]["steps"] == 6
  )  # evals at 2 (best), 4, 6 -> stop
  restore = lambda stage: flax.traverse_util.flatten_dict(
    ocp.StandardCheckpointer().restore(str(tmp_path / stage / "best" / "params")), sep="/"
  )
  stage1, stage2 = restore("har"), restore("ecg")  # stage 2 (lr 0) keeps the params it started from
  assert set(stage2) - set(stage1) == {k for k in stage2 if "/lora_" in k} != set()
  for k, v in stage1.items():
    np.testing.assert_array_equal(stage2[k], v, err_msg=k)
  assert all(np.all(np.asarray(v) == 0) for k, v in stage2.items() if k.endswith("lora_b"))
  with c.unlocked():
    c.curriculum.ecg.data.name = "ecg_qa"
  with pytest.raises(
    ValueError,
    match=r"curriculum.ecg: data.name: expected one of \[.*'ecg_qa_cot'.*'synthetic_ecg', "
    r"'synthetic_har', 'tsqa'\], got 'ecg_qa'",
  ):
    runner.stage_configs(c)


@pytest.mark.slow
def test_colab_runs(run_colab):
  """colabs/opentslm.ipynb end to end, with its parameters cell shrunk."""
  text, _ = run_colab(
    "opentslm", 'VARIANT, STEPS, EXAMPLES, TEST_SIZE, OVERRIDES = "flamingo", 2, 2, 2, {}'
  )
  assert (
    "eval/macro_f1" in text and "Answer:" in text and "true:" in text and "xattn_0 attn" in text
  )


# ---------------------------------------------------------------------------------------------
# HAR-CoT TFDS builder on its dummy_data fixtures (the release's CSV format)
# ---------------------------------------------------------------------------------------------
def _har_cot_module():
  return config_lib.load_module("data/opentslm_har_cot/opentslm_har_cot.py", "opentslm_har_cot")


def test_har_cot_builder(tmp_path):
  import csv

  import tensorflow_datasets as tfds

  mod = _har_cot_module()
  manual = os.path.join(ROOT, "data", "opentslm_har_cot", "dummy_data")
  builder = mod.OpentslmHarCot(data_dir=str(tmp_path))
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=manual)
  )
  sources = builder.as_data_source()
  assert {k: len(v) for k, v in sources.items()} == {
    "train": 3,
    "validation": 2,
    "test": 2,
  }  # header row skipped
  with open(os.path.join(manual, "har_cot_test_cot.csv")) as f:
    raw = {r["rationale"]: r for r in csv.DictReader(f)}
  for i in range(2):
    rec = sources["test"][i]
    rationale = rec["rationale"].decode()
    ex = {"series": rec["series"], "label": rec["label"].decode(), "rationale": rationale}
    assert rec["series"].shape == (3, 128) and ex["label"] == raw[rationale]["label"]
    np.testing.assert_allclose(
      rec["series"][1], np.array(eval(raw[rationale]["y_axis"])), atol=1e-6
    )
    prompt, series, target = har.format_example(
      ex
    )  # real records go through the same host encoding
    enc = task_lib.encode_example(prompt, series, target, TOK, seq_len=400, **KW)
    assert (
      parsing.answer_text(TOK.decode(enc["targets"][enc["loss_mask"] > 0].tolist())) == ex["label"]
    )
  with pytest.raises(ValueError, match="x_axis: expected finite values"):
    mod.parse_series("[1.0, nan]", "f.csv:2: x_axis")
  with pytest.raises(ValueError, match="expected a list of numbers"):
    mod.parse_series("[1.0, x]", "f.csv:2: x_axis")


def test_optim_groups_set_lr_and_weight_decay_per_parameter_path():
  """The paper's groups against the one-group baseline: Flamingo decays only the cross-attention
  blocks (0.1, biases too); SoftPrompt's projector and LoRA step at half the encoder's lr."""
  import ml_collections
  import optax

  from medjax.train.optim import make_optimizer

  flamingo = _config("opentslm_flamingo", "paper").optim
  softprompt = _config("opentslm_softprompt", "paper").optim
  params = {
    "xattn_0": {"ff": {"kernel": jnp.ones((2, 2))}, "attn_gate": jnp.ones(())},
    "encoder": {"patch": {"kernel": jnp.ones((2, 2))}},
    "proj": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    "lm": {"q": {"kernel": jnp.ones((2, 2)), "lora_a": jnp.ones((2, 2))}},
  }

  def step(cfg, grads):
    cfg = ml_collections.ConfigDict(dict(cfg.to_dict(), warmup_steps=0, schedule="constant"))
    tx, _ = make_optimizer(cfg, params, 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    return flax.traverse_util.flatten_dict(optax.apply_updates(params, updates), sep="/")

  zeros = jax.tree.map(jnp.zeros_like, params)
  out = step(flamingo, zeros)  # zero gradients: only weight decay moves a parameter
  lr = flamingo.lr
  np.testing.assert_allclose(out["xattn_0/ff/kernel"], 1 - lr * 0.1, rtol=1e-6)
  np.testing.assert_allclose(out["xattn_0/attn_gate"], 1 - lr * 0.1, rtol=1e-6)
  np.testing.assert_allclose(out["encoder/patch/kernel"], 1.0)
  base = step(ml_collections.ConfigDict(dict(flamingo.to_dict(), groups=())), zeros)
  np.testing.assert_allclose(base["xattn_0/ff/kernel"], 1.0)  # one group: no decay anywhere
  grads = jax.tree.map(jnp.ones_like, params)  # Adam's first step moves each trained param by lr
  moved = {k: 1 - v for k, v in step(softprompt, grads).items()}
  wd = softprompt.weight_decay
  np.testing.assert_allclose(moved["encoder/patch/kernel"], 2e-4 * (1 + wd), rtol=1e-3)
  np.testing.assert_allclose(moved["proj/kernel"], 1e-4 * (1 + wd), rtol=1e-3)
  np.testing.assert_allclose(moved["proj/bias"], 1e-4 * (1 + wd), rtol=1e-3)  # biases decay too
  np.testing.assert_allclose(moved["lm/q/lora_a"], 1e-4 * (1 + wd), rtol=1e-3)
  np.testing.assert_allclose(moved["lm/q/kernel"], 0.0)  # the frozen base
  with pytest.raises(ValueError, match=r"optim.groups\[0\]: lr: expected a number >= 0 or None"):
    step(ml_collections.ConfigDict(dict(flamingo.to_dict(), groups=(("x", -1.0, None),))), zeros)


def test_memory_benchmark_configs_build():
  """benchmarks/opentslm_memory.py's reduced-vocabulary paper configs pass the model's checks."""
  from medjax.benchmarks.opentslm_memory import step_config
  from medjax.tasks import get_task

  for variant in ("flamingo", "softprompt"):
    task = get_task(step_config(variant, 2, 1000, num_layers=2, embed_dim=128))
    assert task.build_model().cfg.lm.vocab_size == 8192, variant
