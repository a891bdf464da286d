"""PixArt-alpha (diffusers) and Open-Sora v1.0 / Bora checkpoints -> STDiT params.

`read_pixart(path, cfg)`: a diffusers `PixArtTransformer2DModel` directory (config.json +
diffusion_pytorch_model.safetensors, or a sharded index) fills the spatial blocks (self-attention,
cross-attention, MLP, scale-shift tables), adaLN-single (timestep embedder, t_block), the caption
projection, the patch embedding (as a (1, p, p) tubelet) and the final layer. The temporal branch and
the null caption have no counterpart: they keep their fresh init (the temporal output projection
starts at zero, so STDiT is the image model applied frame by frame).

`read_opensora(path, cfg)`: an Open-Sora v1.0 / Bora STDiT state dict with its original key names
(`.safetensors`, or `.pth` through torch), possibly wrapped ({"ema": ...}, {"state_dict": ...}) or
prefixed (`module.`, `ema.`). Its position-embedding buffers are not weights: they are checked
against the config's `space_scale` / `space_base_size` / `time_scale` and reported as unused.

Both check every tensor's name and shape from the file headers before anything is read, and return
{'/'-joined STDiT param path: LazyTensor} plus the names of the source tensors without a place.
"""

import os
import typing

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from medjax.checkpoints.hf_llm import _read_json, _Tensors
from medjax.checkpoints.host import LazyTensor
from medjax.models.stdit import STDiT, STDiTConfig, sincos_1d, sincos_2d
from medjax.parallel.sharding import strip_boxes


class _Src(typing.NamedTuple):
  """A source tensor: its name, layout ("linear": [out, in] -> a kernel with `n_in` input axes;
  "flat": [n] -> reshaped; "same": as is; "conv3d": [D, C, pt, ph, pw] and "conv2d": [D, C, ph, pw]
  -> [pt, ph, pw, C, D]) and `part` (j, n): the j-th of n equal slices along axis 0 (fused qkv / kv
  projections)."""

  name: str
  layout: str
  n_in: int = 1
  part: tuple = (0, 1)


def _linear(prefix: str, name: str, n_in: int = 1, part=(0, 1)) -> dict:
  return {
    "kernel": _Src(f"{prefix}{name}.weight", "linear", n_in, part),
    "bias": _Src(f"{prefix}{name}.bias", "flat", 0, part),
  }


def _attention(prefix: str, q: str, k: str, v: str, o: str) -> dict:
  """`q`/`k`/`v`: names, or (name, (j, n)) for a slice of a fused projection."""
  out = {}
  for proj, src in zip("qkvo", (q, k, v, o)):
    name, part = (src, (0, 1)) if isinstance(src, str) else src
    out[proj] = _linear(prefix, name, 2 if proj == "o" else 1, part)
  return out


def _diffusers_names(cfg: STDiTConfig) -> dict:
  names = {
    "x_embedder": {
      "kernel": _Src("pos_embed.proj.weight", "conv2d"),
      "bias": _Src("pos_embed.proj.bias", "flat"),
    },
    "t_embedder": {
      "fc1": _linear("adaln_single.emb.timestep_embedder.", "linear_1"),
      "fc2": _linear("adaln_single.emb.timestep_embedder.", "linear_2"),
    },
    "t_block": _linear("adaln_single.", "linear"),
    "y_embedder": {
      "fc1": _linear("caption_projection.", "linear_1"),
      "fc2": _linear("caption_projection.", "linear_2"),
    },
    "final_scale_shift_table": {"table": _Src("scale_shift_table", "same")},
    "final_linear": _linear("", "proj_out"),
  }
  for i in range(cfg.depth):
    p = f"transformer_blocks.{i}."
    names[f"block_{i}"] = {
      "attn": _attention(p + "attn1.", "to_q", "to_k", "to_v", "to_out.0"),
      "cross_attn": _attention(p + "attn2.", "to_q", "to_k", "to_v", "to_out.0"),
      "mlp": {"up": _linear(p, "ff.net.0.proj"), "down": _linear(p, "ff.net.2")},
      "scale_shift_table": {"table": _Src(p + "scale_shift_table", "same")},
    }
  return names


