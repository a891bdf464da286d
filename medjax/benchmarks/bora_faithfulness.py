"""Caption faithfulness of a Bora model on the embedded cell task, with and without guidance.

`train_model` trains (or resumes) a Bora config on `synthetic_cells` with evaluation deferred to
here; `faithfulness_rows` generates `num` videos for held-out captions at each guidance scale and
scores direction and count accuracy with the faithfulness classifier (trained on real videos) and
FVD against real videos of the same captions. Measured figures: docs/results.md.
"""

import time

from medjax.train.loop import train, trained_params


def check_config(config):
  if config.task != "bora" or config.data.name != "synthetic_cells":
    raise ValueError(
      f"--config: expected a bora config on data 'synthetic_cells', got task {config.task!r}"
    )


def train_model(config, workdir: str) -> str:
  """Trains (or resumes) `config` in `workdir` (no in-training evaluation); -> a one-line summary."""
  check_config(config)
  tick = time.time()
  config = config.unlock()
  config.train.eval_every = 0  # evaluated by `faithfulness_rows`, at every scale
  last = train(config, workdir)
  return (
    f"trained to step {int(last['step'])} in {time.time() - tick:.0f}s, "
    f"last loss {last.get('train/loss', 0):.4f}"
  )


def faithfulness_rows(config, workdir: str, scales, num: int, seed: int = 0):
  """Yields a header (step, classifier accuracy on real videos, chance), then one markdown table row
  per guidance scale: | scale | direction accuracy | count accuracy | FVD |."""
  check_config(config)
  params, model, task, _, _, step = trained_params(config, workdir)
  clf = task.classifier.heldout_accuracy
  yield (
    f"step {step}; classifier on real videos: direction {clf['direction']:.3f}, count "
    f"{clf['count']:.3f}; chance: direction {1 / 4:.3f}, count {1 / config.data.max_count:.3f}"
  )
  yield "| cfg scale | direction acc | count acc | FVD |\n|---|---|---|---|"
  for s in scales:
    r = task.faithfulness(model, params, float(s), num, seed)
    yield (
      f"| {float(s):g} | {r['direction_accuracy']:.3f} | {r['count_accuracy']:.3f} "
      f"| {r['fvd']:.2f} |"
    )
