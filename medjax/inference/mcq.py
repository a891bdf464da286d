"""Multiple-choice evaluation of a decoder LM with prompting strategies (greedy, CoT, SC, ER, Medprompt).

`load_examples` reads a split through the dataset's TFDS builder, `prompt_formats` picks the prompt
format (few-shot exemplars from the train split, kNN exemplars for Medprompt), `run_strategies`
answers every question with each strategy, `table` prints accuracy, unparseable rate and forward
tokens (prefill + decoded) per strategy and `write_records` keeps one JSONL record per answer.
"""

import json
import time

from medjax.data import builders, pipeline
from medjax.data.synthetic import tfds_builder
from medjax.inference import strategies as S

DATASETS = ("synthetic_triage", *builders.MCQ)


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


def prompt_formats(dataset: str, pool: list, strategies, embed_fn=None, shots: int = 3):
  """-> (format, {strategy: its own format}): the triage format for the embedded task, else few-shot
  with the first `shots` of `pool` (train examples) and, for medprompt, kNN exemplars by `embed_fn`."""
  if dataset == "synthetic_triage":
    return S.TriageFormat(), {}
  formats = {}
  if "medprompt" in strategies and pool and shots:
    knn = S.KNNFewShot(pool, embed_fn, k=min(shots, len(pool)))
    formats["medprompt"] = S.FewShotFormat(shots=knn)
  return S.FewShotFormat(shots=pool[:shots]), formats


def stop_strings(dataset: str) -> tuple:
  """Where a few-shot answer ends (the next exemplar's question); the triage task stops at EOS."""
  return () if dataset == "synthetic_triage" else ("\n\nQuestion:", "\nQuestion:")


def run_strategies(generator, fmt, examples, names, **kw) -> dict:
  """name -> (StrategyResult, seconds) for each strategy in `names`.

  kw: num_samples, num_refinements, num_shuffles, temperature, seed, and optionally `formats`
  (strategy -> its own prompt format instead of `fmt`).
  """
  unknown = [n for n in names if n not in S.STRATEGIES]
  if unknown:
    raise ValueError(f"--strategy: expected names from {sorted(S.STRATEGIES)}, got {unknown}")
  args = {
    "sc": dict(num_samples=kw["num_samples"], temperature=kw["temperature"], seed=kw["seed"]),
    "er": dict(
      num_samples=kw["num_samples"],
      num_refinements=kw["num_refinements"],
      temperature=kw["temperature"],
      seed=kw["seed"],
    ),
    "medprompt": dict(num_shuffles=kw["num_shuffles"], seed=kw["seed"]),
  }
  out = {}
  for name in names:
    tick = time.time()
    fmt_n = kw.get("formats", {}).get(name, fmt)
    out[name] = (
      S.STRATEGIES[name](generator, fmt_n, examples, **args.get(name, {})),
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
  split: str = "test",
  num_questions: int = 0,
  shots: int = 3,
  data_dir=None,
  manual_dir=None,
  builder_config=None,
  max_new_tokens: int = 256,
  max_rows: int = 256,
  **strategy_kw,
) -> tuple[list, dict]:
  """-> (examples, `run_strategies` results) on the first `num_questions` (0: all) of `split`.

  strategy_kw: num_samples, num_refinements, num_shuffles, temperature, seed.
  """
  load = lambda s: load_examples(
    dataset, s, data_dir=data_dir, manual_dir=manual_dir, builder_config=builder_config
  )
  examples = load(split)[: num_questions or None]
  pool = load("train") if shots and dataset != "synthetic_triage" else []
  embed = S.lm_embed_fn(model, params, tokenizer) if pool and "medprompt" in strategies else None
  fmt, formats = prompt_formats(dataset, pool, strategies, embed, shots)
  gen = S.LMGenerator(
    model,
    params,
    tokenizer,
    max_new_tokens=max_new_tokens,
    stop=stop_strings(dataset),
    max_rows=max_rows,
  )
  return examples, run_strategies(gen, fmt, examples, strategies, formats=formats, **strategy_kw)


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
