"""AOT compilation of the real train step for TPU slices described by libtpu (no TPU attached)."""

import os
import subprocess
import sys

import pytest

from medjax.train import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(
  __import__("importlib").util.find_spec("libtpu") is None,
  reason="libtpu is not installed (pip install libtpu); it describes TPU topologies for compilation",
)


def _config(variant="tiny", **parallel_mesh):
  sys.path.insert(0, ROOT)
  from configs import llm

  c = llm.get_config(variant)
  c.unlock()
  c.data.tokenizer = "byte"
  c.parallel.mesh.update(parallel_mesh)
  c.lock()
  return c


@pytest.mark.parametrize(
  "name,libtpu_name,chips",
  [
    ("v5p-128", "v5p:4x4x4", 64),
    ("v5p-8", "v5p:2x2x1", 4),
    ("v4-8", "v4:2x2x1", 4),
    ("v4-128", "v4:4x4x4", 64),
    ("v5e-8", "v5e:2x4", 8),
    ("v5e-256", "v5e:16x16", 256),
    ("v6e-256", "v6e:16x16", 256),
    ("v5litepod-16", "v5e:4x4", 16),
  ],
)
def test_parse_topology(name, libtpu_name, chips):
  topo = aot.parse_topology(name)
  assert (topo.libtpu_name, topo.chips) == (libtpu_name, chips)


@pytest.mark.parametrize(
  "name,match", [("v7-8", "expected <generation>-<count>"), ("v5p-6", "power of two")]
)
def test_parse_topology_rejects(name, match):
  with pytest.raises(ValueError, match=match):
    aot.parse_topology(name)


@needs_libtpu
@pytest.mark.slow
def test_tiny_compiles_for_v5e_8_and_fsdp_shards_the_state():
  dp = aot.analyze(_config(data=8, fsdp=1), "v5e-8")
  assert dp["fits"] and dp["chips"] == 8 and dp["mesh"]["data"] == 8
  # Params + two fp32 Adam moments, replicated over data: ~12 bytes per parameter on every chip.
  assert dp["argument_gib"] * aot.GiB == pytest.approx(12 * dp["params"], rel=0.05)
  fsdp = aot.analyze(_config(data=1, fsdp=8), "v5e-8")
  assert (
    fsdp["argument_gib"] < dp["argument_gib"] / 4
  )  # weights and moments split 8 ways (small ones not)
  # Unrolled layers: XLA's FLOP count agrees with the 6*N*T + attention formula (norms, softmax, Adam aside).
  assert dp["xla_tflops_per_chip"] * 8 == pytest.approx(dp["model_tflops_total"], rel=0.25)
  assert dp["min_step_s"] == pytest.approx(dp["model_tflops_total"] * 1e12 / 8 / 197e12)
  assert "fits" in aot.format_report(dp)


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("name", ["opentslm_softprompt", "llama_no_remat"])
def test_a_readme_paper_row_is_what_the_compiler_reports(name):
  """Two rows of the README's AOT table, compiled for their slices, are the lines
  experiments/aot_table.py prints (the others take minutes each: `python experiments/aot_table.py`
  regenerates them all): a paper config that fits (a CPU minute of XLA:TPU compilation), and the
  no-remat Llama, which XLA:TPU refuses within seconds, naming the HBM its temporaries need."""
  from medjax.benchmarks import aot_table

  readme = open(os.path.join(ROOT, "README.md")).read()
  assert aot_table.HEADER in readme
  row = aot_table.BY_NAME[name]
  report = aot_table.analyze(row)
  if name == "opentslm_softprompt":
    assert report["fits"] and report["mesh"]["fsdp"] == 4
  else:
    assert not report["fits"] and report["mesh"]["fsdp"] == 32 and report["temp_gib"] > 95
  assert aot_table.markdown_row(row, report) in readme


@needs_libtpu
def test_too_big_config_exits_nonzero_with_message():
  cmd = [
    sys.executable,
    os.path.join(ROOT, "experiments", "aot_compile.py"),
    "--config=configs/llm.py:llama-3.2-1b",
    "--config.data.tokenizer=byte",
    "--topology=v5e-8",
    "--config.parallel.mesh.data=8",
    "--config.parallel.mesh.fsdp=1",
  ]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1, out.stderr[-3000:]
  assert "does not fit" in out.stderr and "16 GiB" in out.stderr


def test_stdit_flops_formula_matches_xla_count():
  """The analytic STDiT training FLOPs (MFU numerator) agree with XLA's count of one fwd + bwd pass."""
  import jax
  import jax.numpy as jnp

  from medjax.models.stdit import STDiT, stdit_config, train_flops

  cfg = stdit_config(
    "tiny", hidden=64, depth=2, num_heads=4, caption_channels=32, text_vocab_size=0
  )
  x, t = jnp.ones((2, 4, 8, 8, 1)), jnp.ones((2,), jnp.int32)
  y, y_mask = jnp.ones((2, 6, 32)), jnp.ones((2, 6), jnp.int32)
  model = STDiT(cfg)
  # XLA counts FLOPs from shapes alone: abstract params, no init to run.
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, t, y, y_mask, train=False))
  loss = lambda p: jnp.mean(model.apply(p, x, t, y, y_mask, train=False) ** 2)
  # The suite's XLA:CPU level 0 counts the FLOPs the default level does (the same HLO passes).
  cost = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert train_flops(cfg, x.shape, 6) == pytest.approx(cost["flops"], rel=0.15)
