"""Hugging Face checkpoint import: logits and greedy decoding equal `transformers` on tiny random models."""

import copy
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="parity tests run the reference transformers models on torch"
)
transformers = pytest.importorskip(
  "transformers", reason="parity tests need the reference transformers models"
)

from torch_reference import randomize, tiny_gemma3  # noqa: E402

# LLAMA_32_1B: the hub's config.json layout (rope_theta / rope_scaling at the top level)
from medjax.benchmarks.init_memory import LLAMA_32_1B  # noqa: E402
from medjax.checkpoints import load_hf_config, load_hf_model, load_hf_params  # noqa: E402
from medjax.inference import generate, generate_text, pad_prompts  # noqa: E402
from medjax.models.llm import DecoderLM, lm_config  # noqa: E402

VOCAB = 128
NEW_TOKENS = 12
torch.set_num_threads(1)  # tiny models: more threads only contend with JAX on a small machine


def _save_tokenizer(path):
  import tokenizers

  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>"])
  tok.save(os.path.join(path, "tokenizer.json"))


def _llama():
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=500_000.0,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8,
    },
    tie_word_embeddings=False,
    initializer_range=0.2,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
  )
  return randomize(transformers.LlamaForCausalLM(cfg), only_1d=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """name -> (directory, torch model). llama_sharded is the Llama model in several safetensors files."""
  root = tmp_path_factory.mktemp("hf")
  llama, gemma = _llama(), tiny_gemma3(vocab_size=VOCAB)
  out = {}
  for name, model, kw in [
    ("llama", llama, {}),
    ("llama_sharded", llama, {"max_shard_size": "40KB"}),
    ("gemma", gemma, {}),
  ]:
    path = str(root / name)
    model.save_pretrained(path, **kw)
    out[name] = (path, model)
  assert os.path.exists(os.path.join(out["llama_sharded"][0], "model.safetensors.index.json"))
  _save_tokenizer(out["llama"][0])
  return out


def _hf_greedy(model, prompt, **kw):
  ids = torch.tensor([prompt])
  kw = {"eos_token_id": None, **kw}
  with torch.no_grad():
    out = model.generate(
      ids,
      attention_mask=torch.ones_like(ids),
      max_new_tokens=NEW_TOKENS,
      do_sample=False,
      pad_token_id=0,
      **kw,
    )
  return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("name", ["llama", "llama_sharded", "gemma"])
def test_logits_match_transformers(checkpoints, name, scan_layers):
  path, model = checkpoints[name]
  cfg = load_hf_config(path, scan_layers=scan_layers)
  params = load_hf_params(path, cfg)
  tokens = np.random.RandomState(0).randint(
    0, VOCAB, (2, 12)
  )  # longer than gemma's sliding window (4)
  with torch.no_grad():
    ref = model(torch.tensor(tokens)).logits.numpy()
  logits, _ = DecoderLM(cfg).apply({"params": params}, jnp.asarray(tokens))
  assert np.abs(ref).max() > 1.0  # logits are not trivially small
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,scan_layers", [("llama", True), ("gemma", False)])
def test_greedy_generation_matches_transformers(checkpoints, name, scan_layers):
  path, model = checkpoints[name]
  cfg = load_hf_config(path, scan_layers=scan_layers)
  prompts = np.random.RandomState(1).randint(3, VOCAB, (2, 7))
  out, n = generate(
    DecoderLM(cfg),
    load_hf_params(path, cfg),
    jnp.asarray(prompts),
    jnp.full((2,), 7),
    jax.random.PRNGKey(0),
    max_new_tokens=NEW_TOKENS,
  )
  assert np.asarray(n).tolist() == [NEW_TOKENS] * 2
  for row, prompt in zip(np.asarray(out).tolist(), prompts.tolist()):
    assert row == _hf_greedy(model, prompt)


def test_stop_sequence_ends_a_row_on_device(checkpoints):
  path, model = checkpoints["llama"]
  cfg = load_hf_config(path)
  prompts = np.random.RandomState(1).randint(3, VOCAB, (2, 7))
  ref = [_hf_greedy(model, p) for p in prompts.tolist()]
  stop = tuple(
    ref[0][3:5]
  )  # row 0 ends by its 5th token; row 1 runs on unless it meets the same pair
  out, n = generate(
    DecoderLM(cfg),
    load_hf_params(path, cfg),
    jnp.asarray(prompts),
    jnp.full((2,), 7),
    jax.random.PRNGKey(0),
    max_new_tokens=NEW_TOKENS,
    pad_id=0,
    stop_ids=(stop,),
  )
  out, n = np.asarray(out).tolist(), np.asarray(n).tolist()
  for row, (r, k) in enumerate(zip(ref, n)):
    ends = [i + 2 for i in range(NEW_TOKENS - 1) if tuple(r[i : i + 2]) == stop] + [NEW_TOKENS]
    assert k == ends[0] and out[row] == r[:k] + [0] * (NEW_TOKENS - k), row
  assert n[0] <= 5


def test_right_padded_batch_matches_single_prompts(checkpoints):
  path, model = checkpoints["gemma"]
  cfg = load_hf_config(path)
  rs = np.random.RandomState(2)
  prompts = [rs.randint(3, VOCAB, n).tolist() for n in (3, 9, 6)]
  tokens, lengths = pad_prompts(prompts, pad_id=0)
  out, _ = generate(
    DecoderLM(cfg),
    load_hf_params(path, cfg),
    jnp.asarray(tokens),
    jnp.asarray(lengths),
    jax.random.PRNGKey(0),
    max_new_tokens=NEW_TOKENS,
  )
  assert np.asarray(out).tolist() == [_hf_greedy(model, p) for p in prompts]


def test_load_hf_model_generates_text_like_transformers(checkpoints):
  path, model = checkpoints["llama"]
  lm, params, tok = load_hf_model(path)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  prompt = "w5 w17 w99 w42 w8"
  text = generate_text(lm, params, tok, [prompt], max_new_tokens=NEW_TOKENS)[0]
  ref = _hf_greedy(model, tok.encode(prompt, add_bos=True), eos_token_id=tok.eos_id)
  assert text == tok.decode(ref)
  assert text  # a non-empty continuation


def test_inference_scripts_take_the_training_init_syntax(checkpoints):
  """`--checkpoint=hf:DIR` (evaluate_mcq, sample) loads what a bare DIR loads."""
  from medjax.train.restore import load_model

  path, _ = checkpoints["llama"]
  _, bare, tok, _ = load_model(path)
  _, prefixed, tok2, config = load_model(f"hf:{path}")
  assert config is None and (tok2.pad_id, tok2.eos_id, tok2.bos_id) == (
    tok.pad_id,
    tok.eos_id,
    tok.bos_id,
  )
  for a, b in zip(jax.tree.leaves(bare), jax.tree.leaves(prefixed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(
    ValueError, match=r"--checkpoint: hf:.*missing: expected a Hugging Face directory"
  ):
    load_model(f"hf:{path}/missing")


def test_bfloat16_checkpoint_loads_exactly(checkpoints, tmp_path):
  _, model = checkpoints["gemma"]
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(str(tmp_path))
  cfg = load_hf_config(str(tmp_path), scan_layers=True)
  params = load_hf_params(str(tmp_path), cfg, dtype=jnp.bfloat16)
  down = params["layers"]["layer"]["mlp"]["down"]["kernel"]
  assert down.dtype == jnp.bfloat16
  ref = model.model.layers[3].mlp.down_proj.weight.detach().to(torch.bfloat16).float().numpy().T
  np.testing.assert_array_equal(np.asarray(down[3], np.float32), ref)


def _write_config(tmp_path, hf):
  (tmp_path / "config.json").write_text(json.dumps(hf))
  return str(tmp_path)


GEMMA_3_1B = {
  "architectures": ["Gemma3ForCausalLM"],
  "model_type": "gemma3_text",
  "vocab_size": 262144,
  "hidden_size": 1152,
  "intermediate_size": 6912,
  "num_hidden_layers": 26,
  "num_attention_heads": 4,
  "num_key_value_heads": 1,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "max_position_embeddings": 32768,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000,
  "rope_scaling": None,
  "rope_theta": 1000000,
  "sliding_window": 512,
  "sliding_window_pattern": 6,
  "final_logit_softcapping": None,
  "attn_logit_softcapping": None,
}


@pytest.mark.parametrize("hf,preset", [(LLAMA_32_1B, "llama-3.2-1b"), (GEMMA_3_1B, "gemma-3-1b")])
def test_hub_configs_map_to_presets(tmp_path, hf, preset):
  assert load_hf_config(_write_config(tmp_path, hf), scan_layers=True) == lm_config(preset)


def test_gemma_layer_types_and_rope_parameters_layout(tmp_path):
  hf = {k: v for k, v in GEMMA_3_1B.items() if not k.startswith(("rope", "sliding_window_pattern"))}
  hf["layer_types"] = [
    "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)
  ]
  hf["rope_parameters"] = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
  }
  cfg = load_hf_config(_write_config(tmp_path, hf), scan_layers=True)
  assert cfg == dataclasses.replace(
    lm_config("gemma-3-1b"), rope_scaling={"rope_type": "linear", "factor": 8.0}
  )


@pytest.mark.parametrize(
  "change,field",
  [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "model_type"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "relu"}, "hidden_act"),
  ],
)
def test_unsupported_configs_name_the_field(tmp_path, change, field):
  with pytest.raises(ValueError, match=f"'{field}'"):
    load_hf_config(_write_config(tmp_path, {**LLAMA_32_1B, **change}))


def test_irregular_gemma_layer_types_are_rejected(tmp_path):
  hf = {
    **GEMMA_3_1B,
    "num_hidden_layers": 3,
    "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
  }
  with pytest.raises(ValueError, match="'layer_types'"):
    load_hf_config(_write_config(tmp_path, hf))


def test_params_that_do_not_fit_the_config_are_rejected(checkpoints, tmp_path):
  path, _ = checkpoints["llama"]
  cfg = dataclasses.replace(load_hf_config(path), num_kv_heads=4)
  with pytest.raises(ValueError, match="self_attn.k_proj.weight.*expected shape"):
    load_hf_params(path, cfg)
  with pytest.raises(
    ValueError, match="lm_head.weight"
  ):  # an untied head has no place in a tied model
    load_hf_params(path, dataclasses.replace(load_hf_config(path), tie_embeddings=True))
  with pytest.raises(ValueError, match="model.safetensors"):
    load_hf_params(_write_config(tmp_path, LLAMA_32_1B), load_hf_config(path))
