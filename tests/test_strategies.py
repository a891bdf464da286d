"""Tests for medjax.inference.strategies / parsing: voting, parsing, shuffles, token accounting, ER."""

import collections
import itertools
import re

import jax
import numpy as np
import pytest

from medjax.data.synthetic import triage
from medjax.data.tokenizers import ByteTokenizer
from medjax.inference import parsing
from medjax.inference import strategies as S
from medjax.models.llm import DecoderLM, lm_config
from medjax.tasks.lm import refinement_example, wrong_explanation

EXAMPLES = triage.make_examples(6, seed=5)


class FakeGenerator:
  """Scripted generator: `fn(prompt, sample_index) -> text`; records every call."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, prompts, *, num_samples=1, temperature=0.0, seed=0):
    self.calls.append(dict(prompts=list(prompts), num_samples=num_samples, temperature=temperature))
    return [[self.fn(p, j) for j in range(num_samples)] for p in prompts], 10 * len(
      prompts
    ) * num_samples


def _letter_of(prompt: str, option: str) -> str:
  """The letter of option text `option` in a triage prompt (the last question block in it)."""
  return re.findall(rf"^([A-D]) {option}$", prompt, flags=re.M)[-1]


# ---------------------------------------------------------------------------------------------
# Parsing and voting
# ---------------------------------------------------------------------------------------------
def test_plurality_vote_tie_break_is_first_seen():
  assert S.plurality_vote(["B", None, "A", "B", "A"]) == "B"
  assert S.plurality_vote(["C", "A", "A", "C", None, None, None]) == "C"
  assert S.plurality_vote([None, "D"]) == "D"
  assert S.plurality_vote([None, None]) is None


def test_shuffle_options_maps_answers_back():
  ex = EXAMPLES[0]
  for perm in itertools.permutations(range(4)):
    sh = S.shuffle_options(ex, perm)
    assert sh["options"]["ABCD".index(sh["answer_idx"])] == ex["answer"]
    assert S.unshuffle_answer(sh["answer_idx"], perm) == ex["answer_idx"]
    for j, letter in enumerate(
      "ABCD"
    ):  # every shuffled letter maps to the original option it shows
      assert ex["options"]["ABCD".index(S.unshuffle_answer(letter, perm))] == sh["options"][j]
  with pytest.raises(ValueError, match="perm"):
    S.shuffle_options(ex, [0, 1, 1, 2])


# ---------------------------------------------------------------------------------------------
# Strategies with a scripted generator
# ---------------------------------------------------------------------------------------------
def test_self_consistency_votes_in_one_batched_call():
  script = ["Answer: A", "Answer: B", "nonsense", "Answer: B"]
  gen = FakeGenerator(lambda p, j: script[j % 4])
  res = S.self_consistency(gen, S.TriageFormat(), EXAMPLES, num_samples=4, temperature=0.5)
  assert (
    len(gen.calls) == 1 and gen.calls[0]["num_samples"] == 4 and gen.calls[0]["temperature"] == 0.5
  )
  assert [r["vote"] for r in res.records] == ["B"] * len(EXAMPLES)
  assert res.unparseable == pytest.approx(0.25)
  assert res.forward_tokens == 10 * 4 * len(EXAMPLES)
  assert res.accuracy == np.mean([ex["answer_idx"] == "B" for ex in EXAMPLES])
  with pytest.raises(ValueError, match="temperature"):
    S.self_consistency(gen, S.TriageFormat(), EXAMPLES, num_samples=3, temperature=0.0)


def test_ensemble_refinement_conditions_on_all_stage1_generations():
  def fn(prompt, j):
    if "Refined reasoning:" in prompt:  # the refiner is right iff it sees a correct candidate
      return f"ok Answer: {'A' if 'cand-right' in prompt else 'D'}"
    return "cand-right Answer: A" if j == 2 else f"cand-{j} Answer: {'BCD'[j % 3]}"

  gen = FakeGenerator(fn)
  res = S.ensemble_refinement(gen, S.TriageFormat(), EXAMPLES, num_samples=3, num_refinements=5)
  assert [c["num_samples"] for c in gen.calls] == [3, 5]
  for rec in res.records:
    assert len(rec["stage1_generations"]) == 3 and len(rec["generations"]) == 5
    assert all(g in rec["prompt"] for g in rec["stage1_generations"])  # all candidates in stage 2
    assert rec["vote"] == "A" and rec["stage1_vote"] == "B"  # stage-1 tie B/C/A -> first seen
  assert res.forward_tokens == 10 * (3 + 5) * len(EXAMPLES)


def test_choice_shuffle_undoes_position_bias():
  content = FakeGenerator(lambda p, j: f"Answer: {_letter_of(p, 'urgent')}")
  res = S.choice_shuffle(content, S.TriageFormat(), EXAMPLES, num_shuffles=5)
  for ex, rec in zip(EXAMPLES, res.records):
    assert len(set(map(tuple, rec["permutations"]))) == 5 and rec["permutations"][0] == [0, 1, 2, 3]
    assert (
      rec["answers"] == ["ABCD"[ex["options"].index("urgent")]] * 5
    )  # mapped back to the original
  biased = S.choice_shuffle(FakeGenerator(lambda p, j: "Answer: A"), S.TriageFormat(), EXAMPLES)
  assert any(len(set(r["answers"])) > 1 for r in biased.records)


def _bag_of_chars(texts):
  return np.stack([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256) for t in texts])


def test_knn_few_shot_picks_the_nearest_5():
  """Medprompt's kNN: the 5 pool examples of highest cosine similarity (brute force, computed
  here), not the pool's first 5; shuffled options keep the neighbours (the question is compared)."""
  pool = triage.make_examples(20, seed=9)
  knn = S.KNNFewShot(pool, _bag_of_chars, k=5)
  emb = _bag_of_chars([f"\n{ex['question']}".strip() for ex in pool]).astype(float)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  for q in triage.make_examples(4, seed=11):
    v = _bag_of_chars([q["question"]])[0].astype(float)
    sims = emb @ (v / np.linalg.norm(v))
    got = knn(q)
    idx = [pool.index(e) for e in got]
    rest = np.delete(sims, idx)
    assert len(got) == 5 and sims[idx].min() >= rest.max() - 1e-6  # the 5 nearest, ties aside
    assert np.all(np.diff(sims[idx]) <= 1e-6)  # nearest first
    assert knn(S.shuffle_options(q, [3, 2, 1, 0])) == got
  assert any(sorted(pool.index(e) for e in knn(q)) != list(range(5)) for q in pool)
  fmt = S.FewShotFormat(shots=knn)
  prompt = fmt.prompt(pool[7], cot=False)
  assert prompt.count("Question:") == 6 and prompt.endswith("Answer: (")
  assert knn(pool[7])[0] is pool[7]
  assert fmt.parse("C) because", pool[7], cot=False) == "C"
  with pytest.raises(ValueError, match="k"):
    S.KNNFewShot(pool, _bag_of_chars, k=0)


