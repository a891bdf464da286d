"""OpenTSLM's five-stage curriculum end to end on the builders' real-format fixtures: the paper
architecture at tiny width on a tiny random Hugging Face Llama directory as the frozen base."""

import dataclasses
import os

import flax
import ml_collections
import numpy as np
import pytest

from medjax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_ORDER = ("tsqa", "m4_captions", "har_cot", "sleep_cot", "ecg_qa_cot")
VOCAB = 264  # 3 specials + 256 byte symbols + <ts> (259) + <|endofchunk|> (260), rounded up


def make_hf_llama(path: str):
  """A tiny random Llama checkpoint directory as `transformers` writes it, with a byte-level
  tokenizer.json whose added tokens <ts> and <|endofchunk|> get ids 259 and 260."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers

  symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{c: i + 3 for i, c in enumerate(symbols)}}
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<ts>", "<|endofchunk|>"])
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
  )
  transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
  return tok.token_to_id("<ts>"), tok.token_to_id("<|endofchunk|>")


def fixture_config(variant: str, hf_dir: str, data_dir: str):
  from medjax.checkpoints import load_hf_config

  ts, eoc = make_hf_llama(hf_dir)
  c = config_lib.load_module(os.path.join(ROOT, "configs", "opentslm_curriculum.py")).get_config(
    f"{variant}_fixture"
  )
  lm = dataclasses.asdict(load_hf_config(hf_dir))
  lm["scan_layers"] = False
  with c.unlocked():
    c.model.lm = ml_collections.ConfigDict(lm)  # the checkpoint's architecture
    c.model.update(ts_token_id=ts, eoc_token_id=eoc if variant == "flamingo" else -1)
    c.init.lm = f"hf:{hf_dir}"
    c.data.update(tokenizer=hf_dir, data_dir=data_dir)
  return c


@pytest.mark.slow
def test_curriculum_on_fixtures_with_a_frozen_hf_base(tmp_path):
  """All five stages train one epoch each, in order, each from the previous stage's best params;
  the base LM stays exactly the checkpoint's (frozen) while the cross-attention gates move off
  their initial value (the baseline: the model as built)."""
  import jax

  from medjax.checkpoints import load_hf_params
  from medjax.train import curriculum, loop
  from medjax.train.best import load_params

  hf_dir = str(tmp_path / "hf")
  c = fixture_config("flamingo", hf_dir, str(tmp_path / "tfds"))
  with c.unlocked():
    c.curriculum.test_size = 0  # no per-stage generation: compiling it costs more than the training
  out = curriculum.run(c, str(tmp_path / "run"))
  stages = list(c.curriculum.stages)
  assert [s["stage"] for s in out] == stages == list(PAPER_ORDER)
  assert out[0]["init_from"] == "" and all(
    s["init_from"] == str(tmp_path / "run" / prev / "best") for s, prev in zip(out[1:], stages)
  )
  for s, (name, sc) in zip(out, curriculum.stage_configs(c)):
    task = loop.setup(sc)[2]
    per_epoch = -(-len(task.source("train")) // sc.train.batch_size)  # one epoch, ceil(n / B)
    assert s["steps"] == per_epoch and s["best/step"] == per_epoch, (name, s)
  mesh, rules, task, model = loop.setup(c)
  state = loop.build_step(c, mesh, rules, task, model, abstract_only=True)[0]
  best, _ = load_params(str(tmp_path / "run" / stages[-1] / "best"), state.params)
  flat = flax.traverse_util.flatten_dict(jax.device_get(best), sep="/")
  hf = flax.traverse_util.flatten_dict(jax.device_get(load_hf_params(hf_dir, task.cfg.lm)), sep="/")
  for k, v in hf.items():
    np.testing.assert_array_equal(flat[f"lm/{k}"], v, err_msg=k)  # frozen base
  gates = [v for k, v in flat.items() if k.endswith("_gate")]  # each xattn block's two gates
  assert len(gates) == 2 * task.cfg.lm.num_layers
  assert all(float(g) != task.cfg.xattn_gate_init for g in gates)  # trained off their init
