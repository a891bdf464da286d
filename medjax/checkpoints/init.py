"""Initialising parameter subtrees of a fresh train state from public weights.

`--config.init.<slot>=<format>:<path>` names a source for one subtree that the task exposes
(`Task.init_slots`: slot -> (path in the param tree, the subtree's module config)). Formats:

  hf:DIR   a Hugging Face directory (config.json + safetensors): Llama-3.x / Gemma-3 decoders,
           ViT image encoders (ViTModel / ViTForImageClassification: the pooler and classifier are
           unused by design; a one-channel tower reads the RGB kernel summed over channels),
           SigLIP vision towers (SiglipVisionModel or SiglipModel). A SigLIP pooling head that the
           model's tower does not use (pool="none") is reported as unused by design; a 3D tower
           (volumes, video) is the 2D one inflated (`init.inflate`: "central" frame or "mean");
           BERT-family text encoders (BertModel / BertForMaskedLM: BiomedBERT, CXR-BERT), whose
           pooler and masked-LM heads are unused by design.
  diffusers:DIR  a diffusers PixArtTransformer2DModel (PixArt-alpha) into STDiT: spatial blocks,
           adaLN-single, caption projection, patch embedding, final layer; the temporal branch and
           the null caption keep their fresh init (`init.allow_missing` must allow them).
  opensora:FILE  an Open-Sora v1.0 / Bora STDiT checkpoint with its original key names (.pth
           through torch, or .safetensors); its position buffers are checked and unused by design.
  medjax:DIR  the best params of another medjax run (DIR/best/params, or DIR/params of a
           best-params directory, local or gs://): the slot's subtree of that run's params when
           it has one (e.g. an OpenTSLM run's lm/), else its whole tree (e.g. an LM run's).

The source is read on the host (safetensors, lazily per tensor), checked against the target
subtree leaf by leaf (shape; dtype cast to the target's), and each leaf is placed with the target's
sharding, so every device receives only its shard. A target leaf the source lacks (e.g. LoRA
adapters) is an error unless it matches a pattern in `init.allow_missing`; a source tensor without a
place is an error unless it matches `init.allow_unused` (both fnmatch patterns over '/'-joined
paths). Every slot is read and checked before anything is placed, so a bad source leaves the state
untouched. DIR may be a cloud path (gs://...): its files are copied to a local temporary directory,
removed once the params are placed. `load` returns the new params and a report table (loaded /
newly initialised / unused).
"""

import contextlib
import dataclasses
import fnmatch
import os

import flax.traverse_util
import jax
import numpy as np
from absl import logging

from medjax import config_lib, paths
from medjax.checkpoints import hf_bert, hf_llm, hf_siglip, hf_vit, pixart
from medjax.checkpoints.host import materialize
from medjax.models.bert import BertConfig
from medjax.models.llm import LMConfig
from medjax.models.stdit import STDiTConfig
from medjax.models.vit import ViTConfig, inflate_2d_to_3d

# LMConfig fields that define the weights' meaning: a checkpoint that differs in one is another model.
_LM_ARCH = (
  "vocab_size",
  "embed_dim",
  "num_layers",
  "num_heads",
  "num_kv_heads",
  "head_dim",
  "mlp_dim",
  "activation",
  "norm_eps",
  "norm_zero_centered",
  "post_norms",
  "qk_norm",
  "rope_theta",
  "rope_scaling",
  "rope_local_theta",
  "sliding_window",
  "global_every",
  "query_scale",
  "attn_softcap",
  "final_softcap",
  "tie_embeddings",
  "scale_embeddings",
)
_VIT_ARCH = ("image_size", "patch_size", "channels", "width", "depth", "heads", "mlp_dim", "act")
# max_len is not among them: a shorter table keeps the checkpoint's first positions.
_BERT_ARCH = (
  "vocab_size",
  "width",
  "depth",
  "heads",
  "mlp_dim",
  "type_vocab_size",
  "act",
  "norm_eps",
)