def _scripted_cot(prompt, j):
  """Right (the level's letter) for questions whose heart rate is even, else a wrong letter."""
  q = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
  opts = re.findall(r"^\(([A-D])\) (\w+)$", prompt.rsplit("Question: ", 1)[1], flags=re.M)
  level = {ex["question"]: ex["answer"] for ex in POOL + EXAMPLES}[q]
  right = next(l for l, o in opts if o == level)
  hr = int(q.split()[1])
  letter = right if hr % 2 == 0 else "ABCD"[("ABCD".index(right) + 1) % 4]
  return f" Reasoning about {q}. Answer: {letter}"


POOL = triage.make_examples(12, seed=21)


def test_self_generated_cot_keeps_only_right_answer_rationales():
  gen = FakeGenerator(_scripted_cot)
  kept, spent = S.self_generated_cot(gen, S.FewShotFormat(), POOL)
  right = [ex for ex in POOL if int(ex["question"].split()[1]) % 2 == 0]
  assert 0 < len(right) < len(POOL)  # the script gets some wrong: the filter has work to do
  assert [k["question"] for k in kept] == [ex["question"] for ex in right]
  assert all(k["explanation"] == f"Reasoning about {k['question']}." for k in kept)
  assert spent == 10 * len(POOL) and gen.calls[0]["temperature"] == 0.0


