"""LM speed options keep the loss, the FLOP / byte accounting, the profile summary and the GPU
table's CPU path (benchmarks/gpu_lm.py --tiny)."""

import dataclasses
import json
import sys
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.benchmarks import gpu_lm, profile_summary, roofline
from medjax.models.llm import DecoderLM, lm_config, train_flops
from medjax.objectives import chunked_cross_entropy, lm_loss
from medjax.train.metrics import hbm_bandwidth


def _batch(cfg, b=2, t=13, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "tokens": rng.integers(3, cfg.vocab_size, (b, t)).astype(np.int32),
    "targets": rng.integers(3, cfg.vocab_size, (b, t)).astype(np.int32),
    "loss_mask": (rng.random((b, t)) < 0.7).astype(np.float32),
    "input_mask": np.ones((b, t), np.int32),
  }


def _params(model, seed=0):
  """Random params of `model`'s shapes (numpy draws: no init to compile)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
  rng = np.random.default_rng(seed)
  draw = lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype)
  return jax.tree.map(draw, flax.linen.meta.unbox(shapes))


def test_chunked_cross_entropy_matches_the_whole_logits():
  # Loss, token accuracy, weight and every gradient, for tied and untied output projections:
  # 13 positions in chunks of 5 (the last chunk padded), soft-capped logits. One program.
  cfg = lm_config("tiny", num_layers=1, final_softcap=5.0)
  models = {tie: dataclasses.replace(cfg, tie_embeddings=tie) for tie in (True, False)}
  params = {tie: _params(DecoderLM(c)) for tie, c in models.items()}
  batch = _batch(cfg)
  pick = np.random.default_rng(1).random(batch["targets"].shape) < 0.5

  def both(params):
    out = {}
    for tie, c in models.items():
      whole = DecoderLM(c)
      # half the targets are the model's own greedy picks, so token accuracy is not trivially 0
      logits = whole.apply({"params": params[tie]}, batch["tokens"])[0]
      b = dict(batch, targets=jnp.where(pick, jnp.argmax(logits, -1), batch["targets"]))
      for chunk in (0, 5):
        model = DecoderLM(dataclasses.replace(c, logits_chunk=chunk))
        fn = lambda p, m=model, b=b: (lambda r: (r[0], r[1:]))(lm_loss(m, p, b))
        out[tie, chunk] = jax.value_and_grad(fn, has_aux=True)(params[tie])
    return out

  out = jax.jit(both)(params)
  for tie in (True, False):
    (loss0, (acc0, n0)), g0 = out[tie, 0]
    (loss1, (acc1, n1)), g1 = out[tie, 5]
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    assert float(acc1) == float(acc0) > 0 and float(n1) == float(n0) == batch["loss_mask"].sum()
    assert jax.tree.structure(g1) == jax.tree.structure(g0)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):  # to fp32 summation order
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def test_bf16_compute_loss_is_close_to_fp32():
  # bf16 activations, fp32 params: the loss within 1% of fp32 compute's; chunked bf16 equals
  # whole bf16 to bf16 rounding (0.2%).
  cfg = lm_config("tiny", num_layers=1)
  batch, params = _batch(cfg, t=16), _params(DecoderLM(cfg))
  bf16 = dataclasses.replace(cfg, dtype="bfloat16")
  cfgs = (cfg, bf16, dataclasses.replace(bf16, logits_chunk=6))
  losses = jax.jit(lambda p: [lm_loss(DecoderLM(c), p, batch)[0] for c in cfgs])(params)
  fp32, low, low_chunked = (float(x) for x in losses)
  assert abs(low - fp32) < 1e-2 * fp32
  assert abs(low_chunked - low) < 2e-3 * low


def test_logits_chunk_is_validated():
  with pytest.raises(ValueError, match="logits_chunk: expected >= 0.*got -1"):
    lm_config("tiny", logits_chunk=-1)
  h, t = jnp.zeros((1, 4, 8)), jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="logits_chunk: expected a positive int, got 0"):
    chunked_cross_entropy(lambda w, x: x, {}, h, t, jnp.ones((1, 4)), 0)


def test_decode_bytes_and_flops_by_hand():
  cfg = lm_config("tiny")  # V 264, E 128, 2 layers, 4 heads / 2 KV heads of 32, MLP 384, tied
  weights = 2 * (128 * 32 * (2 * 4 + 2 * 2) + 3 * 128 * 384) + 264 * 128
  assert weights == 427_008 == roofline.decode_param_count(cfg)
  untied = dataclasses.replace(cfg, tie_embeddings=False)  # the head is read, the table is not
  assert roofline.decode_param_count(untied) == weights
  kv_per_position = 2 * 2 * 32 * 2  # K and V, 2 KV heads of 32, bf16
  assert roofline.decode_step_bytes(cfg, 3, 10) == 2 * weights + 3 * 2 * 10 * kv_per_position
  # tiny-gemma: layer 0 slides over 16 keys, layer 1 is global
  gemma = lm_config("tiny-gemma")
  assert roofline.kv_positions(gemma, 40) == 16 + 40 and roofline.kv_positions(gemma, 9) == 18
  # 2 steps after a 10-token prompt attend to 11 and 12 keys
  bytes_ = 2 * 2 * weights + 2 * (11 + 12) * kv_per_position
  assert roofline.decode_roofline_s(cfg, 1, 10, 2, 1e9) == pytest.approx(bytes_ / 1e9)
  dev = lambda kind: types.SimpleNamespace(device_kind=kind)
  assert hbm_bandwidth(dev("NVIDIA H200")) == 4.8e12
  assert hbm_bandwidth(dev("NVIDIA H100 PCIe")) == 2.0e12
  assert hbm_bandwidth(dev("cpu")) is None
  # 6 N T + causal attention 12 H D T (T / 2 keys) per layer, batch 2 x 16
  flops = 2 * (6 * weights * 16 + 12 * 4 * 32 * 16 * (2 * 16 / 2))
  assert train_flops(cfg, weights, 2, 16) == flops == 82_771_968
  assert roofline.mfu(cfg, weights, 2, 16, 0.5, 1e9) == pytest.approx(flops / 0.5 / 1e9)


def test_profile_summary_of_a_cpu_trace(tmp_path):
  f = jax.jit(lambda a: jnp.sort(jnp.tanh(a @ a), axis=-1).sum())
  a = jnp.ones((128, 128))
  f(a).block_until_ready()
  step = lambda s, b: (s, f(b))  # a compiled step's (state, metrics) shape
  assert profile_summary.trace_steps(step, 7, a, str(tmp_path), steps=3) == 7
  source, rows = profile_summary.top_ops(str(tmp_path), top=5)
  assert source.startswith("host") and 0 < len(rows) <= 5
  assert rows[0]["total_ms"] >= rows[-1]["total_ms"] and all(r["count"] >= 3 for r in rows[:1])
  assert sum(r["share"] for r in rows) <= 1 + 1e-9
  assert any(r["op"].startswith("sort") for r in rows)
  text = profile_summary.format_top_ops(source, rows)
  assert rows[0]["op"] in text and "share" in text
  with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb"):
    profile_summary.top_ops(str(tmp_path / "none"))
  kept = profile_summary.report_top_ops(str(tmp_path), top=5, keep=True)
  assert kept == text and open(str(tmp_path) + ".top_ops.txt").read() == text + "\n"
  assert "no top ops (FileNotFoundError" in profile_summary.report_top_ops(str(tmp_path / "none"))


def test_gpu_table_trains_with_the_published_configs_optimiser():
  # gpu_lm imports only the JAX stack, so it mirrors configs/llm.py's settings instead of loading
  # them: they must not drift apart.
  from medjax.config_lib import config_from_file

  for preset in ("llama-3.2-1b", "gemma-3-1b"):
    c = config_from_file(f"configs/llm.py:{preset}", ["data.tokenizer=byte"])
    assert dict(c.optim) == gpu_lm.OPTIM, preset
    assert (c.model.dtype, c.model.param_dtype) == tuple(gpu_lm.TRAIN_DTYPES.values()), preset


def test_gpu_table_tiny_rows(capsys):
  # Every row's config builds at full size and tiny; one row of each kind runs for real (tiny).
  for row in gpu_lm.ROWS:
    for settings in (gpu_lm.Settings(), gpu_lm.Settings.tiny_run()):
      gpu_lm.row_config(row, settings, gpu_lm.TRAIN_DTYPES)
  rows = ("train.llama.ce", "decode.llama.b1", "er.llama")
  results = gpu_lm.run(gpu_lm.Settings.tiny_run(repeats=1), rows=rows, in_process=True)
  assert [r["row"] for r in results] == list(rows)
  assert not [r for r in results if "error" in r]
  assert results[0]["step_ms"] > 0 and results[0]["mem_gib"] > 0
  assert results[1]["tok_s"] > 0 and results[2]["ratio"] > 0
  out = capsys.readouterr().out
  table = out[out.rindex("row ") :]
  assert all(f"\n{name} " in table for name in rows) and "ER (11 + 33)" in table


FAKE_CHILD = """
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
print("device line of the child")
if "command_buffer" in os.environ.get("XLA_FLAGS", ""):
  sys.exit(1)  # as XLA does on a flag it does not know
