"""experiments/evaluate_mcq.py end to end: a tiny random Hugging Face Llama checkpoint (config.json,
safetensors, tokenizer.json in the hub's layout) answers every MCQ builder's real-format fixtures with
every strategy; each record is checked against its own generations, re-parsed here."""

import collections
import json
import os

import numpy as np
import pytest

from medjax import config_lib
from medjax.data import builders
from medjax.inference import mcq, parsing
from medjax.inference import strategies as S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = 2


def _write_hf_llama(path, vocab: dict, hidden=32, layers=2, heads=4, kv_heads=2, mlp=64):
  """A random Llama in the Hugging Face layout (tensor names, [out, in] weights, config.json)."""
  from safetensors.numpy import save_file

  rng = np.random.default_rng(0)
  head_dim = hidden // heads
  w = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
  tensors = {
    "model.embed_tokens.weight": w(len(vocab), hidden),
    "lm_head.weight": w(len(vocab), hidden),
  }
  tensors["model.norm.weight"] = np.ones(hidden, np.float32)
  for i in range(layers):
    p = f"model.layers.{i}."
    tensors |= {
      p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
      p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
      p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
      p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
      p + "mlp.gate_proj.weight": w(mlp, hidden),
      p + "mlp.up_proj.weight": w(mlp, hidden),
      p + "mlp.down_proj.weight": w(hidden, mlp),
      p + "input_layernorm.weight": np.ones(hidden, np.float32),
      p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
    }
  save_file(tensors, os.path.join(path, "model.safetensors"))
  config = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": len(vocab),
    "hidden_size": hidden,
    "intermediate_size": mlp,
    "num_hidden_layers": layers,
    "num_attention_heads": heads,
    "num_key_value_heads": kv_heads,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": vocab["<bos>"],
    "eos_token_id": vocab["<eos>"],
    "pad_token_id": vocab["<pad>"],
  }
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)


WORDS = (
  "Answer: Question: Explanation: Context: ( ) (A) (B) (C) (D) A B C D A) B) C) D) the answer is"
)
WORDS += " option correct a of and patient with which most likely yes no maybe because"


def _write_word_tokenizer(path) -> dict:
  """A whitespace word-level tokenizer.json of a few dozen words (others map to <unk>), so prompts
  are short and a random model's text holds answer phrasings and stop strings."""
  import tokenizers

  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
  vocab |= {w: i + len(vocab) for i, w in enumerate(WORDS.split())}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>"])
  tok.save(os.path.join(path, "tokenizer.json"))
  return vocab


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf_llama"))
  _write_hf_llama(path, _write_word_tokenizer(path))
  return path


def _check_records(records, examples, dataset):
  """Every record: its answers re-parsed from its generations, its vote the plurality, scored."""
  by_strategy = collections.defaultdict(list)
  for r in records:
    by_strategy[r["strategy"]].append(r)
  assert sorted(by_strategy) == sorted(S.STRATEGIES)
  for name, recs in by_strategy.items():
    assert [r["question"] for r in recs] == [ex["question"] for ex in examples], name
    for r, ex in zip(recs, examples):
      n, cot = len(ex["options"]), name != "greedy"
      texts = r["generations"] if cot else ["Answer: (" + g for g in r["generations"]]
      parsed = [parsing.parse_answer(t, n, ex["options"]) for t in texts]
      if name in ("shuffle", "medprompt"):
        assert parsed == r["shuffled_answers"] and len(parsed) == 2
        assert r["answers"] == [S.unshuffle_answer(a, p) for a, p in zip(parsed, r["permutations"])]
      else:
        assert parsed == r["answers"]
      assert r["vote"] == S.plurality_vote(r["answers"]) and r["correct"] == (
        r["vote"] == ex["answer_idx"]
      )
      assert not any(s in g for s in mcq.stop_strings(dataset) for g in r["generations"])
    why = mcq.load_exemplars(mcq.DEFAULT_EXEMPLARS[dataset])[0]["explanation"]
    shown = name in ("cot", "sc", "er", "shuffle")  # medprompt shows its own rationales
    assert (why in recs[0]["prompt"]) == shown and "Question:" in recs[0]["prompt"], name


@pytest.mark.slow
def test_evaluate_mcq_script_on_every_builder_and_strategy(hf_dir, tmp_path, capsys):
  from absl import flags

  script = config_lib.load_module(os.path.join(REPO, "experiments", "evaluate_mcq.py"), "eval_mcq")
  reported = {"medqa": "test", "medmcqa": "validation", "pubmedqa": "test", "mmlu_clinical": "test"}
  for dataset in builders.MCQ:
    out = tmp_path / f"{dataset}.jsonl"
    argv = [
      "evaluate_mcq",
      f"--checkpoint=hf:{hf_dir}",
      f"--dataset={dataset}",
      f"--manual_dir={os.path.join(REPO, 'data', dataset, 'dummy_data')}",
      f"--data_dir={tmp_path / 'tfds'}",
      f"--strategy={','.join(S.STRATEGIES)}",
      f"--num_questions={QUESTIONS}",
      "--num_samples=2",
      "--num_refinements=2",
      "--num_shuffles=2",
      "--pool_size=2",
      "--shots=1",
      "--max_new_tokens=8",
      f"--output={out}",
    ]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    script.main([])
    examples = mcq.load_examples(
      dataset,
      reported[dataset],
      data_dir=str(tmp_path / "tfds"),
      manual_dir=os.path.join(REPO, "data", dataset, "dummy_data"),
    )[:QUESTIONS]
    if dataset == "medqa":  # the default is the 4-option set
      assert all(len(ex["options"]) == 4 for ex in examples)
    records = [json.loads(l) for l in open(out)]
    assert len(records) == len(S.STRATEGIES) * QUESTIONS
    _check_records(records, examples, dataset)
  table = capsys.readouterr().out
  assert all(f"\n{name} " in table for name in S.STRATEGIES) and table.count("accuracy") == 4