def _hf_model_type(path: str) -> str:
  config = os.path.join(path, "config.json")
  if not os.path.isfile(config):
    raise ValueError(f"hf:{path}: expected a Hugging Face directory with config.json, found none")
  return hf_llm._read_json(config).get("model_type", "")


def _same_architecture(slot, path, theirs, ours, fields):
  for field in fields:
    a, b = getattr(theirs, field), getattr(ours, field)
    if a != b and not (isinstance(a, float) and isinstance(b, float) and np.isclose(a, b)):
      raise ValueError(
        f"init.{slot}: the checkpoint's {field} is {a!r}, the config's is {b!r} ({path})"
      )


def _check_type(slot, path, holds, allowed):
  model_type = _hf_model_type(path)
  if model_type not in allowed:
    raise ValueError(
      f"init.{slot}: the slot holds a {holds}; {path} is a {model_type!r} checkpoint"
    )


def _read_hf_lm(slot: str, path: str, cfg: LMConfig):
  _check_type(slot, path, "decoder LM (Llama-3.x / Gemma-3)", ("llama", "gemma3", "gemma3_text"))
  _same_architecture(slot, path, hf_llm.load_hf_config(path), cfg, _LM_ARCH)
  # LoRA adapters are not in the checkpoint: read the base weights, report the adapters as new.
  params = hf_llm.load_hf_params(
    path, dataclasses.replace(cfg, lora_rank=0), dtype=cfg.param_dtype, lazy=True
  )
  return flax.traverse_util.flatten_dict(params, sep="/"), ()


def _warn_input_range(slot: str, path: str, theirs: ViTConfig, cfg: ViTConfig):
  if not np.allclose(theirs.input_range, cfg.input_range):
    logging.warning(
      "init.%s: %s expects pixels in %s; the tower maps its inputs to %s (input_range)",
      slot,
      path,
      theirs.input_range,
      cfg.input_range,
    )


def _read_hf_siglip(slot: str, path: str, cfg: ViTConfig, inflate: str):
  _check_type(slot, path, "SigLIP vision tower", ("siglip", "siglip_vision_model"))
  theirs = hf_siglip.load_siglip_vision_config(path)
  _same_architecture(slot, path, theirs, cfg, _VIT_ARCH)
  _warn_input_range(slot, path, theirs, cfg)
  # The file's head, if any, is read too; a 3D tower reads the 2D one and inflates it.
  read_as = dataclasses.replace(cfg, pool=theirs.pool, patch_embed="2d")
  params = hf_siglip.load_siglip_vision_params(path, read_as, dtype=cfg.param_dtype)
  if cfg.is_3d:
    if inflate not in ("central", "mean"):
      raise ValueError(f"init.inflate: expected 'central' or 'mean', got {inflate!r}")
    params = jax.tree.map(
      np.asarray, inflate_2d_to_3d(params, cfg.tubelet, frames=cfg.frames, method=inflate)
    )
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  by_design = ()
  if theirs.pool != cfg.pool:  # e.g. a tower used without pooling: the head is unused by design
    by_design = tuple(k for k in flat if k.startswith("head/"))
  return flat, by_design


def _read_hf_vit(slot: str, path: str, cfg: ViTConfig):
  theirs = hf_vit.load_vit_config(path)
  grey = cfg.channels == 1 and theirs.channels == 3  # the RGB kernel summed over its channels
  fields = tuple(f for f in _VIT_ARCH if not (grey and f == "channels"))
  _same_architecture(slot, path, theirs, cfg, fields)
  _warn_input_range(slot, path, theirs, cfg)
  if cfg.patch_embed != "2d" and cfg.patch_embed != "frames":
    raise ValueError(
      f"init.{slot}: a ViT checkpoint fills a 2D or frames tower, not {cfg.patch_embed!r}"
    )
  params, unused = hf_vit.load_vit_params(path, cfg, dtype=cfg.param_dtype)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  return {**flat, **dict.fromkeys(unused)}, unused


