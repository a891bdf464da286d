"""The config vocabulary, validation at load time, config sections -> model dataclasses, and the JAX
options importing medjax sets."""

import dataclasses
import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

from medjax import config_lib
from medjax.models.llm import LMConfig
from medjax.models.opentslm import TSLMConfig
from medjax.models.vit import ViTConfig
from medjax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path):
  return config_lib.load_module(path, "config_under_test")


def _variants(path):
  m = _load(path)
  if hasattr(m, "MODELS"):  # opentslm_curriculum: <model>_<size>
    return [f"{a}_{b}" for a in m.MODELS for b in m.SIZES]
  if hasattr(m, "VARIANTS"):
    return list(m.VARIANTS)
  if hasattr(m, "PRESETS"):
    return list(m.PRESETS)
  return list(m._flamingo.VARIANTS)


ALL_VARIANTS = [
  (os.path.relpath(p, ROOT), v)
  for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
  for v in _variants(p)
]


@pytest.mark.parametrize("path,variant", ALL_VARIANTS, ids=[f"{p}:{v}" for p, v in ALL_VARIANTS])
def test_every_config_variant_loads_validates_and_builds_its_model_config(path, variant):
  c = config_lib.config_from_file(f"{path}:{variant}")
  config_lib.validate(c, num_devices=1)
  assert c.is_locked
  from medjax.tasks import anatomy_vlm, bora, lm, medgemini, opentslm

  build = {
    "lm": lambda m: lm.lm_config_from(m),
    "opentslm": lambda m: opentslm.tslm_config_from(m),
    "bora": lambda m: bora.stdit_config_from(m, c.diffusion),
    "anatomy_vlm": lambda m: anatomy_vlm.anatomy_vlm_config_from(m),
    "medgemini_vqa": lambda m: medgemini.multimodal_config_from(m),
    "siglip": lambda m: config_lib.dataclass_from(ViTConfig, m.vision, "model.vision"),
  }[c.task]
  build(c.model)


def test_shared_knobs_have_one_name():
  """Every family spells the shared knobs the same; none of the old names is left in a config."""
  for path, variant in ALL_VARIANTS:
    flat = config_lib.config_from_file(f"{path}:{variant}").to_dict()
    keys = set()

    def walk(d):
      for k, v in d.items():
        keys.add(k)
        if isinstance(v, dict):
          walk(v)

    walk(flat)
    assert not keys & set(config_lib.RENAMED), (path, variant, keys & set(config_lib.RENAMED))


@pytest.mark.parametrize(
  "old,new",
  [
    ("data.eval_questions", "test_size"),
    ("data.num_train", "train_size"),
    ("data.eval_examples", "eval_size"),
    ("data.num_test", "test_size"),
  ],
)
def test_old_knob_names_fail_naming_the_new_one(old, new):
  with pytest.raises(KeyError, match=rf"{old}: .* did you mean '{new}'"):
    config_lib.config_from_file("configs/opentslm_flamingo.py:tiny", [f"{old}=3"])


def test_old_knob_name_fails_on_the_locked_config():
  c = config_lib.config_from_file("configs/llm.py:tiny")
  with pytest.raises(AttributeError, match="eval_questions.*config is locked"):
    c.data.eval_questions = 3
  with pytest.raises(AttributeError, match="remat_policy.*config is locked"):
    c.model.remat_policy = "full"


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "override,match",
  [
    ("train.batch_size=-4", r"train.batch_size: expected > 0, got -4"),
    ("train.steps=0", r"train.steps: expected > 0, got 0"),
    ("train.grad_accum=0", r"train.grad_accum: expected > 0, got 0"),
    ("train.eval_every=-1", r"train.eval_every: expected >= 0, got -1"),
    ("data.seq_len=0", r"data.seq_len: expected > 0, got 0"),
    ("data.test_size=-1", r"data.test_size: expected >= 0, got -1"),
    ("model.num_layers=0", r"model.num_layers: expected > 0, got 0"),
    ("model.head_dim=-8", r"model.head_dim: expected > 0, got -8"),
    ("data.seq_len=1024", r"data.seq_len: expected <= model.max_seq_len \(512\), got 1024"),
    (
      "train.compiler_options=backend_optimization_level=0",
      r"train.compiler_options: expected space-separated 'xla_<option>=<value>' pairs, "
      r"got 'backend_optimization_level=0'",
    ),
  ],
)
def test_loading_rejects_bad_values_naming_the_field(override, match):
  with pytest.raises(ValueError, match=match):
    config_lib.config_from_file("configs/llm.py:tiny", [override])


def test_compiler_options_parse_to_typed_values():
  c = config_lib.config_from_file(
    "configs/llm.py:tiny",
    ["train.compiler_options=xla_backend_optimization_level=1 xla_cpu_enable_fast_math=false"],
  )
  assert config_lib.compiler_options(c.train) == {
    "xla_backend_optimization_level": 1,
    "xla_cpu_enable_fast_math": False,
  }
  assert (
    config_lib.compiler_options(config_lib.config_from_file("configs/llm.py:tiny").train) is None
  )


