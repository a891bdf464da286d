"""IDDPM Gaussian diffusion (Nichol & Dhariwal 2021) as used by PixArt / Open-Sora / Bora.

epsilon prediction with a learned-range variance: the model outputs 2C channels on the last axis,
[eps, v] with v in [-1, 1] interpolating log-variance between the clipped posterior variance and
beta_t. Loss = MSE(eps) + the variational bound term, the latter with a stop-gradient on the mean
so it only trains the variance. Respacing (`use_timesteps`) gives a shorter chain with the same
alphas_cumprod at the kept steps; the model is always called with the original timestep index.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def linear_betas(
  num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
  """The DDPM linear schedule, rescaled so any number of steps spans the same noise range."""
  scale = 1000 / num_timesteps
  return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
  f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
  return np.array(
    [
      min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta)
      for i in range(num_timesteps)
    ],
    np.float64,
  )


def space_timesteps(num_timesteps: int, count: int | str) -> list[int]:
  """`count` evenly spaced steps of [0, num_timesteps) (first and last included), or "ddimN" (stride)."""
  if isinstance(count, str) and count.startswith("ddim"):
    n = int(count[4:])
    if not 0 < n <= num_timesteps:
      raise ValueError(f"count: expected ddimN with 0 < N <= {num_timesteps}, got {count!r}")
    stride = num_timesteps // n
    return list(range(0, num_timesteps, stride))[:n]
  n = int(count)
  if not 0 < n <= num_timesteps:
    raise ValueError(f"count: expected 0 < count <= {num_timesteps}, got {count!r}")
  if n == 1:
    return [num_timesteps - 1]
  stride = (num_timesteps - 1) / (n - 1)
  return sorted({round(i * stride) for i in range(n)})


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
  return 0.5 * (
    -1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2)
  )


def _approx_std_normal_cdf(x):
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
  """log p(x) of data in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale)), elementwise."""
  centered = x - mean
  inv_std = jnp.exp(-log_scale)
  cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def split_output(out, channels: int):
  """Model output [..., 2C] -> (eps [..., C], v [..., C]); validates the channel count."""
  if out.shape[-1] != 2 * channels:
    raise ValueError(
      f"model output: expected {2 * channels} channels (eps and variance), got shape {out.shape}"
    )
  return out[..., :channels], out[..., channels:]


class GaussianDiffusion:
  """The schedule and its derived quantities (float64 numpy, gathered as float32 under jit)."""

  def __init__(self, betas: np.ndarray, use_timesteps=None, learn_sigma: bool = True):
    base = np.asarray(betas, np.float64)
    self.original_num_steps = len(base)
    if use_timesteps is None:
      use_timesteps = range(len(base))
    use = sorted(set(int(t) for t in use_timesteps))
    if not use or use[0] < 0 or use[-1] >= len(base):
      raise ValueError(
        f"use_timesteps: expected steps in [0, {len(base)}), got {use[:3]}...{use[-3:]}"
      )
    base_acp = np.cumprod(1.0 - base)
    acp_kept = base_acp[use]
    self.betas = 1.0 - acp_kept / np.concatenate([[1.0], acp_kept[:-1]])
    self.timestep_map = np.asarray(use, np.int32)
    self.num_timesteps = len(use)
    self.learn_sigma = learn_sigma
    b = self.betas
    self.alphas_cumprod = np.cumprod(1.0 - b)
    self.alphas_cumprod_prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
    acp, acp_prev = self.alphas_cumprod, self.alphas_cumprod_prev
    self.sqrt_alphas_cumprod = np.sqrt(acp)
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - acp)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / acp)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / acp - 1.0)
    self.posterior_variance = b * (1.0 - acp_prev) / (1.0 - acp)
    # log of the posterior variance, with the t=0 entry (0 variance) replaced by the t=1 value.
    self.posterior_log_variance_clipped = np.log(
      np.append(self.posterior_variance[1], self.posterior_variance[1:])
    )
    self.posterior_mean_coef1 = b * np.sqrt(acp_prev) / (1.0 - acp)
    self.posterior_mean_coef2 = (1.0 - acp_prev) * np.sqrt(1.0 - b) / (1.0 - acp)

  @classmethod
  def create(
    cls,
    num_timesteps: int = 1000,
    schedule: str = "linear",
    respace: int | str | None = None,
    learn_sigma: bool = True,
  ):
    """A `num_timesteps` chain, optionally respaced to `respace` steps (an int or "ddimN")."""
    schedules = {"linear": linear_betas, "cosine": cosine_betas}
    if schedule not in schedules:
      raise ValueError(f"schedule: expected one of {sorted(schedules)}, got {schedule!r}")
    betas = schedules[schedule](num_timesteps)
    use = space_timesteps(num_timesteps, respace) if respace is not None else None
    return cls(betas, use, learn_sigma)

  def respaced(self, count: int | str) -> "GaussianDiffusion":
    """The same base chain with `count` steps (only valid on an un-respaced diffusion)."""
    if self.num_timesteps != self.original_num_steps:
      raise ValueError("respaced: call it on the full chain, not on an already respaced one")
    return GaussianDiffusion(
      self.betas, space_timesteps(self.num_timesteps, count), self.learn_sigma
    )

  @staticmethod
  def _at(arr, t, ndim):
    """arr[t] as float32, shaped [B, 1, ..., 1] for broadcasting against an ndim array."""
    v = jnp.asarray(arr, jnp.float32)[t]
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))

  # ---------------------------------------------------------------- forward process
  def q_sample(self, x0, t, noise):
    """x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise; t [B] are indices of this chain."""
    n = x0.ndim
    return (
      self._at(self.sqrt_alphas_cumprod, t, n) * x0
      + self._at(self.sqrt_one_minus_alphas_cumprod, t, n) * noise
    )

  def q_posterior(self, x0, xt, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
    n = xt.ndim
    mean = (
      self._at(self.posterior_mean_coef1, t, n) * x0
      + self._at(self.posterior_mean_coef2, t, n) * xt
    )
    return (
      mean,
      self._at(self.posterior_variance, t, n),
      self._at(self.posterior_log_variance_clipped, t, n),
    )

  def predict_x0(self, xt, t, eps):
    n = xt.ndim
    return (
      self._at(self.sqrt_recip_alphas_cumprod, t, n) * xt
      - self._at(self.sqrt_recipm1_alphas_cumprod, t, n) * eps
    )

  # ---------------------------------------------------------------- reverse process
  def p_mean_variance(self, out, xt, t, clip_denoised: bool = False):
    """From the model output: dict(mean, log_variance, pred_x0, eps)."""
    n = xt.ndim
    if self.learn_sigma:
      eps, v = split_output(out, xt.shape[-1])
      min_log = self._at(self.posterior_log_variance_clipped, t, n)
      max_log = self._at(np.log(self.betas), t, n)
      frac = (v.astype(jnp.float32) + 1.0) / 2.0
      log_var = frac * max_log + (1.0 - frac) * min_log
    else:
      eps = out
      # Fixed "large" variance as in DDPM: beta_t, with the posterior variance at t=0.
      log_var = jnp.broadcast_to(
        self._at(np.log(np.append(self.posterior_variance[1], self.betas[1:])), t, n), xt.shape
      )
    eps = eps.astype(jnp.float32)
    pred_x0 = self.predict_x0(xt, t, eps)
    if clip_denoised:
      pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
    mean, _, _ = self.q_posterior(pred_x0, xt, t)
    return {"mean": mean, "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}

  # ---------------------------------------------------------------- training
  def sample_timesteps(self, rng, batch: int):
    return jax.random.randint(rng, (batch,), 0, self.num_timesteps)

  def model_timesteps(self, t):
    """Chain index -> the timestep value the model sees (the original index for respaced chains)."""
    return jnp.asarray(self.timestep_map)[t]

  def vb_terms(self, out, x0, xt, t, clip_denoised: bool = False):
    """Per-example variational bound term in bits/dim: KL for t > 0, decoder NLL at t = 0."""
    true_mean, _, true_log_var = self.q_posterior(x0, xt, t)
    p = self.p_mean_variance(out, xt, t, clip_denoised)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
    nll = -mean_flat(
      discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    ) / math.log(2.0)
    return jnp.where(t == 0, nll, kl)

  def training_losses(self, model_fn, x0, t, noise):
    """dict(loss, mse, vb), each [B]; `model_fn(x_t, model_timesteps) -> output`."""
    xt = self.q_sample(x0, t, noise)
    out = model_fn(xt, self.model_timesteps(t)).astype(jnp.float32)
    c = x0.shape[-1]
    if self.learn_sigma:
      eps, v = split_output(out, c)
      mse = mean_flat((noise - eps) ** 2)
      frozen = jnp.concatenate([jax.lax.stop_gradient(eps), v], axis=-1)
      vb = self.vb_terms(frozen, x0, xt, t)
      return {"loss": mse + vb, "mse": mse, "vb": vb}
    if out.shape[-1] != c:
      raise ValueError(f"model output: expected {c} channels, got shape {out.shape}")
    mse = mean_flat((noise - out) ** 2)
    return {"loss": mse, "mse": mse, "vb": jnp.zeros_like(mse)}

  # ---------------------------------------------------------------- sampling
  def sample(
    self,
    model_fn,
    noise,
    rng,
    *,
    method: str = "ddpm",
    eta: float = 0.0,
    clip_denoised: bool = False,
  ):
    """Runs the whole (respaced) chain from `noise` with a lax.scan; method "ddpm" or "ddim"."""
    if method not in ("ddpm", "ddim"):
      raise ValueError(f"method: expected 'ddpm' or 'ddim', got {method!r}")
    b, n = noise.shape[0], noise.ndim

    def step(x, xs):
      i, key = xs
      t = jnp.full((b,), i, jnp.int32)
      p = self.p_mean_variance(model_fn(x, self.model_timesteps(t)), x, t, clip_denoised)
      z = jax.random.normal(key, x.shape, jnp.float32)
      nonzero = (t > 0).astype(jnp.float32).reshape((b,) + (1,) * (n - 1))
      if method == "ddpm":
        x = p["mean"] + nonzero * jnp.exp(0.5 * p["log_variance"]) * z
      else:
        acp, acp_prev = (
          self._at(self.alphas_cumprod, t, n),
          self._at(self.alphas_cumprod_prev, t, n),
        )
        eps = (self._at(self.sqrt_recip_alphas_cumprod, t, n) * x - p["pred_x0"]) / self._at(
          self.sqrt_recipm1_alphas_cumprod, t, n
        )
        sigma = eta * jnp.sqrt((1 - acp_prev) / (1 - acp)) * jnp.sqrt(1 - acp / acp_prev)
        mean = (
          p["pred_x0"] * jnp.sqrt(acp_prev)
          + jnp.sqrt(jnp.maximum(1 - acp_prev - sigma**2, 0.0)) * eps
        )
        x = mean + nonzero * sigma * z
      return x, None

    steps = jnp.arange(self.num_timesteps - 1, -1, -1)
    x, _ = jax.lax.scan(
      step, noise.astype(jnp.float32), (steps, jax.random.split(rng, self.num_timesteps))
    )
    return x
