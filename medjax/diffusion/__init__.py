"""Diffusion schedules, losses and samplers: IDDPM (learned variance, respacing, DDIM) and rectified flow."""

from medjax.diffusion.gaussian import GaussianDiffusion, space_timesteps
from medjax.diffusion.guidance import cfg_model_fn
from medjax.diffusion.rectified_flow import RectifiedFlow

__all__ = [
  "GaussianDiffusion",
  "RectifiedFlow",
  "TYPES",
  "cfg_model_fn",
  "make_diffusion",
  "space_timesteps",
]
TYPES = ("iddpm", "rflow")


def make_diffusion(cfg, *, sampling: bool = False):
  """From a config section with fields type, num_timesteps, schedule, sample_steps (and rflow's
  timestep_sampling). `sampling=True` gives the chain respaced to `sample_steps` for IDDPM."""
  if cfg.type == "iddpm":
    d = GaussianDiffusion.create(
      cfg.num_timesteps, cfg.get("schedule", "linear"), learn_sigma=cfg.learn_sigma
    )
    return d.respaced(cfg.sample_steps) if sampling else d
  if cfg.type == "rflow":
    return RectifiedFlow(
      cfg.num_timesteps, cfg.sample_steps, cfg.get("timestep_sampling", "logit_normal")
    )
  raise ValueError(f"diffusion.type: expected one of {TYPES}, got {cfg.type!r}")
