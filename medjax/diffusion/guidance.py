"""Classifier-free guidance: one batched model call on [cond; uncond] inputs."""

import jax
import jax.numpy as jnp


def cfg_model_fn(model_fn, scale: float, guided_channels: int | None = None):
  """Wraps `model_fn(x, t, cond) -> out` into `fn(x, t, cond, uncond)` with guidance `scale`.

  out = uncond + scale * (cond - uncond) on the first `guided_channels` output channels (the eps /
  velocity part; None: all); the remaining channels (a learned variance) are taken from the
  conditional branch, as in GLIDE / PixArt / Open-Sora. `cond`/`uncond` are pytrees with batch axis 0.
  """

  def fn(x, t, cond, uncond):
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], 0), cond, uncond)
    out = model_fn(jnp.concatenate([x, x], 0), jnp.concatenate([t, t], 0), both)
    c_out, u_out = jnp.split(out, 2, axis=0)
    k = out.shape[-1] if guided_channels is None else guided_channels
    guided = u_out[..., :k] + scale * (c_out[..., :k] - u_out[..., :k])
    return jnp.concatenate([guided, c_out[..., k:]], axis=-1)

  return fn