def _read_medjax(slot: str, path: str) -> dict:
  """The best params of a medjax run (`<workdir>/best/params`, or `<dir>/params` of a best-params
  directory) as host arrays, keyed by their '/'-joined paths in that run's param tree."""
  import orbax.checkpoint as ocp

  root = paths.resolve(path)
  found = [d / "params" for d in (root / "best", root) if (d / "params").is_dir()]
  if not found:
    raise ValueError(
      f"init.{slot}: expected a medjax workdir with best params ({path}/best/params, written by a "
      f"run with train.keep_best) or a best-params directory ({path}/params), found neither"
    )
  meta = ocp.StandardCheckpointer().metadata(found[0]).item_metadata
  meta = getattr(meta, "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  tree = ocp.PyTreeCheckpointer().restore(found[0], args=ocp.args.PyTreeRestore(restore_args=args))
  return flax.traverse_util.flatten_dict(tree, sep="/")


def _medjax_subtree(source: dict, prefix: str) -> dict:
  """A run's whole param tree -> the slot's subtree: under the slot's own path `prefix` ('a/b/')
  when the run has it (e.g. an OpenTSLM run's lm/), else the whole tree (e.g. an LM run for
  OpenTSLM's lm slot)."""
  if prefix and any(k.startswith(prefix) for k in source):
    return {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
  return source


def _read_hf_bert(slot: str, path: str, cfg: BertConfig):
  _check_type(slot, path, "BERT-family text encoder", ("bert",))
  _same_architecture(slot, path, hf_bert.load_bert_config(path), cfg, _BERT_ARCH)
  params, heads = hf_bert.load_bert_params(path, cfg, dtype=cfg.param_dtype)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  # The heads are reported (as unused by design), never placed: only their names are needed.
  return {**flat, **dict.fromkeys(heads)}, heads


def read(slot: str, fmt: str, path: str, module_cfg, inflate: str = "central"):
  """-> ({'/'-joined path: host numpy array} in the module's layout, tensors unused by design).

  `inflate` ("central" or "mean", `medjax.models.vit.inflate_2d_to_3d`): how a 2D checkpoint fills
  a 3D tower's tubelet kernel (its time embedding starts at zero)."""
  if fmt == "hf" and isinstance(module_cfg, LMConfig):
    return _read_hf_lm(slot, path, module_cfg)
  if fmt == "hf" and isinstance(module_cfg, ViTConfig) and _hf_model_type(path) == "vit":
    return _read_hf_vit(slot, path, module_cfg)
  if fmt == "hf" and isinstance(module_cfg, ViTConfig):
    return _read_hf_siglip(slot, path, module_cfg, inflate)
  if fmt == "hf" and isinstance(module_cfg, BertConfig):
    return _read_hf_bert(slot, path, module_cfg)
  if fmt == "diffusers" and isinstance(module_cfg, STDiTConfig):
    return pixart.read_pixart(path, module_cfg, f"init.{slot}")
  if fmt == "opensora" and isinstance(module_cfg, STDiTConfig):
    return pixart.read_opensora(path, module_cfg, f"init.{slot}")
  raise ValueError(
    f"init.{slot}: format {fmt!r} cannot initialise a {type(module_cfg).__name__} subtree"
  )


@dataclasses.dataclass
class SlotReport:
  slot: str
  source: str
  loaded: int = 0
  loaded_bytes: int = 0
  new: tuple = ()
  unused: tuple = ()


def _subtree(params, path: tuple, slot: str):
  node = params
  for p in path:
    if not isinstance(node, dict) or p not in node:
      raise ValueError(f"init.{slot}: the model has no param subtree {'/'.join(path)}")
    node = node[p]
  return node


def _matches(name: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load(params, slots: dict, init_section, donate: bool = False) -> tuple[dict, list[SlotReport]]:
  """`params` (the sharded train-state params) with the configured slots loaded from their sources.

  `slots` is the task's {slot: (path, module config)}. Raises, naming the slot and tensor, on an
  unknown slot, a shape mismatch, or a missing / unused tensor the config does not allow. Sources
  that read lazily (`LazyTensor`) are checked from their headers and read one tensor at a time
  while placing. `donate`: each replaced leaf of `params` is deleted once its new value is placed,
  so a device holds one copy of the model plus one leaf (the caller must not use `params` after).
  """
  allow_missing = tuple(init_section.get("allow_missing", ()) or ())
  allow_unused = tuple(init_section.get("allow_unused", ()) or ())
  with contextlib.ExitStack() as local_copies:
    return _load(params, slots, init_section, allow_missing, allow_unused, local_copies, donate)


def _load(params, slots, init_section, allow_missing, allow_unused, local_copies, donate):
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  updates, reports = {}, []
  for slot, (fmt, path) in config_lib.init_sources(init_section).items():
    if slot not in slots:
      raise ValueError(
        f"init.{slot}: this task initialises only {sorted(slots) or 'no subtrees'} from weights"
      )
    where, module_cfg = slots[slot]
    target = flax.traverse_util.flatten_dict(_subtree(params, where, slot), sep="/")
    prefix = "/".join(where) + "/" if where else ""
    if fmt == "medjax":  # orbax reads buckets itself
      source, by_design = _medjax_subtree(_read_medjax(slot, path), prefix), ()
    else:
      local = local_copies.enter_context(paths.local_dir(path, f"init.{slot}"))
      source, by_design = read(slot, fmt, local, module_cfg, init_section.get("inflate", "central"))
    new = sorted(k for k in target if k not in source)
    unused = sorted(k for k in source if k not in target)
    bad_new = [k for k in new if not _matches(prefix + k, allow_missing)]
    bad_unused = [k for k in unused if k not in by_design and not _matches(k, allow_unused)]
    if bad_new:
      raise ValueError(
        f"init.{slot}: {len(bad_new)} params of {prefix or 'the model'} are not in {fmt}:{path}, "
        f"e.g. {[prefix + k for k in bad_new[:3]]} (allow them with init.allow_missing patterns)"
      )
    if bad_unused:
      raise ValueError(
        f"init.{slot}: {len(bad_unused)} tensors of {fmt}:{path} have no place in the model, e.g. "
        f"{bad_unused[:3]} (allow them with init.allow_unused patterns)"
      )
    report = SlotReport(slot, f"{fmt}:{path}", new=tuple(new), unused=tuple(unused))
    for k, value in source.items():
      if k not in target:
        continue
      leaf = target[k]
      if tuple(value.shape) != tuple(leaf.shape):
        raise ValueError(
          f"init.{slot}: tensor {prefix + k}: expected shape {tuple(leaf.shape)}, got "
          f"{tuple(value.shape)} in {fmt}:{path}"
        )
      updates[prefix + k] = (value, leaf)
      report.loaded += 1
      report.loaded_bytes += leaf.size * leaf.dtype.itemsize
    reports.append(report)
  # Everything read and checked: place each leaf shard by shard on its devices.
  for k, (value, leaf) in updates.items():
    host = materialize(value).astype(leaf.dtype, copy=False)
    flat[k] = jax.make_array_from_callback(host.shape, leaf.sharding, lambda idx, v=host: v[idx])
    del host
    if donate and isinstance(leaf, jax.Array):
      leaf.delete()
  return flax.traverse_util.unflatten_dict(flat, sep="/"), reports


def format_report(reports: list[SlotReport]) -> str:
  """The table the loop logs: per slot, what was loaded, newly initialised and left unused."""
  lines = ["slot | source | loaded (MiB) | newly initialised | unused"]
  for r in reports:
    lines.append(
      f"{r.slot} | {r.source} | {r.loaded} ({r.loaded_bytes / 2**20:.1f}) | "
      f"{len(r.new)} {list(r.new[:3])} | {len(r.unused)} {list(r.unused[:3])}"
    )
  return "\n".join(lines)
