"""The vision families' speed table: STDiT step options, every paper step's MFU, Bora sampling time.

`runs` lists the rows in the order they run: Bora's STDiT-XL/2 paper step in its previous
configuration (XLA attention, remat per block, batch 8 of 40 x 32 x 32 x 4 latents: the README's
row) as the baseline, the candidate expected best (cuDNN attention, no remat), the Med-Gemini,
OpenTSLM (Flamingo, SoftPrompt) and Anatomy-VLM paper steps, Bora paper sampling per 16-frame clip
(cuDNN, then XLA attention), each STDiT option alone, and Anatomy-VLM with its frozen BERT in bf16.
Dtypes are the paper configs' (bf16 compute, fp32 params; Anatomy-VLM's BERT computes in fp32).
`medjax.benchmarks.step.run` measures them and prints one table; `tiny=True` swaps in the tiny
configs and a tiny VAE (a CPU smoke run; rows that need cuDNN are left out).
benchmarks/gpu_vision.py is the script.
"""

import functools
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax import tasks
from medjax.benchmarks import profile_summary, step
from medjax.config_lib import config_from_file
from medjax.models import vae as vae_lib

COLUMNS = (
  "params_M",
  "compile_s",
  "step_ms",
  "model_tflops_per_device",
  "mfu",
  "mem_MiB_per_device",
  "s_per_clip",
  "vae_decode_s",
)
# STDiT step options (row name, overrides) on configs/bora.py:paper at batch 8.
BASELINE = ("stdit xla remat", ["model.attention_impl=xla", "model.remat=full"])
BEST = ("stdit cudnn", ["model.attention_impl=cudnn", "model.remat=none"])
ALONE = (
  ("stdit xla", ["model.attention_impl=xla", "model.remat=none"]),
  ("stdit cudnn remat", ["model.attention_impl=cudnn", "model.remat=full"]),
  (
    "stdit cudnn remat dots",
    ["model.attention_impl=cudnn", "model.remat=dots_no_batch"],
  ),
  (
    "stdit cudnn fused-mod",
    ["model.attention_impl=cudnn", "model.remat=none", "model.fused_modulation=True"],
  ),
)
PROFILED = (BASELINE[0], BEST[0])
TINY_CPU_OPTIONS = {"xla_backend_optimization_level": 0}
SAMPLE_FRAMES = 16  # the clip length timed (configs/bora.py:paper trains on 40-frame crops)
# A two-level VAE for the tiny sampling row (pixels there: one latent channel).
TINY_VAE = vae_lib.VAEConfig(
  block_out_channels=(8, 8), layers_per_block=1, latent_channels=1, norm_num_groups=4
)


def random_params(shapes, seed: int = 0, scale: float = 0.02):
  """Normal(0, scale) params of the given shapes, drawn on the host (faster than compiling an init
  of the paper models, and no RNG program to compile)."""
  rng = np.random.default_rng(seed)
  draw = lambda s: (scale * rng.standard_normal(s.shape, np.float32)).astype(s.dtype)
  return jax.device_put(jax.tree.map(draw, shapes))


def sample_timing(config, clips: int = 1, vae_cfg=None, compiler_options=None) -> dict:
  """Seconds per sampled clip of a Bora config, on random weights and caption embeddings.

  `BoraTask.sampler` (the configured respaced chain; guidance runs both branches every step), then
  `models.vae.decode_video` of every frame with a random VAE of `vae_cfg` (default SD-VAE) where
  the config's latents are VAE latents, or where `vae_cfg` is given (its decoder's params only).
  Each is compiled ahead (compile_s, with `compiler_options`), called once, then timed once.
  """
  task = tasks.get_task(config)
  model = task.build_model()
  batch = task.dummy_batch(clips)
  y, y_mask = step._fill(batch["y"], np.random.default_rng(0)), np.ones_like(batch["y_mask"])
  sampler = task.sampler(model, config.diffusion.cfg_scale)
  compile_s = 0.0

  def compiled(fn, *args):
    nonlocal compile_s
    t0 = time.time()
    out = jax.jit(fn).lower(*args).compile(compiler_options)
    compile_s += time.time() - t0
    return out

  def timed(fn, *args):
    jax.block_until_ready(fn(*args))
    t0 = time.time()
    out = jax.block_until_ready(fn(*args))
    return out, time.time() - t0

  init = lambda k: nn.meta.unbox(task.init_params(model, k, batch))
  params = random_params(jax.eval_shape(init, jax.random.key(0)))
  sample = lambda p, y, m, k: sampler(p, y=y, y_mask=m, rng=k)
  key = jax.random.PRNGKey(1)
  latents, sample_s = timed(compiled(sample, params, y, y_mask, key), params, y, y_mask, key)
  out = {
    "params_M": sum(x.size for x in jax.tree.leaves(params)) / 1e6,
    "clips": clips,
    "frames": int(latents.shape[1]),
    "sample_steps": int(config.diffusion.sample_steps),
    "cfg_scale": float(config.diffusion.cfg_scale),
    "sample_s_per_clip": sample_s / clips,
    "vae_decode_s": float("nan"),
  }
  del params
  if vae_cfg is not None or config.data.latent == "vae":
    vae = vae_lib.AutoencoderKL(vae_cfg or vae_lib.PRESETS["sd-vae"])
    image = jnp.zeros((1, 1, 1, vae.config.latent_channels))
    init = lambda k: vae.init(k, image, method=vae_lib.AutoencoderKL.decode)["params"]
    vae_params = random_params(jax.eval_shape(init, jax.random.key(0)), seed=1)
    decode = compiled(functools.partial(vae_lib.decode_video, vae), vae_params, latents)
    videos, decode_s = timed(decode, vae_params, latents)
    out.update(vae_decode_s=decode_s / clips, video_shape=list(videos.shape[1:]))
  out["compile_s"] = compile_s
  out["s_per_clip"] = out["sample_s_per_clip"] + np.nan_to_num(out["vae_decode_s"])
  out["step_ms"] = 1e3 * out["s_per_clip"]
  return out


