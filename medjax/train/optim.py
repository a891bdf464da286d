"""Optimizer from config: AdamW, warmup + cosine/linear schedules, clipping, freezing masks, and
per-group learning rates / weight decay (`optim.groups`)."""

import re

import flax
import jax
import optax


def make_schedule(cfg, total_steps: int, lr: float | None = None):
  """Learning-rate schedule: linear warmup then cosine / linear decay / constant, peaking at `lr`
  (default `cfg.lr`)."""
  lr = cfg.lr if lr is None else lr
  warmup = int(cfg.warmup_steps) if cfg.warmup_steps >= 1 else int(cfg.warmup_steps * total_steps)
  decay_steps = max(total_steps - warmup, 1)
  end = lr * cfg.end_lr_frac
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.end_lr_frac)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(lr, end, decay_steps)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ValueError(
      f"optim.schedule: expected 'cosine', 'linear' or 'constant', got {cfg.schedule!r}"
    )
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _paths(params):
  return flax.traverse_util.flatten_dict(params, sep="/")


def param_labels(params, freeze_patterns) -> dict:
  """'frozen' for parameters whose '/'-joined path matches any regex in `freeze_patterns`."""
  pats = [re.compile(p) for p in freeze_patterns]
  flat = {k: ("frozen" if any(p.search(k) for p in pats) else "train") for k in _paths(params)}
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def trainable_mask(params, freeze_patterns) -> dict | None:
  """True for the parameters `optim.freeze` leaves trainable (None: no freeze, all train)."""
  if not list(freeze_patterns):
    return None
  return jax.tree.map(lambda label: label == "train", param_labels(params, freeze_patterns))


def parse_groups(groups) -> list[tuple[re.Pattern, float | None, float | None]]:
  """`optim.groups`: (regex, lr, weight_decay) triples, lr / weight_decay None for the base value."""
  out = []
  for i, g in enumerate(groups):
    if not (isinstance(g, (tuple, list)) and len(g) == 3 and isinstance(g[0], str)):
      raise ValueError(
        f"optim.groups[{i}]: expected (regex, lr or None, weight_decay or None), got {g!r}"
      )
    pattern, lr, wd = g
    for name, v in (("lr", lr), ("weight_decay", wd)):
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
        raise ValueError(f"optim.groups[{i}]: {name}: expected a number >= 0 or None, got {v!r}")
    try:
      out.append((re.compile(pattern), lr, wd))
    except re.error as e:
      raise ValueError(f"optim.groups[{i}]: expected a regex, got {pattern!r} ({e})") from e
  return out


def group_labels(params, groups) -> dict:
  """Each parameter's group: "group_<i>" for the first `optim.groups` regex its '/'-joined path
  matches, else "base"."""
  parsed = parse_groups(groups)
  label = lambda k: next(
    (f"group_{i}" for i, (p, _, _) in enumerate(parsed) if p.search(k)), "base"
  )
  return flax.traverse_util.unflatten_dict({k: label(k) for k in _paths(params)}, sep="/")


def _inner(cfg, params, total_steps: int, lr: float, weight_decay: float, decay_all: bool):
  """(optax update rule, its schedule) at peak `lr`; AdamW decays matrices only unless `decay_all`."""
  schedule = make_schedule(cfg, total_steps, lr)
  if cfg.name == "adamw":
    mask = None if decay_all else (lambda p: jax.tree.map(lambda v: len(v.shape) > 1, p))
    return optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=weight_decay, mask=mask
    ), schedule
  if cfg.name == "sgd":
    return optax.sgd(schedule, momentum=cfg.b1 or None), schedule
  raise ValueError(f"optim.name: expected 'adamw' or 'sgd', got {cfg.name!r}")


def make_optimizer(cfg, params, total_steps: int):
  """Returns (optax transformation, base lr schedule). `params` may be abstract (shapes only).

  `optim.groups` (regex, lr, weight_decay) give the parameters whose path a regex matches (first
  match wins) their own peak lr and weight decay, on the same schedule shape; weight decay then
  applies to every parameter of the group, biases and norms too (PyTorch's parameter groups),
  while the base group decays matrices only. Clipping is over all parameters together.
  """
  groups = parse_groups(cfg.get("groups", ()))
  inner, schedule = _inner(cfg, params, total_steps, cfg.lr, cfg.weight_decay, False)
  if groups:
    rules = {"base": inner}
    for i, (_, lr, wd) in enumerate(groups):
      rules[f"group_{i}"] = _inner(
        cfg,
        params,
        total_steps,
        cfg.lr if lr is None else lr,
        cfg.weight_decay if wd is None else wd,
        True,
      )[0]
    inner = optax.multi_transform(rules, group_labels(params, cfg.groups))
  chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
  tx = optax.chain(*chain, inner)
  freeze = list(cfg.freeze)
  if freeze:
    labels = param_labels(params, freeze)
    if not any(v == "train" for v in _paths(labels).values()):
      raise ValueError(f"optim.freeze: patterns {freeze} freeze every parameter")
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
