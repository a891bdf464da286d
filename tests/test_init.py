"""`config.init.<slot>`: a fresh train state's subtree from a Hugging Face checkpoint, sharded."""

import flax
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch", reason="the reference model runs on torch")
transformers = pytest.importorskip("transformers", reason="the reference is transformers' Llama")

from torch_reference import llama_like_llm_tiny  # noqa: E402

from medjax import config_lib  # noqa: E402
from medjax.checkpoints import init as init_lib  # noqa: E402
from medjax.train import loop  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("llama")
  return path, llama_like_llm_tiny(path)


def _fresh_state(lm_config, **overrides):
  config = lm_config(**overrides)
  mesh, rules, task, model = loop.setup(config)
  with jax.set_mesh(mesh), flax.linen.logical_axis_rules(rules):
    state, *_ = loop.build_step(config, mesh, rules, task, model)
  return config, task, model, state


def _logits_match(model, params, hf_model):
  tokens = np.random.default_rng(0).integers(0, 264, (2, 24))
  ours, _ = jax.jit(model.apply)({"params": params}, tokens)
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4, rtol=1e-4)


def test_lm_slot_loads_sharded_and_equals_transformers_and_bad_sources_fail(
  hf_dir, lm_config, tmp_path
):
  path, hf_model = hf_dir
  config, task, model, state = _fresh_state(
    lm_config, init__lm=f"hf:{path}", parallel__mesh__data=2, parallel__mesh__fsdp=4
  )
  params, reports = init_lib.load(state.params, task.init_slots(), config.init)
  (report,) = reports
  assert report.loaded == len(jax.tree.leaves(params)) and not report.new and not report.unused
  assert "lm | hf:" in init_lib.format_report(reports)
  for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    assert new.sharding == old.sharding  # every device holds only its shard
  assert any(not x.is_fully_replicated for x in jax.tree.leaves(params))
  _logits_match(model, params, hf_model)
  _bad_sources_name_the_problem(path, state, task, lm_config, tmp_path)