def _profiled(spec, overrides, steps, path):
  """A training row traced into `path`: step.benchmark, then its top ops printed and kept."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  r = step.benchmark(config_from_file(spec, overrides), steps, profile_dir=path)
  profile_summary.report_top_ops(path, top=25, keep=True)
  return dict(r, config=spec, overrides=overrides)


def runs(tiny: bool = False, steps: int = 3, profile_dir: str = "", sample_clips: int = 1):
  """The table's runs for `medjax.benchmarks.step.run`: paper configs at the batch sizes of the
  README's table (tiny: the tiny configs at batch 4 on one device). With `profile_dir`, the
  `PROFILED` rows are traced into profile_dir/<row>."""
  size = "tiny" if tiny else "paper"
  common = ["parallel.num_devices=1"] if tiny else []
  spec = lambda name: f"configs/{name}.py:{size}"
  batch = lambda paper: common + [f"train.batch_size={4 if tiny else paper}"]
  byte = ["data.tokenizer=byte"]

  def stdit(name, overrides):
    row = (name, spec("bora"), batch(8) + overrides)
    if not (profile_dir and name in PROFILED):
      return row
    path = os.path.join(profile_dir, name.replace(" ", "_"))
    return (name, lambda: _profiled(*row[1:], steps, path))

  def sampling(name, overrides):
    frames = [] if tiny else [f"data.frames={SAMPLE_FRAMES}"]
    config = lambda: config_from_file(spec("bora"), common + frames + overrides)
    if tiny:  # a tiny VAE decodes the pixels; XLA:CPU compiles faster with LLVM's passes off
      return (name, lambda: sample_timing(config(), sample_clips, TINY_VAE, TINY_CPU_OPTIONS))
    return (name, lambda: sample_timing(config(), sample_clips))

  rows = [stdit(*BASELINE)] + ([] if tiny else [stdit(*BEST)])
  rows += [
    ("medgemini", spec("medgemini"), byte + batch(16)),
    ("opentslm flamingo", spec("opentslm_flamingo"), byte + batch(8)),
    ("opentslm softprompt", spec("opentslm_softprompt"), byte + batch(8)),
    ("anatomy_vlm", spec("anatomy_vlm"), batch(64)),
  ]
  if not tiny:
    rows.append(sampling("bora sample cudnn", ["model.attention_impl=cudnn"]))
  rows.append(sampling("bora sample xla", ["model.attention_impl=xla"]))
  rows += [stdit(*o) for o in ALONE if not (tiny and "cudnn" in " ".join(o[1]))]
  if not tiny:  # the frozen BERT's forward is ~89% of the paper step's FLOPs, in float32 there
    bf16 = ["model.text.dtype=bfloat16"]
    rows.append(("anatomy_vlm text-bf16", spec("anatomy_vlm"), batch(64) + bf16))
  return rows


def run(
  tiny: bool = False,
  steps: int = 3,
  budget_s: float = 0,
  json_out: str = "",
  profile_dir: str = "",
  only=(),
  sample_clips: int = 1,
) -> list[dict]:
  """Measures `runs(...)` (those named in `only`, if given) and prints the table."""
  rows = runs(tiny, steps, profile_dir, sample_clips)
  names = [r[0] for r in rows]
  if set(only) - set(names):
    raise ValueError(f"only: expected row names from {names}, got {list(only)}")
  selected = [r for r in rows if not only or r[0] in only]
  return step.run(selected, steps, 0, json_out, columns=COLUMNS, budget_s=budget_s)