def test_medprompt_shows_knn_self_generated_exemplars_and_votes_over_5_shuffles():
  gen = FakeGenerator(_scripted_cot)
  res = S.medprompt(gen, S.FewShotFormat(), EXAMPLES, pool=POOL, embed_fn=_bag_of_chars)
  kept, _ = S.self_generated_cot(FakeGenerator(_scripted_cot), S.FewShotFormat(), POOL)
  knn = S.KNNFewShot(kept, _bag_of_chars, k=5)
  assert [len(c["prompts"]) for c in gen.calls] == [len(POOL), 5 * len(EXAMPLES)]
  for ex, rec in zip(EXAMPLES, res.records):
    assert len(rec["prompts"]) == 5 and len(set(map(tuple, rec["permutations"]))) == 5
    assert rec["sgcot_kept"] == len(kept) and rec["prompt"].endswith("Explanation:")
    shown = re.findall(r"Question: (.*)\n", rec["prompt"])[:-1]
    assert shown == [k["question"] for k in knn(ex)]  # the 5 nearest right-answer exemplars
    assert all(f"Explanation: Reasoning about {q}. Answer: (" in rec["prompt"] for q in shown)
    want = ex["answer_idx"] if int(ex["question"].split()[1]) % 2 == 0 else None
    if want:  # the script is right on every shuffle: the vote is the right answer
      assert rec["answers"] == [want] * 5 and rec["correct"]
  assert 0 < sum(r["correct"] for r in res.records) < len(EXAMPLES)
  assert res.forward_tokens == 10 * (len(POOL) + 5 * len(EXAMPLES))
  with pytest.raises(ValueError, match="few-shot"):
    S.medprompt(gen, S.TriageFormat(), EXAMPLES, pool=POOL, embed_fn=_bag_of_chars)


def test_refinement_training_examples():
  rng = np.random.default_rng(0)
  for ex in EXAMPLES:
    wrong = wrong_explanation(ex, rng)
    assert wrong != triage.format_target(ex).strip() and parsing.parse_answer(wrong) is not None
    prompt, target = refinement_example(ex, rng, 4)
    assert (
      prompt.endswith("Refined reasoning:") and parsing.parse_answer(target) == ex["answer_idx"]
    )
    assert 2 <= prompt.count("Answer:") <= 4


def test_training_mix_of_cot_refinement_and_direct_examples():
  from medjax.config_lib import config_from_file
  from medjax.tasks import get_task

  c = config_from_file("configs/llm.py:tiny", ["data.refine_frac=0.5", "data.direct_frac=0.2"])
  task = get_task(c)
  kinds = {"refine": 0, "direct": 0, "cot": 0}
  for ex in triage.make_examples(300, seed=1):
    prompt, target = task._mixed_format(ex)
    kind = (
      "refine"
      if prompt.startswith("Candidates:")
      else "cot"
      if prompt.endswith("Reasoning:")
      else "direct"
    )
    kinds[kind] += 1
    assert parsing.parse_answer(target) == ex["answer_idx"] and (
      kind == "direct"
    ) == target.startswith("Answer:")
    assert task._mixed_format(ex) == (prompt, target)  # fixed per question
  assert 0.4 < kinds["refine"] / 300 < 0.6 and 0.12 < kinds["direct"] / 300 < 0.28, kinds
  c.data.direct_frac = 0.6
  with pytest.raises(ValueError, match="refine_frac \\+ data.direct_frac.*0.5 \\+ 0.6"):
    get_task(c)


def test_er_demo_never_taught_trains_without_refinement_examples():
  """refine_frac=0 (the honest ER demo): no training example is a refinement prompt, where the taught
  demo's mix has about half; seeds reach the config; the per-seed table averages over seeds."""
  from medjax.benchmarks import er_demo
  from medjax.config_lib import config_from_file
  from medjax.tasks import get_task

  def kinds(refine_frac, seed):
    c = er_demo.er_config(
      config_from_file("configs/llm.py:tiny"),
      steps=1,
      batch_size=8,
      refine_frac=refine_frac,
      refine_candidates=4,
      direct_frac=0.2,
      seed=seed,
    )
    task = get_task(c)
    prompts = [task._format(ex)[0] for ex in triage.make_examples(200, seed=2)]
    return c, collections.Counter(p.split("\n")[0] == "Candidates:" for p in prompts)

  c, never = kinds(0.0, seed=2)
  _, taught = kinds(0.5, seed=0)
  assert c.seed == 2 and c.data.seq_len == 176 and never[True] == 0 and never[False] == 200
  assert 70 < taught[True] < 130

  def fake(acc):
    return S.StrategyResult("x", [{"correct": i < acc * 4, "answers": ["A"]} for i in range(4)], 1)

  table = er_demo.seed_table({0: {"cot": (fake(0.5), 0.0)}, 1: {"cot": (fake(1.0), 0.0)}})
  assert table.splitlines()[1].split() == ["cot", "0.500", "1.000", "0.750", "0.250", "0.000"]


