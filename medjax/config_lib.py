"""The config schema every experiment shares; configs/<family>.py fill in model and data.

Shared knobs keep one name in every family (README, "Config vocabulary"): `model.remat`,
`data.seq_len`, `data.train_size`, `data.eval_size`, `data.test_size`. `validate` checks a config
before anything is built; `dataclass_from` turns a config section into a model dataclass.
"""

import dataclasses
import difflib
import importlib.util
import os
import typing
from collections.abc import Mapping

import ml_collections

from medjax import paths
from medjax.parallel.mesh import MESH_AXES, resolve_mesh_shape


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
      # (regex, lr, weight_decay) per parameter group, first match wins; None keeps the base value
      groups=(),
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      steps=100,
      epochs=0,  # > 0: train this many epochs (overrides steps), evaluating after each
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
      eval_ablation=False,
      # XLA compiler options of the loop's train and eval steps, space-separated `name=value`
      # pairs (XLA_FLAGS names without the dashes); they override XLA_FLAGS for these programs
      compiler_options="",
    )
  )
  # Public weights for named param subtrees: `init.<slot>=<format>:<path>` (medjax.checkpoints.init);
  # each family's config declares its slots. Patterns allow params the source lacks / tensors unused.
  # `inflate`: how a 2D checkpoint fills a 3D tower's tubelet kernel, "central" frame or "mean".
  c.init = ml_collections.ConfigDict(dict(allow_missing=(), allow_unused=(), inflate="central"))
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
  """Validates and locks the config: overriding a key that does not exist is then an error naming
  the nearest keys."""
  validate(c)
  c.lock()
  return c


# ---- config section -> model dataclass ------------------------------------------------------------
def _tuples(v):
  return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def dataclass_from(cls, section, name: str = "model", ignore=("preset",), **extra):
  """`cls` built from a config section (ConfigDict or dict), `extra` fields replacing the section's.

  Nested dataclass fields are built from their sub-sections, lists become tuples and keys in
  `ignore` (config-only notes such as the preset name) are dropped. An unknown or missing field is
  a ValueError naming `name.field`.
  """
  d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  d = {k: v for k, v in d.items() if k not in ignore}
  d.update(extra)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  for key in sorted(set(d) - set(fields)):
    near = [RENAMED[key]] if RENAMED.get(key) in fields else []
    near += [k for k in difflib.get_close_matches(key, list(fields), n=3) if k not in near]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise ValueError(f"{name}.{key}: not a field of {cls.__name__}{hint}")
  for f in fields.values():
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    if required and f.name not in d:
      raise ValueError(f"{name}.{f.name}: missing; {cls.__name__} requires it")
  try:
    hints = typing.get_type_hints(cls)
  except (NameError, TypeError):  # unresolvable annotations: nested sections stay as given
    hints = {}
  kw = {}
  for key, value in d.items():
    t = hints.get(key)
    if isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(value, Mapping):
      kw[key] = dataclass_from(t, value, f"{name}.{key}", ignore)
    else:
      kw[key] = _tuples(value)
  return cls(**kw)


# ---- validation ----------------------------------------------------------------------------------
# model fields that are sizes (every int in them > 0), besides names ending in these suffixes
_MODEL_SIZES = {
  "vocab_size",
  "max_seq_len",
  "max_len",
  "max_text_len",
  "channels",
  "in_channels",
  "caption_channels",
  "hidden",
  "width",
  "depth",
  "heads",
  "image_size",
  "patch_size",
  "patch",
  "frames",
  "tubelet",
  "token_pool",
  "token_pool_time",
  "max_patches",
  "num_latents",
  "ff_mult",
  "xattn_every",
  "encoder_mlp",
  "num_queries",
  "num_regions",
}
_MODEL_SIZE_SUFFIXES = ("_dim", "_heads", "_layers", "_depth")
_TRAIN_SIZES = ("steps", "batch_size", "grad_accum", "eval_batch_size", "log_every")
_TRAIN_COUNTS = (
  "eval_every",
  "checkpoint_every",
  "keep_checkpoints",
  "early_stop_patience",
  "epochs",
)
_DATA_SIZES = (
  "seq_len",
  "train_size",
  "eval_size",
  "max_new_tokens",
  "max_text_len",
  "num_series",
  "series_len",
  "frames",
  "size",
)
_DATA_COUNTS = ("test_size",)
# (data field, model field): a sequence length and the model's limit for it
_LIMITS = (
  ("data.seq_len", "model.max_seq_len"),
  ("data.seq_len", "model.lm.max_seq_len"),
  ("data.seq_len", "model.text.max_len"),
  ("data.max_text_len", "model.max_text_len"),
)