def _opensora_names(cfg: STDiTConfig) -> dict:
  names = {
    "x_embedder": {
      "kernel": _Src("x_embedder.proj.weight", "conv3d"),
      "bias": _Src("x_embedder.proj.bias", "flat"),
    },
    "t_embedder": {"fc1": _linear("t_embedder.", "mlp.0"), "fc2": _linear("t_embedder.", "mlp.2")},
    "t_block": _linear("", "t_block.1"),
    "y_embedder": {
      "fc1": _linear("y_embedder.y_proj.", "fc1"),
      "fc2": _linear("y_embedder.y_proj.", "fc2"),
      "null_embedding": _Src("y_embedder.y_embedding", "same"),
    },
    "final_scale_shift_table": {"table": _Src("final_layer.scale_shift_table", "same")},
    "final_linear": _linear("final_layer.", "linear"),
  }
  qkv = lambda j: ("qkv", (j, 3))
  for i in range(cfg.depth):
    p = f"blocks.{i}."
    names[f"block_{i}"] = {
      "attn": _attention(p + "attn.", qkv(0), qkv(1), qkv(2), "proj"),
      "cross_attn": _attention(
        p + "cross_attn.", "q_linear", ("kv_linear", (0, 2)), ("kv_linear", (1, 2)), "proj"
      ),
      "mlp": {"up": _linear(p, "mlp.fc1"), "down": _linear(p, "mlp.fc2")},
      "scale_shift_table": {"table": _Src(p + "scale_shift_table", "same")},
    }
    if cfg.temporal_attention:
      names[f"block_{i}"]["attn_temp"] = _attention(
        p + "attn_temp.", qkv(0), qkv(1), qkv(2), "proj"
      )
  return names


def _source_shape(src: _Src, shape: tuple) -> tuple:
  """The tensor's shape in the checkpoint for a target leaf of `shape`."""
  n = src.part[1]
  if src.layout == "linear":
    return (n * int(np.prod(shape[src.n_in :])), int(np.prod(shape[: src.n_in])))
  if src.layout == "flat":
    return (n * int(np.prod(shape)),)
  if src.layout == "conv3d":
    return (shape[4], shape[3]) + tuple(shape[:3])
  if src.layout == "conv2d":
    return (shape[4], shape[3]) + tuple(shape[1:3])
  return tuple(shape)


def _convert(w: np.ndarray, src: _Src, shape: tuple, dtype) -> np.ndarray:
  j, n = src.part
  w = np.split(w, n, axis=0)[j] if n > 1 else w
  if src.layout == "linear":
    w = w.T
  elif src.layout in ("conv2d", "conv3d"):
    w = w.reshape(w.shape[:2] + (-1,) + w.shape[-2:]).transpose(2, 3, 4, 1, 0)
  return np.ascontiguousarray(w.reshape(shape)).astype(dtype)


class _File:
  """Tensors of one state dict: a single .safetensors file (read lazily) or torch tensors."""

  def __init__(self, tensors: dict | None = None, file: str | None = None, prefix: str = ""):
    self._dict, self._file, self.prefix = tensors, file, prefix
    if file is not None:
      with safe_open(file, "np") as f:
        self.files = {k[len(prefix) :]: file for k in f.keys() if k.startswith(prefix)}
    else:
      self.files = dict.fromkeys(tensors)

  def shape(self, name: str) -> tuple:
    if self._dict is not None:
      return tuple(self._dict[name].shape)
    with safe_open(self._file, "np") as f:
      return tuple(f.get_slice(self.prefix + name).get_shape())

  def get(self, name: str) -> np.ndarray:
    if self._dict is not None:  # torch tensors, converted one at a time
      return self._dict[name].float().numpy()
    with (
      safe_open(self._file, "flax") as f,
      jax.default_device(jax.local_devices(backend="cpu")[0]),
    ):
      return np.asarray(f.get_tensor(self.prefix + name), np.float32)


def abstract_params(cfg: STDiTConfig) -> dict:
  """{param path tuple: ShapeDtypeStruct} of `STDiT(cfg)`, computed without allocating."""
  pt, ph, pw = cfg.patch_size
  y = (
    jnp.zeros((1, 1), jnp.int32) if cfg.text_vocab_size else jnp.zeros((1, 1, cfg.caption_channels))
  )
  init = lambda: STDiT(cfg).init(
    jax.random.PRNGKey(0), jnp.zeros((1, pt, ph, pw, cfg.in_channels)), jnp.zeros((1,)), y
  )["params"]
  return flax.traverse_util.flatten_dict(strip_boxes(jax.eval_shape(init)))


