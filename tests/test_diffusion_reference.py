"""IDDPM (`medjax.diffusion.gaussian`) against diffusers' DDPM and DDIM schedulers.

diffusers is an independent implementation: every reference here comes from its scheduler state,
`_get_variance` and `step`, or from the published formulas (Ho et al. 2020; Nichol & Dhariwal 2021),
never from medjax's schedule, respacing or sampler code. Settings that make diffusers IDDPM:
`beta_schedule="linear"` (1e-4..0.02, scaled by 1000 / T as in IDDPM), `variance_type=
"learned_range"`, `clip_sample=False`; medjax `respace=N` is `timestep_spacing="linspace"` and
`respace="ddimN"` is `timestep_spacing="leading"` (the DDIM scheduler steps by T // N, so only
"leading" spacing matches it). diffusers' DDPM `step` takes the previous timestep from the spaced
list and its beta from the kept alphas_cumprod, as IDDPM's respacing does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference schedulers are diffusers' (torch)")
diffusers = pytest.importorskip("diffusers", reason="the reference schedulers are diffusers'")

from diffusers.schedulers import scheduling_ddpm  # noqa: E402

from medjax.diffusion import GaussianDiffusion, space_timesteps  # noqa: E402

SHAPE = (4, 2, 3, 3, 2)  # [B, T, H, W, C] here; diffusers takes channels on axis 1
F64 = torch.float64


def _float64(s):
  """diffusers keeps its schedule in float32, where 1 - alphas_cumprod near t = 0 keeps ~3 digits:
  redo its cumprod in float64 from its own betas (its float32 betas are within 1e-7 of exact)."""
  s.betas = s.betas.to(F64)
  s.alphas = 1.0 - s.betas
  s.alphas_cumprod = torch.cumprod(s.alphas, 0)
  s.one = torch.tensor(1.0, dtype=F64)
  if hasattr(s, "final_alpha_cumprod"):
    s.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
  return s


def _ddpm(respace=None, **kw):
  """diffusers' DDPM scheduler set up as IDDPM's linear 1000-step chain, optionally respaced."""
  cfg = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False)
  cfg.update(variance_type="learned_range", prediction_type="epsilon")
  cfg.update(kw)
  if isinstance(respace, str):  # "ddimN"
    cfg["timestep_spacing"], respace = "leading", int(respace[4:])
  elif respace is not None:
    cfg["timestep_spacing"] = "linspace"
  s = _float64(diffusers.DDPMScheduler(num_train_timesteps=1000, **cfg))
  if respace is not None:
    s.set_timesteps(respace)
  return s


def _timesteps(s):
  """The scheduler's timesteps in increasing order (chain index i -> original timestep)."""
  return sorted(int(t) for t in s.timesteps)


def _pt(x):
  """medjax channels-last array -> float64 torch tensor with channels on axis 1."""
  return torch.from_numpy(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())


def _np(x):
  return np.moveaxis(x.numpy(), 1, -1)


def _rand(seed, shape=SHAPE, lo=-1.0, hi=1.0):
  return np.random.default_rng(seed).uniform(lo, hi, shape)


def _patch_noise(monkeypatch, holder):
  """diffusers' DDPM step draws its noise from randn_tensor; give it holder[0] instead."""
  monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, **kw: holder[0])