# ---------------------------------------------------------------------------------------------
# A real (random) model: token accounting and shared prefills
# ---------------------------------------------------------------------------------------------
def test_lm_generator_counts_forward_tokens():
  tok = ByteTokenizer()
  model = DecoderLM(lm_config("tiny"))
  key = jax.random.key(0, impl="rbg")  # XLA:CPU compiles rbg draws faster than threefry's
  params = jax.jit(model.init)(key, np.zeros((1, 8), np.int32))["params"]
  gen = S.LMGenerator(model, params, tok, max_new_tokens=6, max_rows=4)
  prompts = ["HR 70", "SBP 120 SpO2 99", "T 37.0"]
  texts, spent = gen(prompts, num_samples=3, temperature=1.0, seed=1)
  assert [len(t) for t in texts] == [3, 3, 3]
  prefill = sum(
    len(tok.encode(p, add_bos=True)) for p in prompts
  )  # once per prompt, not per sample
  assert prefill < spent <= prefill + 9 * 6
  fixed = S.LMGenerator(model, params, tok, max_new_tokens=6, fixed_length=True)
  assert (
    fixed(prompts, num_samples=2, temperature=1.0)[1] == prefill + 3 * 2 * 6
  )  # no row ends early
  greedy, _ = gen(prompts)
  again, _ = gen(prompts[:1])
  assert greedy[0] == again[0]  # chunking (max_rows) does not change greedy outputs
  pool = triage.make_examples(8, seed=3)
  knn = S.KNNFewShot(pool, S.lm_embed_fn(model, params, tok), k=2)
  assert all(knn(ex)[0] is ex for ex in pool)  # identical text -> cosine 1 with itself


# ---------------------------------------------------------------------------------------------
# End to end: train the tiny LM on CoT + refinement data, then every strategy and the MCQ evaluation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def er_run(tmp_path_factory):
  """A few training steps on the mixed CoT + refinement data (the accuracy figures come from
  experiments/er_demo.py; this checks the plumbing end to end on 2 CPU cores)."""
  from medjax.benchmarks import er_demo
  from medjax.config_lib import config_from_file
  from medjax.train.loop import train

  workdir = str(tmp_path_factory.mktemp("er"))
  config = er_demo.er_config(
    config_from_file("configs/llm.py:tiny"),
    steps=4,
    batch_size=8,
    refine_frac=0.5,
    refine_candidates=2,
  )
  config.data.max_new_tokens = 48
  train(config, workdir)
  results = er_demo.compare(
    config, workdir, questions=8, num_samples=2, num_refinements=3, temperature=0.7
  )
  return config, workdir, results


@pytest.mark.slow
def test_er_end_to_end(er_run):
  _, _, results = er_run
  assert set(results) == {"greedy", "cot", "sc", "er"}
  sc, er = results["sc"][0], results["er"][0]
  for rec, sc_rec in zip(er.records, sc.records):
    assert rec["stage1_generations"] == sc_rec["generations"]  # same seed: stage 1 is SC's sampling
    assert len(rec["generations"]) == 3 and rec["prompt"].endswith("Refined reasoning:")
    assert "\n1. " in rec["prompt"] and "\n2. " in rec["prompt"] and "\n3. " not in rec["prompt"]
  assert er.forward_tokens > sc.forward_tokens
  for res, _ in results.values():
    assert 0 <= res.accuracy <= 1 and 0 <= res.unparseable <= 1 and len(res.records) == 8


@pytest.mark.slow
def test_evaluate_mcq_reads_the_saved_config(er_run):
  from medjax.inference import mcq as ev
  from medjax.train.restore import load_model

  config, workdir, _ = er_run
  model, params, tok, saved = load_model(workdir, None)
  assert saved.data.refine_frac == 0.5 and saved.data.seq_len == config.data.seq_len
  examples = ev.load_examples("synthetic_triage", "test")[:4]
  gen = S.LMGenerator(model, params, tok, max_new_tokens=8)
  res = ev.run_strategies(
    gen,
    S.TriageFormat(),
    examples,
    ["shuffle"],
    num_samples=2,
    num_refinements=2,
    num_shuffles=3,
    temperature=0.7,
    seed=0,
  )
  assert "shuffle" in ev.table(res) and len(res["shuffle"][0].records[0]["generations"]) == 3
  with pytest.raises(ValueError, match="strategy"):
    ev.run_strategies(
      gen,
      S.TriageFormat(),
      examples,
      ["beam"],
      num_samples=1,
      num_refinements=1,
      num_shuffles=1,
      temperature=0.0,
      seed=0,
    )
  with pytest.raises(ValueError, match="checkpoint"):
    load_model(str(workdir) + "/missing", None)


