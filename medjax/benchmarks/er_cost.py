"""Wall time of Med-PaLM 2 ensemble refinement (N stage-1 + M stage-2 samples) against greedy answers.

Measured side by side in one process on the same model and questions (the median of `repeats` runs,
after a warm-up run that compiles every shape):
  greedy      one greedy CoT answer per question (one `generate` call for the batch of questions);
  ER naive    N + M separate sampled `generate` calls per question (no shared prefill, no batching);
  ER batched  `strategies.ensemble_refinement`: stage 1 as one call with N samples sharing each
              prompt's prefill, stage 2 likewise with M samples of the refinement prompt.
Prompts are padded to a few bucketed widths, so the timed runs reuse the warm-up's compilations.
A trained model stops at EOS as trained; a randomly initialised one decodes exactly max_new_tokens
per answer, so the methods do the same decode work per row. Measured figures: docs/results.md.
"""

import statistics
import time

import flax.linen as nn
import jax

from medjax.inference import mcq
from medjax.inference import strategies as S
from medjax.train import loop


def _median_seconds(fn, repeats: int) -> float:
  fn()  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure(generator, fmt, examples, num_samples: int, num_refinements: int, repeats: int) -> dict:
  """Seconds per question batch for greedy CoT, naive ER and batched ER, and their ratios."""
  prompts = [fmt.prompt(ex, True) for ex in examples]

  def naive_er():
    stage1 = [
      [generator([p], temperature=0.7, seed=s)[0][0][0] for s in range(num_samples)]
      for p in prompts
    ]
    refine = [fmt.refine_prompt(ex, g) for ex, g in zip(examples, stage1)]
    for p in refine:
      for s in range(num_refinements):
        generator([p], temperature=0.7, seed=1000 + s)

  greedy = _median_seconds(lambda: generator(prompts, temperature=0.0), repeats)
  batched = _median_seconds(
    lambda: S.ensemble_refinement(
      generator, fmt, examples, num_samples=num_samples, num_refinements=num_refinements
    ),
    repeats,
  )
  naive = _median_seconds(naive_er, max(1, repeats // 3))
  return {
    "greedy_s": greedy,
    "er_batched_s": batched,
    "er_naive_s": naive,
    "er_batched_over_greedy": batched / greedy,
    "er_naive_over_greedy": naive / greedy,
    "naive_over_batched": naive / batched,
  }


def run(config, workdir, *, questions, max_new_tokens, num_samples, num_refinements, repeats):
  """`measure` on the first `questions` held-out triage questions, with the newest checkpoint of
  `workdir` or (None) the config's randomly initialised model; -> the report as text."""
  if workdir:
    params, model, task, *_ = loop.trained_params(config, workdir)
  else:
    mesh, rules, task, model = loop.setup(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      params = loop.build_step(config, mesh, rules, task, model)[0].params
  n_params = sum(x.size for x in jax.tree.leaves(params))
  examples = mcq.load_examples("synthetic_triage", "test", data_dir=task.data_dir)[:questions]
  gen = S.LMGenerator(
    model, params, task.tokenizer, max_new_tokens=max_new_tokens, fixed_length=not workdir
  )
  r = measure(gen, S.TriageFormat(), examples, num_samples, num_refinements, repeats)
  n, m = num_samples, num_refinements
  return "\n".join(
    [
      f"device: {jax.devices()[0].device_kind}; {n_params / 1e6:.1f}M params "
      f"({'trained' if workdir else 'random, fixed-length answers'}); {len(examples)} questions; "
      f"max_new_tokens {max_new_tokens}",
      f"{'method':<28}{'seconds':>10}{'x greedy':>10}",
      f"{'greedy CoT':<28}{r['greedy_s']:>10.3f}{1.0:>10.2f}",
      f"{f'ER naive ({n}+{m} calls)':<28}{r['er_naive_s']:>10.3f}{r['er_naive_over_greedy']:>10.2f}",
      f"{f'ER batched (N={n}, M={m})':<28}{r['er_batched_s']:>10.3f}"
      f"{r['er_batched_over_greedy']:>10.2f}",
      f"ER (N={n}, M={m}) costs {r['er_batched_over_greedy']:.2f} greedy answers' wall time "
      f"(vs {n + m} generations); batching + shared prefill make it "
      f"{r['naive_over_batched']:.1f}x faster than {n + m} separate calls.",
    ]
  )