def test_linear_and_cosine_schedules_match_diffusers():
  s = diffusers.DDPMScheduler(1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
  d = GaussianDiffusion.create(1000)
  np.testing.assert_allclose(d.betas, s.betas.numpy(), rtol=1e-6)  # float32 there
  np.testing.assert_allclose(d.alphas_cumprod, s.alphas_cumprod.numpy(), rtol=2e-6)
  # IDDPM scales the linear schedule by 1000 / T so other lengths span the same noise range.
  for n in (100, 4000):
    s = diffusers.DDPMScheduler(n, beta_start=0.1 / n, beta_end=20.0 / n, beta_schedule="linear")
    d = GaussianDiffusion.create(n)
    np.testing.assert_allclose(d.betas, s.betas.numpy(), rtol=1e-6)
    np.testing.assert_allclose(d.alphas_cumprod, s.alphas_cumprod.numpy(), rtol=2e-6)
  s = diffusers.DDPMScheduler(1000, beta_schedule="squaredcos_cap_v2")  # IDDPM's cosine
  np.testing.assert_allclose(GaussianDiffusion.create(1000, "cosine").betas, s.betas, rtol=1e-6)


def test_space_timesteps_matches_diffusers_spacing():
  for n in (2, 3, 7, 25, 50, 100, 999, 1000):
    s = diffusers.DDPMScheduler(1000, timestep_spacing="linspace")
    s.set_timesteps(n)
    assert space_timesteps(1000, n) == _timesteps(s), n
  for n in (1, 7, 30, 50, 100, 1000):
    s = diffusers.DDPMScheduler(1000, timestep_spacing="leading")
    s.set_timesteps(n)
    assert space_timesteps(1000, f"ddim{n}") == _timesteps(s), n
  s = diffusers.DDPMScheduler(1000, timestep_spacing="trailing")  # ends at 999, starts at 19
  s.set_timesteps(50)
  assert space_timesteps(1000, "ddim50") != _timesteps(s) != space_timesteps(1000, 50)


@pytest.mark.parametrize("respace", [None, 50, "ddim50"])
def test_posterior_variance_and_respaced_betas_match_diffusers(respace):
  d = GaussianDiffusion.create(1000, respace=respace)
  s = _ddpm(respace)
  ts = _timesteps(s) if respace is not None else list(range(1000))
  assert list(d.timestep_map) == ts
  np.testing.assert_allclose(d.alphas_cumprod, s.alphas_cumprod[ts].numpy(), rtol=1e-6)
  # IDDPM respacing keeps alphas_cumprod at the kept steps and recomputes beta from it; diffusers'
  # step does the same through its previous timestep ("fixed_large" returns that beta).
  beta = np.array([s._get_variance(t, variance_type="fixed_large").item() for t in ts])
  var = np.array([s._get_variance(t, variance_type="fixed_small").item() for t in ts])
  np.testing.assert_allclose(d.betas, beta, rtol=1e-6)
  np.testing.assert_allclose(d.posterior_variance[1:], var[1:], rtol=1e-6)
  np.testing.assert_allclose(d.posterior_log_variance_clipped[1:], np.log(var[1:]), rtol=1e-6)
  # By design the t = 0 posterior variance is 0: IDDPM clips its log to the t = 1 value, diffusers
  # clamps the variance at 1e-20.
  assert d.posterior_variance[0] == 0.0 and var[0] == pytest.approx(1e-20)
  np.testing.assert_allclose(d.posterior_log_variance_clipped[0], np.log(var[1]), rtol=1e-6)


def test_q_sample_and_posterior_mean_match_diffusers(monkeypatch):
  d = GaussianDiffusion.create(1000)
  s = _ddpm(variance_type="fixed_small", prediction_type="sample")
  x0, noise = _rand(0), np.random.default_rng(1).normal(size=SHAPE)
  ts = [1, 10, 500, 999]
  xt = np.asarray(
    d.q_sample(jnp.asarray(x0, jnp.float32), jnp.array(ts), jnp.asarray(noise, jnp.float32))
  )
  ref = s.add_noise(_pt(x0), _pt(noise), torch.tensor(ts))
  np.testing.assert_allclose(xt, _np(ref), rtol=1e-5, atol=1e-6)
  # The posterior mean is diffusers' step for a model that predicts x0 exactly, without noise.
  _patch_noise(monkeypatch, [torch.zeros((), dtype=F64)])
  mean, _, _ = d.q_posterior(jnp.asarray(x0, jnp.float32), jnp.asarray(xt), jnp.array(ts))
  for b, t in enumerate(ts):
    x0b, xtb = _pt(x0[b : b + 1]), _pt(xt[b : b + 1])
    ref = s.step(x0b, t, xtb).prev_sample
    np.testing.assert_allclose(mean[b : b + 1], _np(ref), rtol=1e-5, atol=1e-6)


def _learned_log_variance(s, ts, i, v):
  """Learned-range log variance at chain index i from diffusers, v [B, C, ...] in [-1, 1]."""
  if i > 0:
    return s._get_variance(ts[i], predicted_variance=v)
  # By design at t = 0 IDDPM interpolates from the clipped log posterior variance (the next step's)
  # where diffusers uses log(1e-20): Nichol & Dhariwal eq. 15 on diffusers' state.
  frac = (v + 1) / 2
  max_log = torch.log(s._get_variance(ts[0], variance_type="fixed_large"))
  min_log = torch.log(s._get_variance(ts[1], variance_type="fixed_small"))
  return frac * max_log + (1 - frac) * min_log


@pytest.mark.parametrize("respace", [None, 50, "ddim50"])
def test_learned_range_step_matches_diffusers(respace, monkeypatch):
  """One DDPM step with learned-range variance: mean, x0 estimate and log variance, chain index i."""
  d = GaussianDiffusion.create(1000, respace=respace)
  s = _ddpm(respace)
  ts = _timesteps(s) if respace is not None else list(range(1000))
  x, eps, v = _rand(2), np.random.default_rng(3).normal(size=SHAPE), _rand(4)
  out = jnp.asarray(np.concatenate([eps, v], -1), jnp.float32)
  _patch_noise(monkeypatch, [torch.zeros((), dtype=F64)])
  p_fn = jax.jit(lambda o, x, t: d.p_mean_variance(o, x, t))
  for i in (0, 1, 2, len(ts) // 2, len(ts) - 1):
    p = p_fn(out, jnp.asarray(x, jnp.float32), jnp.full((SHAPE[0],), i))
    step = s.step(_pt(np.concatenate([eps, v], -1)), ts[i], _pt(x))  # noise zeroed: the mean
    np.testing.assert_allclose(p["mean"], _np(step.prev_sample), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p["pred_x0"], _np(step.pred_original_sample), rtol=1e-5, atol=1e-5)
    ref = _learned_log_variance(s, ts, i, _pt(v))
    np.testing.assert_allclose(p["log_variance"], _np(ref), rtol=1e-5, atol=1e-6)


def _toy_model(xp, x, t):
  """A fixed eps / variance model of x and the (original) timestep, for numpy or jax.numpy."""
  t = xp.reshape(t, (-1,) + (1,) * (x.ndim - 1)) / 1000.0
  return xp.concatenate([0.5 * xp.tanh(x) + 0.2 * t, xp.sin(2 * x + t)], -1)


@pytest.mark.parametrize(
  "respace,method,eta", [(50, "ddpm", 0.0), ("ddim50", "ddim", 0.0), ("ddim50", "ddim", 1.0)]
)
def test_respaced_chain_matches_diffusers_loop(respace, method, eta, monkeypatch):
  """medjax's whole respaced sampler against diffusers' loop with the same model and noise."""
  d = GaussianDiffusion.create(1000, respace=respace)
  noise, rng = np.random.default_rng(5).normal(size=SHAPE), jax.random.PRNGKey(6)
  model = lambda x, t: _toy_model(jnp, x, t)
  got = jax.jit(lambda n, k: d.sample(model, n, k, method=method, eta=eta))(
    jnp.asarray(noise, jnp.float32), rng
  )
  # The sampler draws step j's noise (j = 0 at the noisiest step) from split(rng, steps)[j].
  keys = jax.random.split(rng, d.num_timesteps)
  zs = [_pt(z) for z in jax.vmap(lambda k: jax.random.normal(k, SHAPE, jnp.float32))(keys)]
  if method == "ddpm":
    s, held = _ddpm(respace), [None]
    _patch_noise(monkeypatch, held)
  else:  # DDIM's own scheduler; "ddimN" is its "leading" spacing.
    cfg = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False)
    s = _float64(diffusers.DDIMScheduler(1000, timestep_spacing="leading", **cfg))
    s.set_timesteps(int(respace[4:]))
  x = _pt(noise)
  for j, t in enumerate(s.timesteps):
    out = _pt(_toy_model(np, _np(x), np.full(SHAPE[0], int(t), np.float64)))
    if method == "ddpm":
      held[0] = zs[j]
      x = s.step(out, int(t), x).prev_sample
    else:
      x = s.step(out[:, : SHAPE[-1]], int(t), x, eta=eta, variance_noise=zs[j]).prev_sample
  np.testing.assert_allclose(got, _np(x), rtol=1e-5, atol=1e-5)


def test_vb_term_matches_kl_and_decoder_nll_on_diffusers_posteriors(monkeypatch):
  """vb_terms of an arbitrary model: the KL (t > 0) and the discretised Gaussian decoder NLL (t = 0,
  exact normal cdf) in bits/dim, of q(x_{t-1} | x_t, x0) and p(x_{t-1} | x_t) from diffusers."""
  import scipy.stats

  d = GaussianDiffusion.create(1000)
  s, q = _ddpm(), _ddpm(variance_type="fixed_small", prediction_type="sample")
  _patch_noise(monkeypatch, [torch.zeros((), dtype=F64)])
  x0, noise = _rand(12), np.random.default_rng(13).normal(size=SHAPE)
  out = np.concatenate([_rand(14), _rand(15)], -1)
  ts = [0, 3, 250, 999]
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  vb = jax.jit(lambda o, x, n, t: d.vb_terms(o, x, d.q_sample(x, t, n), t))(
    f32(out), f32(x0), f32(noise), jnp.array(ts)
  )
  xt = s.add_noise(_pt(x0), _pt(noise), torch.tensor(ts))
  for b, t in enumerate(ts):
    x0b, xtb, ob = _pt(x0[b : b + 1]), xt[b : b + 1], _pt(out[b : b + 1])
    mean = s.step(ob, t, xtb).prev_sample.numpy()
    log_var = _learned_log_variance(s, list(range(1000)), t, ob[:, SHAPE[-1] :]).numpy()
    if t == 0:
      std, x = np.exp(0.5 * log_var), x0b.numpy()
      exact = lambda y: scipy.stats.norm.cdf((y - mean) / std)
      ref = -np.mean(np.log(exact(x + 1 / 255) - exact(x - 1 / 255))) / np.log(2)
      np.testing.assert_allclose(vb[b], ref, rtol=2e-3)
      # IDDPM's published decoder uses a tanh approximation of the normal cdf (from Ho et al.'s code).
      z = lambda y: (y - mean) / std
      approx = lambda y: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z(y) + 0.044715 * z(y) ** 3)))
      ref = -np.mean(np.log(approx(x + 1 / 255) - approx(x - 1 / 255))) / np.log(2)
      np.testing.assert_allclose(vb[b], ref, rtol=1e-5)
    else:
      true_mean = q.step(x0b, t, xtb).prev_sample.numpy()
      true_log_var = np.log(q._get_variance(t).item())
      kl = 0.5 * (
        -1
        + log_var
        - true_log_var
        + np.exp(true_log_var - log_var)
        + (true_mean - mean) ** 2 / np.exp(log_var)
      )
      np.testing.assert_allclose(vb[b], np.mean(kl) / np.log(2), rtol=2e-3)