def _get(c, dotted: str):
  for part in dotted.split("."):
    if not isinstance(c, Mapping | ml_collections.ConfigDict) or part not in c:
      return None
    c = c[part]
  return c


def _ints(v):
  if isinstance(v, bool):
    return []
  if isinstance(v, int):
    return [v]
  if isinstance(v, (list, tuple)) and all(
    isinstance(x, int) and not isinstance(x, bool) for x in v
  ):
    return list(v)
  return []


def _check(name: str, value, minimum: int):
  bad = [x for x in _ints(value) if x < minimum]
  if bad:
    expected = "> 0" if minimum == 1 else f">= {minimum}"
    raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _check_model_sizes(section, prefix: str):
  for key, value in section.items():
    name = f"{prefix}.{key}"
    if isinstance(value, Mapping | ml_collections.ConfigDict):
      _check_model_sizes(value, name)
    elif key in _MODEL_SIZES or key.endswith(_MODEL_SIZE_SUFFIXES):
      _check(name, value, 1)


def validate(config, workdir: str | None = None, num_devices: int | None = None):
  """Raises a ValueError naming the field, the expected and the received value, for: sizes that
  are not positive (train, data, model), a sequence length above the model's limit, and, given
  `num_devices`, a mesh that does not fit them or a batch the data-parallel mesh axes (times
  train.grad_accum) do not divide; given `workdir`, one that cannot be created or written."""
  for section, names, minimum in (
    ("train", _TRAIN_SIZES, 1),
    ("train", _TRAIN_COUNTS, 0),
    ("data", _DATA_SIZES, 1),
    ("data", _DATA_COUNTS, 0),
  ):
    for key in names:
      value = _get(config, f"{section}.{key}")
      if value is not None:
        _check(f"{section}.{key}", value, minimum)
  if "model" in config:
    _check_model_sizes(config.model, "model")
  for data_key, model_key in _LIMITS:
    length, limit = _get(config, data_key), _get(config, model_key)
    if _ints(length) and _ints(limit) and length > limit:
      raise ValueError(f"{data_key}: expected <= {model_key} ({limit}), got {length}")
  if "init" in config:
    init_sources(config.init)
  if "train" in config:
    compiler_options(config.train)
  if num_devices is not None:
    _check_mesh(config, num_devices)
  if workdir is not None:
    _check_workdir(workdir)


def compiler_options(train_section) -> dict | None:
  """`train.compiler_options` as the dict `jax.jit(...).compile()` takes (None when empty)."""
  spec = train_section.get("compiler_options", "") or ""
  out = {}
  for pair in spec.split():
    name, sep, value = pair.partition("=")
    if not sep or not name.startswith("xla_") or not value:
      raise ValueError(
        "train.compiler_options: expected space-separated 'xla_<option>=<value>' pairs, "
        f"got {pair!r}"
      )
    out[name] = _option_value(value)
  return out or None