def _read(tensors, names: dict, cfg: STDiTConfig, where: str) -> tuple[dict, set]:
  """Checks every named tensor's presence and shape; -> ({path: LazyTensor}, names used)."""
  expected = abstract_params(cfg)
  dtype = np.dtype(jnp.dtype(cfg.param_dtype))
  out, used = {}, set()
  for key, src in flax.traverse_util.flatten_dict(names).items():
    if key not in expected:
      continue  # e.g. the null caption of a model that embeds token ids: nothing to fill
    shape = tuple(expected[key].shape)
    if src.name not in tensors.files:
      raise ValueError(
        f"{where}: expected a tensor named {src.name!r} (for {'/'.join(key)}), not found"
      )
    got, want = tensors.shape(src.name), _source_shape(src, shape)
    if got != want:
      raise ValueError(
        f"{where}: tensor {src.name!r}: expected shape {want} for the config's {'/'.join(key)} "
        f"{shape}, got {got}"
      )
    used.add(src.name)
    out["/".join(key)] = LazyTensor(
      shape, lambda s=src, sh=shape: _convert(tensors.get(s.name), s, sh, dtype)
    )
  return out, used


# diffusers PixArt ---------------------------------------------------------------------------------
def _pixart_expect(hf: dict, cfg: STDiTConfig) -> list:
  """(checkpoint field, its value, config field, what the config implies) for each architecture field."""
  heads, head_dim = hf.get("num_attention_heads", 16), hf.get("attention_head_dim", 72)
  sample, patch = hf.get("sample_size", 128), hf.get("patch_size", 2)
  extra = hf.get("use_additional_conditions")
  pt, ph, pw = cfg.patch_size
  return [
    ("_class_name", hf.get("_class_name"), "model", "PixArtTransformer2DModel"),
    ("norm_type", hf.get("norm_type", "ada_norm_single"), "model", "ada_norm_single"),
    ("activation_fn", hf.get("activation_fn", "gelu-approximate"), "model", "gelu-approximate"),
    ("attention_bias", hf.get("attention_bias", True), "model", True),
    ("norm_elementwise_affine", hf.get("norm_elementwise_affine", False), "model", False),
    ("norm_eps", hf.get("norm_eps", 1e-6), "model", 1e-6),
    ("attention_type", hf.get("attention_type", "default"), "model", "default"),
    ("use_additional_conditions", sample == 128 if extra is None else extra, "model", False),
    ("num_layers", hf.get("num_layers", 28), "depth", cfg.depth),
    ("num_attention_heads", heads, "num_heads", cfg.num_heads),
    ("num_attention_heads * attention_head_dim", heads * head_dim, "hidden", cfg.hidden),
    ("cross_attention_dim", hf.get("cross_attention_dim", 1152), "hidden", cfg.hidden),
    ("caption_channels", hf.get("caption_channels"), "caption_channels", cfg.caption_channels),
    ("in_channels", hf.get("in_channels", 4), "in_channels", cfg.in_channels),
    (
      "out_channels",
      hf.get("out_channels", 8) or hf.get("in_channels", 4),
      "out_channels",
      cfg.out_channels,
    ),
    ("patch_size", (1, patch, patch), "patch_size", (pt, ph, pw)),
    ("mlp ratio", 4.0, "mlp_ratio", cfg.mlp_ratio),
    ("qk norm", False, "qk_norm", cfg.qk_norm),
  ]


