"""Optimizer from config: AdamW, warmup + cosine/linear schedules, clipping, freezing masks."""

import re

import flax
import optax


def make_schedule(cfg, total_steps: int):
  """Learning-rate schedule: linear warmup then cosine / linear decay / constant."""
  warmup = int(cfg.warmup_steps) if cfg.warmup_steps >= 1 else int(cfg.warmup_steps * total_steps)
  decay_steps = max(total_steps - warmup, 1)
  end = cfg.lr * cfg.end_lr_frac
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_frac)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.lr, end, decay_steps)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(
      f"optim.schedule: expected 'cosine', 'linear' or 'constant', got {cfg.schedule!r}"
    )
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def _paths(params):
  return flax.traverse_util.flatten_dict(params, sep="/")


def param_labels(params, freeze_patterns) -> dict:
  """'frozen' for parameters whose '/'-joined path matches any regex in `freeze_patterns`."""
  pats = [re.compile(p) for p in freeze_patterns]
  flat = {k: ("frozen" if any(p.search(k) for p in pats) else "train") for k in _paths(params)}
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def make_optimizer(cfg, params, total_steps: int):
  """Returns (optax transformation, lr schedule). `params` may be abstract (shapes only)."""
  schedule = make_schedule(cfg, total_steps)
  if cfg.name == "adamw":
    decay_mask = flax.traverse_util.unflatten_dict(
      {k: len(v.shape) > 1 for k, v in _paths(params).items()}, sep="/"
    )
    inner = optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
    )
  elif cfg.name == "sgd":
    inner = optax.sgd(schedule, momentum=cfg.b1 or None)
  else:
    raise ValueError(f"optim.name: expected 'adamw' or 'sgd', got {cfg.name!r}")
  chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
  tx = optax.chain(*chain, inner)
  freeze = list(cfg.freeze)
  if freeze:
    labels = param_labels(params, freeze)
    if not any(v == "train" for v in _paths(labels).values()):
      raise ValueError(f"optim.freeze: patterns {freeze} freeze every parameter")
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
