"""The config schema every experiment shares; configs/<family>.py fill in model and data."""

import importlib.util
import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Defaults for the trainer, optimizer and parallelism. Locked by `finalize`."""
  c = ml_collections.ConfigDict()
  c.task = ""
  c.seed = 0
  c.model = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict()
  c.optim = ml_collections.ConfigDict(
    dict(
      name="adamw",
      lr=1e-3,
      warmup_steps=0.05,
      schedule="cosine",
      end_lr_frac=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,
      grad_clip=1.0,
      freeze=(),
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      steps=100,
      batch_size=32,
      grad_accum=1,
      ema_decay=0.0,
      log_every=10,
      eval_every=0,
      eval_batch_size=32,
      eval_batches=4,
      checkpoint_every=0,
      keep_checkpoints=3,
      async_checkpoints=True,
      keep_best=False,
      early_stop_patience=0,
      init_from="",
    )
  )
  c.parallel = ml_collections.ConfigDict(
    dict(
      mesh=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1)),
      rules="fsdp_tp",
      num_devices=0,
      distributed=False,
      coordinator="",
      num_processes=1,
      process_id=0,
    )
  )
  return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config: overriding a key that does not exist is an error naming the nearest keys."""
  c.lock()
  return c


def parse_variant(arg: str | None, variants) -> str:
  variant = arg or "tiny"
  if variant not in variants:
    raise ValueError(f"config variant: expected one of {sorted(variants)}, got {variant!r}")
  return variant


def config_from_file(spec: str, overrides=()) -> ml_collections.ConfigDict:
  """The config of 'path/to/file.py[:variant]' (a path relative to the repository root works too), with
  `overrides` 'dotted.key=value' applied (values cast to the type of the config's value)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  module_spec = importlib.util.spec_from_file_location("medjax_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:
    key, _, value = item.partition("=")
    old = config
    for part in key.split("."):
      old = old[part]
    if isinstance(old, bool):
      value = value.lower() in ("1", "true")
    elif old is not None:
      value = type(old)(value)
    config.update_from_flattened_dict({key: value})
  return config
