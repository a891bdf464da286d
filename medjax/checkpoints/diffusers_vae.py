"""diffusers `AutoencoderKL` directories (config.json + diffusion_pytorch_model.safetensors) -> `AutoencoderKL`.

Reads the safetensors without torch. Flax names map to diffusers names by turning `_<digits>` into
`.<digits>` (`up_blocks_0_resnets_1` -> `up_blocks.0.resnets.1`); conv kernels are transposed from
[out, in, kh, kw] to [kh, kw, in, out]. The mid-block attention takes `to_q/to_k/to_v/to_out.0` or the
names of pre-0.14 checkpoints (`query/key/value/proj_attn`).
"""

import dataclasses
import os
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from medjax.checkpoints.hf_llm import _convert, _read_json, _require, _Tensors
from medjax.models.vae import AutoencoderKL, VAEConfig
from medjax.parallel.sharding import strip_boxes

_STEM = "diffusion_pytorch_model"
# medjax attention param -> (diffusers name, pre-0.14 name, n_in for `_convert` (None: reshape only)).
_ATTENTION = {
  ("q", "kernel"): ("to_q.weight", "query.weight", 1),
  ("k", "kernel"): ("to_k.weight", "key.weight", 1),
  ("v", "kernel"): ("to_v.weight", "value.weight", 1),
  ("o", "kernel"): ("to_out.0.weight", "proj_attn.weight", 2),
  ("q", "bias"): ("to_q.bias", "query.bias", None),
  ("k", "bias"): ("to_k.bias", "key.bias", None),
  ("v", "bias"): ("to_v.bias", "value.bias", None),
  ("o", "bias"): ("to_out.0.bias", "proj_attn.bias", None),
}


def load_vae_config(path: str, **overrides) -> VAEConfig:
  """`path`/config.json of a diffusers AutoencoderKL -> VAEConfig (`overrides` replace fields, e.g. dtype)."""
  file = os.path.join(path, "config.json")
  if not os.path.exists(file):
    raise ValueError(
      f"path: expected a diffusers VAE directory containing config.json, got {path!r}"
    )
  hf = _read_json(file)
  _require(hf, "_class_name", ("AutoencoderKL",), "AutoencoderKL")
  _require(hf, "act_fn", ("silu",), "silu")
  _require(hf, "shift_factor", (None, 0, 0.0), None)
  channels = tuple(hf.get("block_out_channels", (64,)))
  for field, kind in (
    ("down_block_types", "DownEncoderBlock2D"),
    ("up_block_types", "UpDecoderBlock2D"),
  ):
    types = list(hf.get(field, [kind]))
    if types != [kind] * len(channels):
      raise ValueError(
        f"config.json field {field!r}: expected {[kind] * len(channels)}, got {types}"
      )
  fields = dict(
    in_channels=hf.get("in_channels", 3),
    out_channels=hf.get("out_channels", 3),
    block_out_channels=channels,
    layers_per_block=hf.get("layers_per_block", 1),
    latent_channels=hf.get("latent_channels", 4),
    norm_num_groups=hf.get("norm_num_groups", 32),
    scaling_factor=float(hf.get("scaling_factor", 0.18215)),
    use_quant_conv=hf.get("use_quant_conv", True),
    use_post_quant_conv=hf.get("use_post_quant_conv", True),
    mid_block_add_attention=hf.get("mid_block_add_attention", True),
  )
  return dataclasses.replace(VAEConfig(**fields), **overrides)


def _diffusers_name(key: tuple) -> str:
  """A flax param path -> the diffusers tensor name."""
  *modules, leaf = key
  modules = [re.sub(r"_(\d+)(_|$)", lambda m: f".{m[1]}{'.' if m[2] else ''}", m) for m in modules]
  name = ".".join(modules)
  return f"{name}.{'bias' if leaf == 'bias' else 'weight'}"


def _read(tensors: _Tensors, key: tuple, shape: tuple, dtype, used: set) -> np.ndarray:
  if "attention" in key:  # the mid-block attention: nn.attention.Attention params
    i = key.index("attention")
    prefix = _diffusers_name(key[:i] + ("x",)).rsplit(".", 1)[0]
    new, old, n_in = _ATTENTION[key[i + 1 :]]
    name = f"{prefix}.{new}" if f"{prefix}.{new}" in tensors.files else f"{prefix}.{old}"
    w = tensors.get(name)
    if n_in is None:
      w = w.reshape(shape)
  else:
    name = _diffusers_name(key)
    w, n_in = tensors.get(name), None
    if key[-1] == "kernel":  # conv [out, in, kh, kw] -> [kh, kw, in, out]
      want = (shape[3], shape[2], shape[0], shape[1])
      if tuple(w.shape) != want:
        raise ValueError(
          f"checkpoint tensor {name!r}: expected shape {want} for the config, got {tuple(w.shape)}"
        )
      w = w.transpose(2, 3, 1, 0)
  used.add(name)
  return _convert(w, name, n_in, shape, dtype)


def load_vae_params(path: str, cfg: VAEConfig, dtype=jnp.float32) -> dict:
  """Reads `path`/diffusion_pytorch_model.safetensors (or its sharded index) into AutoencoderKL(cfg)'s params."""
  init = lambda: AutoencoderKL(cfg).init(
    jax.random.PRNGKey(0),
    jnp.zeros((1, cfg.downsample_factor, cfg.downsample_factor, cfg.in_channels)),
  )
  expected = flax.traverse_util.flatten_dict(strip_boxes(jax.eval_shape(init))["params"])
  tensors, used = _Tensors(path, _STEM), set()
  dtype = np.dtype(jnp.dtype(dtype))
  flat = {k: jnp.asarray(_read(tensors, k, v.shape, dtype, used)) for k, v in expected.items()}
  unused = sorted(set(tensors.files) - used)
  if unused:
    raise ValueError(
      f"checkpoint: {len(unused)} tensors have no place in the config, e.g. {unused[:5]}"
    )
  return flax.traverse_util.unflatten_dict(flat)


def load_vae(path: str, **overrides):
  """-> (AutoencoderKL, params) from a diffusers VAE directory."""
  cfg = load_vae_config(path, **overrides)
  return AutoencoderKL(cfg), load_vae_params(path, cfg)