def read_pixart(path: str, cfg: STDiTConfig, where: str = "init") -> tuple[dict, tuple]:
  """A diffusers PixArtTransformer2DModel directory -> ({STDiT param path: LazyTensor, or None for a
  tensor without a place}, ()): the temporal branch and the null caption are not among them. Raises,
  naming the field, unless the checkpoint is the config's architecture with the same positions."""
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    raise ValueError(
      f"{where}: expected a diffusers directory with config.json, found none in {path!r}"
    )
  hf = _read_json(file)
  for theirs, a, ours, b in _pixart_expect(hf, cfg):
    if a != b and not (isinstance(a, float) and isinstance(b, float) and np.isclose(a, b)):
      raise ValueError(
        f"{where}: the checkpoint's {theirs} is {a!r}, the config's model.{ours} implies {b!r} ({path})"
      )
  # PixArt puts patch i of a row of n at i * (base / n) / interpolation_scale, base = sample_size /
  # patch_size; STDiT at i * (space_base_size / n) / space_scale: the same positions at every n iff
  # the ratios agree (Open-Sora v1.0: PixArt-512's 32 / 1 = STDiT-XL/2's 16 / 0.5).
  sample, patch = hf.get("sample_size", 128), hf.get("patch_size", 2)
  scale = hf.get("interpolation_scale") or max(sample // 64, 1)
  base = sample // patch
  if not cfg.space_base_size or not np.isclose(base / scale, cfg.space_base_size / cfg.space_scale):
    raise ValueError(
      f"{where}: the checkpoint places patches at i * {base} / n / {scale} (sample_size / patch_size "
      f"/ interpolation_scale), the config at i * {cfg.space_base_size or 'n'} / n / "
      f"{cfg.space_scale} (model.space_base_size / model.space_scale): expected equal ratios ({path})"
    )
  tensors = _Tensors(path, "diffusion_pytorch_model")
  flat, used = _read(tensors, _diffusers_names(cfg), cfg, f"{where} ({path})")
  return {**flat, **dict.fromkeys(sorted(set(tensors.files) - used))}, ()


# Open-Sora v1.0 / Bora ------------------------------------------------------------------------------
_POSITION_BUFFERS = ("pos_embed", "pos_embed_temporal")
_WRAPPERS = ("ema", "state_dict", "model", "module")
_PREFIXES = ("module.", "ema.", "model.")


def _strip_prefix(keys) -> str:
  for prefix in _PREFIXES:
    if keys and all(k.startswith(prefix) for k in keys):
      return prefix
  return ""


def _load_state_dict(path: str, where: str) -> _File:
  if not os.path.isfile(path):
    raise ValueError(
      f"{where}: expected an Open-Sora checkpoint file (.pth or .safetensors), got {path!r}"
    )
  if path.endswith(".safetensors"):
    try:
      with safe_open(path, "np") as f:
        keys = list(f.keys())
    except Exception as e:  # safetensors raises its own error types on a malformed header
      raise ValueError(f"{where}: {path!r} is not a safetensors checkpoint ({e})") from e
    return _File(file=path, prefix=_strip_prefix(keys))
  try:
    import torch
  except ImportError as e:
    raise ValueError(
      f"{where}: reading {path!r} (a torch pickle) needs torch, which is not installed; convert it "
      "to .safetensors"
    ) from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(
      f"{where}: {path!r} is not a torch checkpoint ({type(e).__name__}: {e})"
    ) from e
  while isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
    wrapper = next((w for w in _WRAPPERS if isinstance(state.get(w), dict)), None)
    if wrapper is None:
      raise ValueError(f"{where}: {path!r} holds no state dict (keys {sorted(state)[:5]})")
    state = state[wrapper]
  if not isinstance(state, dict):
    raise ValueError(f"{where}: {path!r} holds a {type(state).__name__}, expected a state dict")
  prefix = _strip_prefix(list(state))
  return _File({k[len(prefix) :]: v for k, v in state.items() if torch.is_tensor(v)})


def _check_positions(tensors: _File, cfg: STDiTConfig, where: str):
  """The saved position buffers against the config's: [1, S, D] spatial, [1, T, D] temporal."""
  d = cfg.hidden
  if "pos_embed" in tensors.files:
    saved = tensors.get("pos_embed").reshape(-1, d)
    n = int(round(np.sqrt(saved.shape[0])))
    ours = sincos_2d(d, n, n, cfg.space_scale, cfg.space_base_size)
    if n * n != saved.shape[0] or not np.allclose(saved, ours, atol=1e-3):
      raise ValueError(
        f"{where}: the checkpoint's spatial positions (pos_embed) differ from the config's "
        f"model.space_scale={cfg.space_scale}, model.space_base_size={cfg.space_base_size} "
        f"on its {n}x{n} grid"
      )
  if "pos_embed_temporal" in tensors.files and cfg.temporal_pos in ("sincos", "sincos_stream"):
    saved = tensors.get("pos_embed_temporal").reshape(-1, d)
    ours = sincos_1d(d, np.arange(saved.shape[0]) / cfg.time_scale)
    if not np.allclose(saved, ours, atol=1e-3):
      raise ValueError(
        f"{where}: the checkpoint's temporal positions (pos_embed_temporal) differ from the "
        f"config's model.time_scale={cfg.time_scale}"
      )


def read_opensora(path: str, cfg: STDiTConfig, where: str = "init") -> tuple[dict, tuple]:
  """An Open-Sora v1.0 / Bora STDiT checkpoint -> ({STDiT param path: LazyTensor, or None for a
  tensor without a place}, the position buffers: unused by design). The head count is not in the
  weights (the projections are fused): it is the config's."""
  tensors = _load_state_dict(path, where)
  _check_positions(tensors, cfg, f"{where} ({path})")
  flat, used = _read(tensors, _opensora_names(cfg), cfg, f"{where} ({path})")
  by_design = tuple(b for b in _POSITION_BUFFERS if b in tensors.files)
  return {**flat, **dict.fromkeys(sorted(set(tensors.files) - used))}, by_design