def test_nested_model_sizes_and_limits():
  with pytest.raises(ValueError, match=r"model.lm.num_heads: expected > 0, got 0"):
    config_lib.config_from_file("configs/opentslm_flamingo.py:tiny", ["model.lm.num_heads=0"])
  with pytest.raises(ValueError, match=r"data.seq_len: expected <= model.lm.max_seq_len \(512\)"):
    config_lib.config_from_file("configs/medgemini.py:tiny", ["data.seq_len=600"])
  with pytest.raises(ValueError, match=r"model.vit.patch_size: expected > 0, got 0"):
    config_lib.config_from_file("configs/anatomy_vlm.py:tiny", ["model.vit.patch_size=0"])
  with pytest.raises(ValueError, match=r"data.train_size: expected > 0, got 0"):
    config_lib.config_from_file("configs/anatomy_vlm.py:tiny", ["data.train_size=0"])
  with pytest.raises(ValueError, match=r"data.max_text_len: expected <= model.max_text_len \(8\)"):
    config_lib.config_from_file("configs/bora.py:tiny", ["data.max_text_len=9"])


def test_batch_must_divide_over_the_mesh():
  c = config_lib.config_from_file("configs/llm.py:tiny", ["train.batch_size=12"])
  config_lib.validate(c, num_devices=4)
  with pytest.raises(ValueError, match=r"train.batch_size: 12 is not divisible .* multiple of 8"):
    config_lib.validate(c, num_devices=8)
  c = config_lib.config_from_file("configs/llm.py:tiny", ["train.grad_accum=4"])
  with pytest.raises(ValueError, match=r"train.batch_size: 32 .* train.grad_accum \(4\).* of 64"):
    config_lib.validate(c, num_devices=16)
  c = config_lib.config_from_file("configs/llm.py:tiny", ["train.eval_batch_size=20"])
  with pytest.raises(ValueError, match=r"train.eval_batch_size: 20 is not divisible .* of 8"):
    config_lib.validate(c, num_devices=8)


def test_workdir_must_be_writable(tmp_path):
  c = config_lib.config_from_file("configs/llm.py:tiny")
  config_lib.validate(c, workdir=str(tmp_path / "new" / "dir"))
  assert (tmp_path / "new" / "dir").is_dir()
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"workdir: expected a directory that can be created, got"):
    config_lib.validate(c, workdir=str(tmp_path / "file" / "run"))


def test_train_validates_before_building_anything(lm_config, tmp_path, monkeypatch):
  def fail(*a, **k):
    raise AssertionError("setup ran before validation")

  monkeypatch.setattr(loop, "setup", fail)
  with pytest.raises(ValueError, match=r"train.batch_size: expected > 0, got -16"):
    loop.train(lm_config(train__batch_size=-16), str(tmp_path))
  with pytest.raises(ValueError, match=r"data.seq_len: expected <= model.max_seq_len \(512\)"):
    loop.train(lm_config(data__seq_len=4096), str(tmp_path))


# ---- config section -> dataclass -----------------------------------------------------------------
def test_dataclass_from_builds_nested_dataclasses_and_names_bad_fields():
  c = config_lib.config_from_file("configs/opentslm_flamingo.py:tiny")
  cfg = config_lib.dataclass_from(TSLMConfig, c.model)
  assert isinstance(cfg.lm, LMConfig) and cfg.lm.num_layers == c.model.lm.num_layers
  assert isinstance(cfg.lm.lora_targets, tuple)
  section = ml_collections.ConfigDict(dict(c.model.to_dict(), lm=dict(c.model.lm, num_layer=2)))
  with pytest.raises(
    ValueError, match=r"model.lm.num_layer: not a field of LMConfig; did you mean"
  ):
    config_lib.dataclass_from(TSLMConfig, section)
  with pytest.raises(ValueError, match=r"model.lm.remat_policy: not a field .* did you mean remat"):
    config_lib.dataclass_from(LMConfig, dict(c.model.lm, remat_policy="full"), "model.lm")
  with pytest.raises(ValueError, match=r"model.patch_sise: not a field of TSLMConfig"):
    config_lib.dataclass_from(TSLMConfig, dict(c.model.to_dict(), patch_sise=3))

  @dataclasses.dataclass(frozen=True)
  class Needs:
    width: int
    sizes: tuple = ()

  assert config_lib.dataclass_from(Needs, {"width": 2, "sizes": [1, 2]}) == Needs(2, (1, 2))
  with pytest.raises(ValueError, match=r"data.width: missing; Needs requires it"):
    config_lib.dataclass_from(Needs, {}, "data")


def test_lm_remat_takes_a_policy_or_a_bool():
  assert LMConfig(remat=True).remat == "full" and LMConfig(remat=False).remat == "none"
  assert LMConfig(remat="dots").remat == "dots"


# ---- JAX options set by importing medjax ---------------------------------------------------------
def _python(code: str, **env):
  base = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  return subprocess.run(
    [sys.executable, "-c", code],
    cwd=ROOT,
    env={**base, "PYTHONPATH": ROOT, **env},
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_importing_medjax_sets_threefry_partitionable():
  out = _python(
    "import jax; jax.config.update('jax_threefry_partitionable', False); import medjax; "
    "print(jax.config.jax_threefry_partitionable)"
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "True"


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
def test_start_up_does_not_initialise_libtpu_without_a_tpu():
  out = _python("import jax, medjax; print(jax.devices()[0].platform)")
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() in ("cpu", "gpu")
  for msg in ("Failed to find host bounds", "unexpected worker hostname", "libtpu"):
    assert msg not in out.stderr, out.stderr[-2000:]
  # JAX_PLATFORMS, when given, wins
  out = _python("import jax, medjax; print(jax.config.jax_platforms)", JAX_PLATFORMS="cpu")
  assert out.stdout.strip() == "cpu", out.stderr[-2000:]