@pytest.mark.slow
def test_colab_runs(run_colab, tmp_path):
  """colabs/ensemble_refinement.ipynb end to end, with its parameters cell shrunk and its LM started
  from a random Llama of the tiny preset in the Hugging Face layout (OVERRIDES)."""
  from medjax.benchmarks.init_memory import LLAMA_32_1B, write_random_checkpoint

  tiny = dict(vocab_size=264, hidden_size=128, intermediate_size=384, num_hidden_layers=2)
  tiny.update(num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10_000.0)
  write_random_checkpoint(str(tmp_path), {**LLAMA_32_1B, **tiny, "rope_scaling": None})
  text, _ = run_colab(
    "ensemble_refinement",
    "STEPS, BATCH_SIZE, DIRECT_FRAC, QUESTIONS, NUM_SAMPLES, NUM_REFINEMENTS, TEMPERATURE = "
    f"3, 8, 0.2, 4, 2, 2, 0.7\nOVERRIDES = {{'init.lm': 'hf:{tmp_path}'}}",
  )
  assert f"LM started from hf:{tmp_path}" in text
  assert "Refined reasoning:" in text and "vote:" in text and "Question:" in text
  assert all(name in text for name in ("greedy", "cot", "sc", "er"))


def test_prompt_widths_are_bucketed():
  from medjax.inference.decode import bucket_length, pad_prompts

  assert [bucket_length(n) for n in (1, 16, 17, 100, 256, 257, 900)] == [
    16,
    16,
    32,
    128,
    256,
    512,
    1024,
  ]
  toks, lens = pad_prompts([[5] * 20, [6] * 3], pad_id=0)
  assert toks.shape == (2, 32) and lens.tolist() == [20, 3] and toks[1, 3:].sum() == 0
  assert pad_prompts([[5] * 20], pad_id=0, multiple=8)[0].shape == (1, 24)


def test_er_cost_benchmark_times_every_method_on_fixed_length_answers():
  from medjax.benchmarks import er_cost

  model = DecoderLM(lm_config("tiny"))
  key = jax.random.key(0, impl="rbg")  # XLA:CPU compiles rbg draws faster than threefry's
  params = jax.jit(model.init)(key, np.zeros((1, 8), np.int32))["params"]
  gen = S.LMGenerator(model, params, ByteTokenizer(), max_new_tokens=4, fixed_length=True)
  r = er_cost.measure(
    gen, S.TriageFormat(), EXAMPLES[:1], num_samples=2, num_refinements=3, repeats=1
  )
  assert all(r[k] > 0 for k in ("greedy_s", "er_batched_s", "er_naive_s"))
  assert r["er_batched_over_greedy"] == pytest.approx(r["er_batched_s"] / r["greedy_s"])


def test_scripts_are_thin_and_import_only_the_library():
  """experiments/ and benchmarks/ scripts parse flags and call medjax: no script imports another
  (nor edits sys.path to do so), and each stays short."""
  import ast
  import os
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  scripts = {
    os.path.join(folder, name)
    for folder in ("experiments", "benchmarks")
    for name in os.listdir(os.path.join(root, folder))
    if name.endswith(".py")
  }
  local = {os.path.basename(p)[:-3] for p in scripts} | {"experiments", "benchmarks", "configs"}
  allowed = {"absl", "ml_collections", "jax", "medjax"} | set(sys.stdlib_module_names)
  for path in sorted(scripts):
    with open(os.path.join(root, path)) as f:
      text = f.read()
    tree = ast.parse(text)
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    tops = {m.split(".")[0] for m in modules}
    assert not tops & local and tops <= allowed, (path, tops - allowed, tops & local)
    assert "sys.path" not in text, path
    assert len(text.splitlines()) <= 70, (path, len(text.splitlines()))
