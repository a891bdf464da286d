"""Ensemble refinement on the embedded triage task: train the tiny LM, compare prompting strategies.

`er_config` sets a config up for a mix of chain-of-thought examples, direct answers (so greedy direct
answering is a real baseline) and refinement examples (2-4 candidate explanations, each wrong with a
per-question probability below 0.5 -> the right one), stopping early so the model is weak enough to
leave room for sampling strategies; `compare` answers held-out test questions with greedy (direct),
CoT, self-consistency and ensemble refinement.

Two demonstrations: with refinement examples in training (`refine_frac` > 0) ER's machinery is shown
to work on a model taught the refinement format; with `refine_frac=0` the model never saw a
refinement prompt, the honest test of whether ER helps a model as Med-PaLM 2 applies it.
`run_seeds` repeats a run over seeds and `seed_table` reports each strategy per seed and the mean.
Measured figures: docs/results.md.
"""

import os

import numpy as np

from medjax.inference import mcq
from medjax.inference import strategies as S
from medjax.train.loop import train, trained_params


def er_config(
  config,
  *,
  steps: int,
  batch_size: int,
  refine_frac: float,
  refine_candidates: int,
  checkpoint_every: int = 0,
  direct_frac: float = 0.0,
  seed: int = 0,
):
  """`config` set up for the demo: mixed CoT + refinement data, a seq_len that fits both, `steps`;
  `seed` seeds initialisation and data order."""
  config.seed = seed
  config.train.steps = steps
  config.train.batch_size = batch_size
  config.train.eval_every = 0
  config.train.checkpoint_every = checkpoint_every
  config.train.keep_checkpoints = max(
    config.train.keep_checkpoints, steps // checkpoint_every if checkpoint_every else 1
  )
  config.data.cot = True
  config.data.refine_frac = refine_frac
  config.data.direct_frac = direct_frac
  config.data.refine_candidates = refine_candidates
  # measured max: 163 + 62 per candidate; CoT-only data needs no room for candidates
  config.data.seq_len = 176 + (64 * refine_candidates if refine_frac else 0)
  return config


def compare(
  config,
  workdir: str,
  *,
  questions: int,
  num_samples: int,
  num_refinements: int,
  temperature: float,
  seed: int = 0,
  strategies=("greedy", "cot", "sc", "er"),
) -> dict:
  """name -> (StrategyResult, seconds) on the first `questions` held-out test questions."""
  params, model, task, _, _, _ = trained_params(config, workdir)
  examples = mcq.load_examples("synthetic_triage", "test", data_dir=task.data_dir)[:questions]
  gen = S.LMGenerator(model, params, task.tokenizer, max_new_tokens=config.data.max_new_tokens)
  return mcq.run_strategies(
    gen,
    S.TriageFormat(),
    examples,
    strategies,
    num_samples=num_samples,
    num_refinements=num_refinements,
    num_shuffles=5,
    temperature=temperature,
    seed=seed,
  )


def run(config, workdir: str, *, questions: int, num_refinements: int, temperature: float) -> dict:
  """Trains (or resumes) an `er_config` config in `workdir`, compares the strategies (as many SC
  samples and ER stage-1 generations as refinement candidates), writes WORKDIR/er_demo.jsonl."""
  train(config, workdir)
  results = compare(
    config,
    workdir,
    questions=questions,
    num_samples=config.data.refine_candidates,
    num_refinements=num_refinements,
    temperature=temperature,
    seed=config.seed,
  )
  mcq.write_records(results, os.path.join(workdir, "er_demo.jsonl"), index=False)
  return results


def run_seeds(make_config, workdir: str, seeds, **kw) -> dict:
  """seed -> `run` results, each seed in WORKDIR/seed_<s> with `make_config(seed)`; kw as `run`."""
  return {s: run(make_config(s), os.path.join(workdir, f"seed_{s}"), **kw) for s in seeds}


def seed_table(per_seed: dict) -> str:
  """Accuracy of each strategy per seed, and its mean and standard deviation over seeds."""
  seeds = list(per_seed)
  names = list(per_seed[seeds[0]])
  head = f"{'strategy':<10}" + "".join(f" {'seed ' + str(s):>8}" for s in seeds)
  lines = [head + f" {'mean':>6} {'std':>6} {'unparse':>8}"]
  for n in names:
    acc = [per_seed[s][n][0].accuracy for s in seeds]
    unp = np.mean([per_seed[s][n][0].unparseable for s in seeds])
    cells = "".join(f" {a:>8.3f}" for a in acc)
    lines.append(f"{n:<10}{cells} {np.mean(acc):>6.3f} {np.std(acc):>6.3f} {unp:>8.3f}")
  return "\n".join(lines)