def _bad_sources_name_the_problem(path, state, task, lm_config, tmp_path):
  slots = task.init_slots()

  def load(spec, **section):
    return init_lib.load(state.params, slots, {"lm": spec, **section})

  with pytest.raises(ValueError, match=r"init.lm: expected '<format>:<path>'"):
    load(f"safetensors:{path}")
  with pytest.raises(ValueError, match="expected a Hugging Face directory with config.json"):
    load(f"hf:{tmp_path}")
  with pytest.raises(ValueError, match=r"init.vision: this task initialises only \['lm'\]"):
    init_lib.load(state.params, slots, {"vision": f"hf:{path}"})
  deeper = tmp_path / "deeper"
  llama_like_llm_tiny(deeper, num_hidden_layers=3)
  with pytest.raises(ValueError, match="the checkpoint's num_layers is 3, the config's is 2"):
    load(f"hf:{deeper}")
  holed = tmp_path / "holed"
  llama_like_llm_tiny(holed)
  tensors = load_file(str(holed / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(holed / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
    load(f"hf:{holed}")
  with pytest.raises(ValueError, match=r"init.lm: expected '<format>:<path>'"):
    config_lib.validate(lm_config(init__lm="nonsense"))


def test_training_starts_from_the_checkpoint(hf_dir, triage_data_dir, train_step0):
  """experiments/train.py from `init.lm=hf:DIR`, one step at which nothing moves: the saved params
  give transformers' logits."""
  path, hf_model = hf_dir
  params, model, *_ = train_step0(
    "llm.py:tiny",
    {"init.lm": f"hf:{path}", "data.data_dir": triage_data_dir, "train.batch_size": 16},
  )
  _logits_match(model, params, hf_model)


def test_lora_adapters_are_new_only_where_allowed(hf_dir, lm_config):
  path, hf_model = hf_dir
  config, task, model, state = _fresh_state(lm_config, model__lora_rank=2)
  with pytest.raises(ValueError, match=r"lora.*init.allow_missing"):
    init_lib.load(state.params, task.init_slots(), {"lm": f"hf:{path}"})
  params, (report,) = init_lib.load(
    state.params, task.init_slots(), {"lm": f"hf:{path}", "allow_missing": ("*lora_*",)}
  )
  assert report.new and all("lora_" in k for k in report.new)
  _logits_match(model, params, hf_model)  # LoRA's B starts at zero: the base model's logits


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_opentslm_base_lm_from_the_checkpoint_equals_transformers_on_text(
  hf_dir, variant, train_step0
):
  """experiments/train.py on OpenTSLM with `init.lm=hf:DIR`, one step at which nothing moves: with
  closed gates (Flamingo) or no series (SoftPrompt), text logits are the checkpoint's Llama logits."""
  path, hf_model = hf_dir
  overrides = {"init.lm": f"hf:{path}"}
  if variant == "flamingo":
    overrides["model.xattn_gate_init"] = 0.0  # the paper's closed gates
  params, model, task, _, log = train_step0(f"opentslm_{variant}.py:tiny", overrides)
  assert "| 0 [] | 0 []" in log  # the lm slot: nothing newly initialised, nothing unused
  batch = task.dummy_batch(2)
  tokens = np.random.default_rng(0).integers(0, 259, (2, 24))  # text only: no series placeholder
  logits, _ = jax.jit(model.apply)(
    {"params": params},
    tokens,
    series=batch["series"],
    series_mask=batch["series_mask"],
    series_pos=batch["series_pos"],
    input_mask=np.ones_like(tokens),
  )
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=1e-4)


def test_lazy_read_and_donated_state(hf_dir, lm_config):
  """The loop's load: lazily read leaves equal the eager reader's, and with `donate` each replaced
  leaf of the fresh state is deleted (a device holds one copy of the model)."""
  from medjax.checkpoints import hf_llm
  from medjax.checkpoints.host import LazyTensor

  path, hf_model = hf_dir
  config, task, model, state = _fresh_state(lm_config)
  cfg = task.init_slots()["lm"][1]
  lazy = flax.traverse_util.flatten_dict(hf_llm.load_hf_params(path, cfg, lazy=True))
  eager = flax.traverse_util.flatten_dict(hf_llm.load_hf_params(path, cfg))
  assert all(isinstance(v, LazyTensor) for v in lazy.values()) and lazy.keys() == eager.keys()
  for k, v in lazy.items():
    np.testing.assert_array_equal(v.read(), eager[k])
  old = jax.tree.leaves(state.params)
  params, _ = init_lib.load(state.params, task.init_slots(), {"lm": f"hf:{path}"}, donate=True)
  assert all(a.is_deleted() for a in old)
  _logits_match(model, params, hf_model)


def test_medjax_run_source(lm_config, tmp_path):
  """`init.lm=medjax:WORKDIR` fills the slot from another run's best params (the slot's subtree
  when that run has one, else its whole tree); a directory without best params is named."""
  run = tmp_path / "run"
  loop.train(
    lm_config(train__steps=2, train__eval_every=1, train__eval_batches=1, train__keep_best=True),
    str(run),
  )
  saved = init_lib._read_medjax("lm", str(run))
  config, task, model, state = _fresh_state(lm_config)
  fresh = flax.traverse_util.flatten_dict(state.params, sep="/")
  assert any(not np.array_equal(fresh[k], v) for k, v in saved.items())
  params, (report,) = init_lib.load(state.params, task.init_slots(), {"lm": f"medjax:{run}"})
  loaded = flax.traverse_util.flatten_dict(params, sep="/")
  assert report.loaded == len(saved) == len(loaded) and not report.new and not report.unused
  for k, v in saved.items():
    np.testing.assert_array_equal(np.asarray(loaded[k]), v)
  assert init_lib._medjax_subtree({"lm/a": 1, "enc/b": 2}, "lm/") == {"a": 1}
  assert init_lib._medjax_subtree({"a": 1}, "lm/") == {"a": 1}
  with pytest.raises(ValueError, match=r"init.lm: expected a medjax workdir with best params"):
    init_lib.load(state.params, task.init_slots(), {"lm": f"medjax:{tmp_path / 'none'}"})
