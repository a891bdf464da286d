"""Videos from a trained Bora / STDiT run, written as MP4, GIF and a frame grid (experiments/sample.py).

Latent (VAE) configs take the paper path: captions -> T5 -> STDiT -> the config's sampler and
guidance -> SD-VAE decode. The embedded cells task samples pixels and reports what the
faithfulness classifier reads from each clip.
"""

import jax
from etils import epath

from medjax.eval.frames import write_outputs
from medjax.tasks.bora import sample_captions
from medjax.train.loop import trained_params


def read_captions(prompts, prompts_file: str | None = None) -> list[str]:
  """`prompts` plus the lines of `prompts_file` (local or gs://), blank ones dropped."""
  captions = list(prompts)
  if prompts_file:
    captions += [c.strip() for c in epath.Path(prompts_file).read_text().splitlines()]
  captions = [c for c in captions if c.strip()]
  if not captions:
    raise ValueError("--prompt/--prompts_file: expected at least one caption, got none")
  return captions


def sample_run(
  config,
  workdir: str,
  captions: list[str],
  *,
  num: int | None = None,
  cfg_scale: float | None = None,
  seed: int = 0,
  out: str | None = None,
  zoom: int | None = None,
  fps: int = 8,
  text_encoder: str | None = None,
  vae: str | None = None,
  frames_per_call: int = 0,
) -> list[str]:
  """Samples `num` videos per caption from the run in `workdir`, writes them under `out` (default
  <workdir>/samples) and returns the lines to print: one per video, then the grid's path."""
  if config.task != "bora":
    raise ValueError(f"--config: expected a bora config (task 'bora'), got task {config.task!r}")
  params, model, task, _, _, step = trained_params(config, workdir)
  scale = config.diffusion.cfg_scale if cfg_scale is None else cfg_scale
  out = out or str(epath.Path(workdir) / "samples")
  cells_task = config.data.latent == "pixels"
  captions = [c for c in captions for _ in range(num or (4 if cells_task else 1))]
  names = [f"{i:03d}" for i in range(len(captions))]
  if cells_task:
    from medjax.data.synthetic import cells

    spec = [cells.parse_caption(c) for c in captions]
    captions = [cells.caption(s["count"], s["direction"], s["speed"]) for s in spec]
    y, y_mask = task.encode_captions(captions)
    sampler = task.sampler(model, scale)
    videos = jax.device_get(sampler(params, y=y, y_mask=y_mask, rng=jax.random.PRNGKey(seed)))
    read = task.classifier.predict(videos)
    read = [f"{c + 1} {cells.DIRECTIONS[d]}" for d, c in zip(read["direction"], read["count"])]
  else:
    for flag, value in (("text_encoder", text_encoder), ("vae", vae)):
      if not value:
        raise ValueError(f"--{flag}: required to sample a latent (VAE) config, got none")
    videos = sample_captions(
      task,
      model,
      params,
      captions,
      text_encoder=text_encoder,
      vae=vae,
      cfg_scale=scale,
      seed=seed,
      frames_per_call=frames_per_call,
    )
    read = None
  paths = write_outputs(videos, out, zoom or (8 if cells_task else 1), fps, names)
  lines = [f"step {step}, cfg {scale}, {len(captions)} videos of shape {videos.shape[1:]}"]
  for i, caption in enumerate(captions):
    extra = f" (classifier reads {read[i]})" if read else ""
    lines.append(f"{paths['mp4'][i]}\t{paths['gif'][i]}\t{caption!r}{extra}")
  return lines + [str(paths["grid"])]
