"""Multiple-choice evaluation of a decoder LM with prompting strategies (greedy, CoT, SC, ER,
choice shuffle, Medprompt), as Med-PaLM 2 and Medprompt report them.

`load_examples` reads a split through the dataset's TFDS builder; `load_exemplars` reads few-shot
exemplars with rationales (JSONL: question, options, rationale, answer; each dataset has a default
set written for this project, `DEFAULT_EXEMPLARS`); `prompt_format` builds the few-shot format
(5 shots by default, Med-PaLM 2's); `run_strategies` answers every question with each strategy
(Medprompt explains a training pool itself and picks kNN exemplars from it); `table` prints accuracy,
unparseable rate and forward tokens (prefill + decoded) per strategy and `write_records` keeps one
JSONL record per answer.
"""

import json
import os
import time

from medjax.data import builders, pipeline
from medjax.data.synthetic import tfds_builder
from medjax.inference import strategies as S

DATASETS = ("synthetic_triage", *builders.MCQ)
# The split each dataset's results are reported on (MedMCQA: dev, its test release has no labels).
EVAL_SPLIT = {"medmcqa": "validation"}
# Medprompt's pool of questions to explain (MMLU has no train split; its dev split holds 5 per topic).
POOL_SPLIT = {"mmlu_clinical": "dev"}
_CLINICAL = os.path.join(builders.DATA, "medqa", "exemplars.jsonl")
DEFAULT_EXEMPLARS = {
  "medqa": _CLINICAL,
  "medmcqa": _CLINICAL,
  "mmlu_clinical": _CLINICAL,
  "pubmedqa": os.path.join(builders.DATA, "pubmedqa", "exemplars.jsonl"),
}
INSTRUCTIONS = {
  "pubmedqa": "The following are questions about medical research, each answered yes, no or maybe "
  "from its context.",
}


def load_examples(dataset: str, split: str, *, data_dir=None, manual_dir=None, builder_config=None):
  """Examples {question, options, answer_idx, ...} of one split, through the dataset's TFDS builder."""
  if dataset == "synthetic_triage":
    source = tfds_builder.load_source(split, data_dir)
  elif dataset in builders.MCQ:
    source = builders.load_builder(
      dataset, split, data_dir=data_dir, manual_dir=manual_dir, config=builder_config
    )
  else:
    raise ValueError(f"--dataset: expected one of {list(DATASETS)}, got {dataset!r}")
  return [pipeline.record_to_example(source[i]) for i in range(len(source))]


def load_exemplars(path: str) -> list[dict]:
  """Few-shot exemplars from JSONL lines {question, options (a list, or {"A": ...}), rationale,
  answer (a letter or the option's text), context (optional)} -> examples with an explanation."""
  out = []
  with open(path) as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      where, r = f"{path}:{i + 1}", json.loads(line)
      for field in ("question", "options", "rationale", "answer"):
        if not r.get(field):
          raise ValueError(f"{where}: {field}: expected a non-empty value, got {r.get(field)!r}")
      opts = r["options"]
      if isinstance(opts, dict):
        if sorted(opts) != list(S.letters(len(opts))):
          raise ValueError(f"{where}: options: expected letters from 'A', got {sorted(opts)}")
        opts = [opts[k] for k in sorted(opts)]
      valid = S.letters(len(opts))
      answer = r["answer"] if r["answer"] in valid else None
      if answer is None and r["answer"] in opts:
        answer = valid[opts.index(r["answer"])]
      if answer is None:
        raise ValueError(
          f"{where}: answer: expected one of {list(valid)} or an option's text, got {r['answer']!r}"
        )
      out.append(
        {
          "question": r["question"],
          "options": list(opts),
          "answer_idx": answer,
          "explanation": r["rationale"],
          "context": r.get("context", ""),
        }
      )
  return out


def prompt_format(dataset: str, exemplars=(), shots: int = 5):
  """The triage format for the embedded task, else few-shot with the first `shots` exemplars."""
  if dataset == "synthetic_triage":
    return S.TriageFormat()
  if shots > len(exemplars):
    raise ValueError(f"--shots: expected at most {len(exemplars)} (the exemplars), got {shots}")
  kw = {"instruction": INSTRUCTIONS[dataset]} if dataset in INSTRUCTIONS else {}
  return S.FewShotFormat(shots=list(exemplars[:shots]), **kw)