for name in args["rows"].split(","):
  if name == "decode.llama.b1":
    sys.exit(3)  # a row that takes its process down
  r = {"row": name, "step_ms": 1.0, "what": os.environ.get("XLA_FLAGS", "")}
  print("ROW_JSON " + json.dumps(r), flush=True)
"""


def test_gpu_table_child_processes(tmp_path, capsys):
  # The rows run in a child; one that ends its child is reported and the next child runs the
  # rest; a flag row runs in a child of its own with the set's flags in XLA_FLAGS, and fails alone.
  child = tmp_path / "child.py"
  child.write_text(FAKE_CHILD)
  rows = ("train.llama.base", "decode.llama.b1", "er.llama")
  results = gpu_lm.run(
    gpu_lm.Settings.tiny_run(),
    rows=rows,
    flag_rows=("train.llama.ce@lhs", "er.llama@while_graphs"),
    argv0=(sys.executable, str(child)),
    json_out=str(tmp_path / "rows.jsonl"),
  )
  assert [r["row"] for r in results] == list(rows) + ["train.llama.ce@lhs", "er.llama@while_graphs"]
  assert "error" not in results[0] and "error" not in results[2]
  assert "child process ended in this row (exit code 3)" in results[1]["error"]
  assert gpu_lm.XLA_FLAG_SETS["lhs"] in results[3]["what"] and "error" not in results[3]
  assert "ended in this row (exit code 1)" in results[4]["error"]
  assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 5
  assert json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[0])["row"] == rows[0]
  assert "device line of the child" in capsys.readouterr().out
  with pytest.raises(ValueError, match="NAME@SET"):
    gpu_lm.run(gpu_lm.Settings.tiny_run(), rows=(), flag_rows=("train.llama.ce@nope",))