def _option_value(text: str):
  """'true' / 'false' -> bool, an integer or a float -> that number, else the text."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


INIT_FORMATS = ("hf", "diffusers", "opensora", "medjax")
# The init section's keys that are not slots.
INIT_OPTIONS = ("allow_missing", "allow_unused", "inflate")


def init_sources(init_section) -> dict[str, tuple[str, str]]:
  """{slot: (format, path)} of the slots set in an `init` section; a malformed value raises."""
  out = {}
  for slot, spec in init_section.items():
    if slot in INIT_OPTIONS or not spec:
      continue
    fmt, sep, path = str(spec).partition(":")
    if not sep or fmt not in INIT_FORMATS or not path:
      raise ValueError(
        f"init.{slot}: expected '<format>:<path>' with a format in {INIT_FORMATS}, got {spec!r}"
      )
    out[slot] = (fmt, path)
  return out


def _check_mesh(config, num_devices: int):
  n = config.parallel.num_devices or num_devices
  sizes = dict(zip(MESH_AXES, resolve_mesh_shape(dict(config.parallel.mesh), n)))
  t = config.train
  dp = sizes["data"] * sizes["fsdp"]
  need = dp * t.grad_accum
  if t.batch_size % need:
    raise ValueError(
      f"train.batch_size: {t.batch_size} is not divisible by the data-parallel size (parallel.mesh "
      f"data x fsdp = {dp}) x train.grad_accum ({t.grad_accum}); expected a multiple of {need}"
    )
  if t.eval_batch_size % dp:
    raise ValueError(
      f"train.eval_batch_size: {t.eval_batch_size} is not divisible by the data-parallel size "
      f"(parallel.mesh data x fsdp = {dp}); expected a multiple of {dp}"
    )


def _check_workdir(workdir: str):
  paths.check_writable(workdir, "workdir")  # local or gs://: a probe write and delete


def parse_variant(arg: str | None, variants) -> str:
  variant = arg or "tiny"
  if variant not in variants:
    raise ValueError(f"config variant: expected one of {sorted(variants)}, got {variant!r}")
  return variant


# old names of shared knobs (README, "Config vocabulary") -> the one name every family uses now
RENAMED = {
  "remat_policy": "remat",
  "train_examples": "train_size",
  "num_train": "train_size",
  "eval_examples": "eval_size",
  "num_validation": "eval_size",
  "eval_questions": "test_size",
  "eval_generations": "test_size",
  "eval_videos": "test_size",
  "num_test": "test_size",
}


def _unknown_key(key: str, part: str, section) -> str:
  """The error for an override of a field that does not exist, naming the nearest fields."""
  near = [RENAMED[part]] if RENAMED.get(part) in section else []
  near += [k for k in difflib.get_close_matches(part, list(section), n=3) if k not in near]
  hint = f"; did you mean {' or '.join(repr(k) for k in near)}?" if near else ""
  return f"{key}: {part!r} is not a field of this config{hint}"


def load_module(path: str, name: str | None = None):
  """The Python module in file `path` (a config or a dataset builder; a path relative to the
  repository root works from any directory)."""
  if not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  spec = importlib.util.spec_from_file_location(name or os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_from_file(spec: str, overrides=()) -> ml_collections.ConfigDict:
  """The config of 'path/to/file.py[:variant]' (a path relative to the repository root works too), with
  `overrides` 'dotted.key=value' applied (values cast to the type of the config's value)."""
  path, _, arg = spec.partition(":")
  config = load_module(path, "medjax_config_file").get_config(arg or None)
  for item in overrides:
    key, _, value = item.partition("=")
    old = config
    for part in key.split("."):
      if not isinstance(old, ml_collections.ConfigDict) or part not in old:
        raise KeyError(
          _unknown_key(key, part, old if isinstance(old, ml_collections.ConfigDict) else {})
        )
      old = old[part]
    if isinstance(old, bool):
      value = value.lower() in ("1", "true")
    elif old is not None:
      value = type(old)(value)
    config.update_from_flattened_dict({key: value})
  validate(config)
  return config
