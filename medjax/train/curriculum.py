"""A staged curriculum through the one training loop.

Stage k trains in WORKDIR/<stage>, starting from stage k-1's best params (`train.init_from` =
WORKDIR/<stage k-1>/best, the lowest validation loss) and stopping early on validation loss. After
each stage, the best params answer `curriculum.test_size` (0: skip) held-out questions:
WORKDIR/<stage>/predictions.jsonl (one record per example) and a line of WORKDIR/curriculum.jsonl
(accuracy and macro-F1, per template where the task has several). Restarting resumes.
"""

import copy
import json
import os

import flax.linen as nn
import jax
from absl import logging

from medjax import paths, tasks
from medjax.train import loop
from medjax.train.best import load_params


def stage_configs(config) -> list:
  """[(stage name, the base config with that stage's overrides)]; checks every stage builds its task."""
  cur = config.curriculum
  if not cur.stages:
    raise ValueError("curriculum.stages: expected at least one stage, got none")
  out = []
  for name in cur.stages:
    if name not in cur:
      raise ValueError(f"curriculum.stages: stage {name!r} has no curriculum.{name} section")
    c = copy.deepcopy(config)
    try:
      c.update(cur[name].to_dict())
      tasks.get_task(c)  # a missing data source or a bad field fails here, before any stage trains
    except (KeyError, ValueError) as e:
      raise ValueError(f"curriculum.{name}: {e}") from e
    out.append((name, c))
  return out


def evaluate_best(config, stage_dir: str, questions: int) -> tuple[list[dict], dict]:
  """(per-example records, metrics) of the stage's best params on `questions` held-out examples."""
  config = copy.deepcopy(config)
  config.data.test_size = questions
  mesh, rules, task, model = loop.setup(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, *_ = loop.build_step(config, mesh, rules, task, model)
    params, _ = load_params(os.path.join(stage_dir, "best"), state.params)
    records = task.predict(model, params)
  return records, task.summarize(records)


def run(config, workdir: str) -> list[dict]:
  """Trains the stages in order; returns one summary per stage."""
  summaries, prev = [], None
  for name, c in stage_configs(config):
    stage_dir = os.path.join(workdir, name)
    if prev is not None:
      c.train.init_from = os.path.join(prev, "best")
    result = loop.train(c, stage_dir)
    metrics = {}
    if config.curriculum.test_size:
      records, metrics = evaluate_best(c, stage_dir, config.curriculum.test_size)
      if jax.process_index() == 0:
        out = paths.resolve(stage_dir) / "predictions.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
      "stage": name,
      "data": c.data.name,
      "init_from": c.train.init_from,
      "steps": result["step"],
      **{k: v for k, v in result.items() if k.startswith("best/")},
      **metrics,
    }
    if jax.process_index() == 0:  # rewritten whole: a bucket object cannot be appended to
      log = paths.resolve(workdir) / "curriculum.jsonl"
      log.write_text((log.read_text() if log.exists() else "") + json.dumps(summary) + "\n")
    logging.info("stage %s: %s", name, summary)
    summaries.append(summary)
    prev = stage_dir
  return summaries
