"""Ensemble refinement on the embedded triage task: train the tiny LM, compare prompting strategies.

`er_config` sets a config up for a mix of chain-of-thought examples, direct answers (so greedy direct
answering is a real baseline) and refinement examples (2-4 candidate explanations, each wrong with a
per-question probability below 0.5 -> the right one), stopping early so the model is weak enough to
leave room for sampling strategies; `compare` answers held-out test questions with greedy (direct),
CoT, self-consistency and ensemble refinement. Measured figures: docs/results.md.
"""

import os

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
):
  """`config` set up for the demo: mixed CoT + refinement data, a seq_len that fits both, `steps`."""
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
  config.data.seq_len = 176 + 64 * refine_candidates  # measured max: 163 + 62 per candidate
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
  )
  mcq.write_records(results, os.path.join(workdir, "er_demo.jsonl"), index=False)
  return results
