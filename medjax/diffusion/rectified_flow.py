"""Rectified flow (Open-Sora 1.2+): x_t = (1 - t) x0 + t noise, the model predicts v = noise - x0.

t in [0, 1] (1 = pure noise) is drawn logit-normal (sigmoid of a normal) or uniformly; the model sees
t * num_timesteps so the same timestep embedder serves both objectives. Sampling: Euler from t=1 to 0.
"""

import jax
import jax.numpy as jnp

from medjax.diffusion.gaussian import mean_flat


class RectifiedFlow:
  def __init__(
    self,
    num_timesteps: int = 1000,
    sample_steps: int = 30,
    timestep_sampling: str = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
  ):
    if timestep_sampling not in ("logit_normal", "uniform"):
      raise ValueError(
        f"timestep_sampling: expected 'logit_normal' or 'uniform', got {timestep_sampling!r}"
      )
    if sample_steps <= 0:
      raise ValueError(f"sample_steps: expected a positive int, got {sample_steps!r}")
    self.num_timesteps = num_timesteps
    self.sample_steps = sample_steps
    self.timestep_sampling = timestep_sampling
    self.logit_mean, self.logit_std = logit_mean, logit_std
    self.learn_sigma = False

  def sample_timesteps(self, rng, batch: int):
    if self.timestep_sampling == "uniform":
      return jax.random.uniform(rng, (batch,))
    return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(rng, (batch,)))

  def model_timesteps(self, t):
    return t * self.num_timesteps

  def q_sample(self, x0, t, noise):
    t = t.reshape(t.shape + (1,) * (x0.ndim - 1))
    return (1.0 - t) * x0 + t * noise

  def training_losses(self, model_fn, x0, t, noise):
    """dict(loss, mse, vb) each [B]; loss = MSE(v)."""
    xt = self.q_sample(x0, t, noise)
    v = model_fn(xt, self.model_timesteps(t)).astype(jnp.float32)
    if v.shape != x0.shape:
      raise ValueError(f"model output: expected shape {x0.shape} (velocity), got {v.shape}")
    mse = mean_flat((noise - x0 - v) ** 2)
    return {"loss": mse, "mse": mse, "vb": jnp.zeros_like(mse)}

  def sample(
    self,
    model_fn,
    noise,
    rng=None,
    *,
    method: str = "euler",
    eta: float = 0.0,
    clip_denoised: bool = False,
  ):
    """Euler integration of dx/dt = v from t=1 (noise) to t=0 in `sample_steps` uniform steps.

    `clip_denoised`: each step's data estimate x0 = x - t v is clipped to [-1, 1] and the step taken as
    x' = (1 - t') x0 + t' noise_estimate (the same as x + (t' - t) v without clipping)."""
    del rng, eta
    if method != "euler":
      raise ValueError(f"method: rectified flow supports 'euler', got {method!r}")
    b = noise.shape[0]
    ts = jnp.linspace(1.0, 0.0, self.sample_steps + 1)

    def step(x, i):
      t, t_next = ts[i], ts[i + 1]
      v = model_fn(x, jnp.full((b,), t * self.num_timesteps)).astype(jnp.float32)
      if not clip_denoised:
        return x + (t_next - t) * v, None
      x0 = jnp.clip(x - t * v, -1.0, 1.0)
      return (1.0 - t_next) * x0 + t_next * (x - (1.0 - t) * x0) / t, None

    x, _ = jax.lax.scan(step, noise.astype(jnp.float32), jnp.arange(self.sample_steps))
    return x
