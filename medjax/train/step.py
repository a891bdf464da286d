"""The jit-compiled train and eval steps shared by every task."""

import jax
import jax.numpy as jnp
import optax


def _microbatches(batch, n: int):
  """[B, ...] -> [n, B/n, ...] taking strided rows, so each microbatch stays spread over the mesh."""

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"train.grad_accum: batch size {x.shape[0]} is not divisible by {n}")
    return x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)

  return jax.tree.map(split, batch)


def make_train_step(
  task, model, tx, schedule=None, grad_accum: int = 1, ema_decay: float = 0.0, trainable=None
):
  """(state, batch) -> (state, metrics); gradients averaged over `grad_accum` microbatches.

  `trainable` (a tree of bools like the params, `optim.trainable_mask`; None: all): frozen
  parameters' gradients are zeros, so XLA drops their weight-gradient matmuls (a frozen base LM's
  or text encoder's), and `train/grad_norm` is the trainable parameters' norm, the one gradient
  clipping sees.
  """

  def grads_of(params, batch, rng, step):
    fn = lambda p: task.loss(model, p, batch, rng, step)
    (loss, metrics), grads = jax.value_and_grad(fn, has_aux=True)(params)
    if trainable is not None:
      grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
    return loss, metrics, grads

  def step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    if grad_accum == 1:
      loss, metrics, grads = grads_of(state.params, batch, rng, state.step)
    else:

      def body(carry, xs):
        mb, i = xs
        loss, metrics, grads = grads_of(state.params, mb, jax.random.fold_in(rng, i), state.step)
        return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

      first = jax.tree.map(lambda x: x[0], _microbatches(batch, grad_accum))
      shapes = jax.eval_shape(grads_of, state.params, first, rng, state.step)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      total, _ = jax.lax.scan(
        body, zeros, (_microbatches(batch, grad_accum), jnp.arange(grad_accum))
      )
      loss, metrics, grads = jax.tree.map(lambda x: x / grad_accum, total)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    metrics = {
      "train/loss": loss,
      **{f"train/{k}": v for k, v in metrics.items()},
      "train/grad_norm": optax.global_norm(grads),
      "train/param_norm": optax.global_norm(params),
    }
    if schedule is not None:
      metrics["train/lr"] = schedule(state.step)
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema
    )
    return new_state, metrics

  return step


def make_eval_step(task, model):
  """(params, batch) -> {name: (sum, count)}."""

  def eval_step(params, batch):
    return task.eval_metrics(model, params, batch)

  return eval_step