def stop_strings(dataset: str) -> tuple:
  """Where a few-shot answer ends: the next block ('Question:', or 'Context:' where questions have
  one); the triage task stops at EOS."""
  if dataset == "synthetic_triage":
    return ()
  return ("\nContext:", "\nQuestion:") if dataset == "pubmedqa" else ("\nQuestion:",)


def run_strategies(generator, fmt, examples, names, **kw) -> dict:
  """name -> (StrategyResult, seconds) for each strategy in `names`.

  kw: num_samples, num_refinements, num_shuffles, temperature, seed; for medprompt also `pool`
  (training examples), `embed_fn` and `knn` (exemplars per question, default 5).
  """
  unknown = [n for n in names if n not in S.STRATEGIES]
  if unknown:
    raise ValueError(f"--strategy: expected names from {sorted(S.STRATEGIES)}, got {unknown}")
  sample = dict(num_samples=kw["num_samples"], temperature=kw["temperature"], seed=kw["seed"])
  args = {
    "sc": sample,
    "er": dict(sample, num_refinements=kw["num_refinements"]),
    "shuffle": dict(num_shuffles=kw["num_shuffles"], seed=kw["seed"]),
  }
  if "medprompt" in names:
    args["medprompt"] = dict(
      args["shuffle"], pool=kw.get("pool"), embed_fn=kw.get("embed_fn"), k=kw.get("knn", 5)
    )
  out = {}
  for name in names:
    tick = time.time()
    out[name] = (
      S.STRATEGIES[name](generator, fmt, examples, **args.get(name, {})),
      time.time() - tick,
    )
  return out


def evaluate(
  model,
  params,
  tokenizer,
  dataset: str,
  strategies,
  *,
  split: str = "",
  num_questions: int = 0,
  shots: int = 5,
  exemplars: str = "",
  pool_size: int = 0,
  data_dir=None,
  manual_dir=None,
  builder_config=None,
  max_new_tokens: int = 256,
  max_rows: int = 256,
  **strategy_kw,
) -> tuple[list, dict]:
  """-> (examples, `run_strategies` results) on the first `num_questions` (0: all) of `split` ("":
  the dataset's reported split). `exemplars`: a JSONL file ("": the dataset's default set);
  `pool_size`: the first this many training questions Medprompt explains (0: all).

  strategy_kw: num_samples, num_refinements, num_shuffles, temperature, seed, knn.
  """
  load = lambda s: load_examples(
    dataset, s, data_dir=data_dir, manual_dir=manual_dir, builder_config=builder_config
  )
  examples = load(split or EVAL_SPLIT.get(dataset, "test"))[: num_questions or None]
  shown = load_exemplars(exemplars or DEFAULT_EXEMPLARS[dataset]) if dataset in builders.MCQ else []
  fmt = prompt_format(dataset, shown, shots)
  if "medprompt" in strategies:
    strategy_kw["pool"] = load(POOL_SPLIT.get(dataset, "train"))[: pool_size or None]
    strategy_kw["embed_fn"] = S.lm_embed_fn(model, params, tokenizer)
  gen = S.LMGenerator(
    model,
    params,
    tokenizer,
    max_new_tokens=max_new_tokens,
    stop=stop_strings(dataset),
    max_rows=max_rows,
  )
  return examples, run_strategies(gen, fmt, examples, strategies, **strategy_kw)


def table(results: dict) -> str:
  """The per-strategy summary of `run_strategies` results as a fixed-width text table."""
  lines = [
    f"{'strategy':<10} {'accuracy':>8} {'unparse':>8} {'fwd tokens':>11} {'tok/q':>8} {'seconds':>8}"
  ]
  for name, (res, sec) in results.items():
    q = max(len(res.records), 1)
    lines.append(
      f"{name:<10} {res.accuracy:>8.3f} {res.unparseable:>8.3f} {res.forward_tokens:>11d} "
      f"{res.forward_tokens / q:>8.0f} {sec:>8.1f}"
    )
  return "\n".join(lines)


def write_records(results: dict, path: str, index: bool = True):
  """One JSONL line per question and strategy: {strategy, [index,] **record}."""
  with open(path, "w") as f:
    for name, (res, _) in results.items():
      for i, rec in enumerate(res.records):
        f.write(json.dumps({"strategy": name, **({"index": i} if index else {}), **rec}) + "\n")
