"""IDDPM and rectified flow: closed forms, the bound of a perfect model, respacing and samplers.

IDDPM against an independent implementation (diffusers) is in test_diffusion_reference.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.diffusion import GaussianDiffusion, RectifiedFlow, cfg_model_fn, space_timesteps

SHAPE = (4, 2, 3, 3, 2)


def _x0(seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), SHAPE, minval=-1, maxval=1)


def _perfect_model(d, x0):
  """The exact eps of a point mass at x0, with the true posterior variance (v = -1)."""

  def fn(xt, model_t):
    t = jnp.searchsorted(jnp.asarray(d.timestep_map), model_t)
    eps = (xt - d._at(d.sqrt_alphas_cumprod, t, xt.ndim) * x0) / d._at(
      d.sqrt_one_minus_alphas_cumprod, t, xt.ndim
    )
    return jnp.concatenate([eps, -jnp.ones_like(eps)], -1)

  return fn


def test_q_sample_and_posterior_match_closed_forms():
  d = GaussianDiffusion.create(1000)
  betas = np.linspace(1e-4, 0.02, 1000)  # DDPM's linear schedule (Ho et al. 2020)
  acp = np.cumprod(1 - betas)
  x0, noise = _x0(0), jax.random.normal(jax.random.PRNGKey(1), SHAPE)
  t = jnp.array([0, 10, 500, 999])
  xt = jax.jit(d.q_sample)(x0, t, noise)
  a = acp[np.asarray(t)].reshape(-1, 1, 1, 1, 1)
  np.testing.assert_allclose(xt, np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, atol=1e-5)
  # Bayes: q(x_{t-1}|x_t,x0) ∝ N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) N(x_{t-1}; sqrt(acp_{t-1}) x0, 1 - acp_{t-1}).
  t = jnp.array([1, 10, 500, 999])
  tn = np.asarray(t)
  al, be, ap = (
    (1 - betas[tn]).reshape(-1, 1, 1, 1, 1),
    betas[tn].reshape(-1, 1, 1, 1, 1),
    acp[tn - 1].reshape(-1, 1, 1, 1, 1),
  )
  var = 1 / (al / be + 1 / (1 - ap))
  mean_ref = var * (np.sqrt(al) * np.asarray(xt) / be + np.sqrt(ap) * np.asarray(x0) / (1 - ap))
  mean, pvar, plogvar = jax.jit(d.q_posterior)(x0, xt, t)
  np.testing.assert_allclose(mean, mean_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(pvar, var, rtol=1e-4)
  np.testing.assert_allclose(plogvar, np.log(var), rtol=1e-4)


def test_vlb_of_perfect_model_is_small_and_of_wrong_model_is_not():
  d = GaussianDiffusion.create(1000)
  x0, noise = _x0(2), jax.random.normal(jax.random.PRNGKey(3), SHAPE)
  t = jnp.array([1, 50, 400, 999])
  perfect = _perfect_model(d, x0)
  losses = jax.jit(lambda model, *a: d.training_losses(model, *a), static_argnums=0)
  out = losses(perfect, x0, t, noise)
  assert float(jnp.max(out["vb"])) < 1e-6 and float(jnp.max(out["mse"])) < 1e-8
  wrong = lambda xt, mt: (
    perfect(xt, mt) + jnp.concatenate([0.3 * jnp.ones(SHAPE), jnp.ones(SHAPE)], -1)
  )
  bad = losses(wrong, x0, t, noise)
  assert float(jnp.min(bad["vb"])) > 3e-4 and float(jnp.min(bad["mse"])) > 0.08


def test_vb_term_trains_only_the_variance():
  d = GaussianDiffusion.create(100)
  x0, noise = _x0(4), jax.random.normal(jax.random.PRNGKey(5), SHAPE)
  t = jnp.array([3, 20, 50, 99])

  def vb_of(eps_scale, v):
    fn = lambda xt, mt: jnp.concatenate([eps_scale * xt, v * jnp.ones_like(xt)], -1)
    return jnp.sum(d.training_losses(fn, x0, t, noise)["vb"])

  g_eps, g_v = jax.jit(jax.grad(vb_of, argnums=(0, 1)))(0.5, 0.2)
  assert float(g_eps) == 0.0 and abs(float(g_v)) > 0


def test_respacing_keeps_alphas_cumprod():
  full = GaussianDiffusion.create(1000)
  for count in (100, 7, "ddim50"):
    d = full.respaced(count)
    np.testing.assert_allclose(d.alphas_cumprod, full.alphas_cumprod[d.timestep_map], rtol=1e-12)
  use = space_timesteps(1000, 100)
  assert len(use) == 100 and use[0] == 0 and use[-1] == 999
  with pytest.raises(ValueError, match="count"):
    space_timesteps(1000, 0)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_respaced_sampler_recovers_point_mass(method):
  d = GaussianDiffusion.create(1000, respace=25)
  x0 = _x0(6)
  x = jax.jit(lambda n, k: d.sample(_perfect_model(d, x0), n, k, method=method))(
    jax.random.normal(jax.random.PRNGKey(7), SHAPE), jax.random.PRNGKey(8)
  )
  np.testing.assert_allclose(x, x0, atol=2e-2)


def test_rectified_flow_loss_and_euler_sampler():
  rf = RectifiedFlow(sample_steps=10)
  x0, noise = _x0(9), jax.random.normal(jax.random.PRNGKey(10), SHAPE)
  t = rf.sample_timesteps(jax.random.PRNGKey(11), 4096)
  assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(jnp.mean(t)) - 0.5) < 0.02
  # P(|sigmoid(z) - .5| < .25) = P(|z| < log 3) = 0.728 for logit-normal (0.5 for uniform).
  assert abs(float(jnp.mean(jnp.abs(t - 0.5) < 0.25)) - 0.728) < 0.03
  perfect = lambda xt, mt: (xt - x0) / (mt / rf.num_timesteps).reshape(-1, 1, 1, 1, 1)
  assert (
    float(jnp.max(rf.training_losses(perfect, x0, jnp.array([0.1, 0.4, 0.7, 0.9]), noise)["loss"]))
    < 1e-8
  )
  np.testing.assert_allclose(rf.sample(perfect, noise), x0, atol=1e-5)
  # Clipping the data estimate changes nothing for data in [-1, 1]; data outside it lands on the bound.
  np.testing.assert_allclose(rf.sample(perfect, noise, clip_denoised=True), x0, atol=1e-5)
  far = jnp.full(SHAPE, 3.0)
  to_far = lambda xt, mt: (xt - far) / (mt / rf.num_timesteps).reshape(-1, 1, 1, 1, 1)
  np.testing.assert_allclose(rf.sample(to_far, noise), far, atol=1e-4)
  np.testing.assert_allclose(
    rf.sample(to_far, noise, clip_denoised=True), jnp.ones(SHAPE), atol=1e-5
  )


def test_cfg_guides_eps_and_keeps_conditional_variance():
  model = lambda x, t, c: jnp.concatenate([x * c[:, None], -c[:, None] * jnp.ones_like(x)], -1)
  fn = cfg_model_fn(model, 3.0, guided_channels=1)
  x, t = jnp.ones((2, 1)), jnp.zeros((2,))
  out = fn(x, t, jnp.array([2.0, 2.0]), jnp.array([1.0, 1.0]))
  np.testing.assert_allclose(out, [[4.0, -2.0]] * 2)  # 1 + 3 * (2 - 1); variance from cond


def test_frechet_distance_matches_scipy_sqrtm_reference():
  import scipy.linalg

  from medjax.eval.fvd import frechet_distance, fvd, gaussian_stats

  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
  c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
  np.testing.assert_allclose(frechet_distance(mu1, c1, mu2, c2), ref, rtol=1e-8)
  # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2.
  np.testing.assert_allclose(
    frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]), 4.0 + 1.0, rtol=1e-12
  )
  # FVD through a feature callable: same distribution ~0, a shifted one ~|shift|^2.
  x, y = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
  feat = lambda v: v.reshape(len(v), -1)
  assert fvd(x, y, feat) < 0.02 and abs(fvd(x, y + 2.0, feat) - 12.0) < 0.3
  with pytest.raises(ValueError, match="features"):
    gaussian_stats(np.zeros((1, 3)))
