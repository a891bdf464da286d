"""The contract between a model family and the one training loop (`medjax.train.loop`)."""

import abc

import numpy as np


class Task(abc.ABC):
  """A model family plugs into `medjax.train.loop.train` by subclassing this.

  Batches are dicts of numpy arrays with a leading per-host batch axis. `loss` and
  `eval_metrics` are traced inside jit; everything else runs on the host.
  """

  def __init__(self, config):
    self.config = config

  @abc.abstractmethod
  def build_model(self):
    """The flax module."""

  @abc.abstractmethod
  def dummy_batch(self, batch_size: int) -> dict:
    """A batch with the real shapes/dtypes (used for init and AOT compilation)."""

  def init_params(self, model, rng, batch):
    """Boxed params (carrying logical axis names)."""
    return model.init(rng, **self.model_inputs(batch))["params"]

  def model_inputs(self, batch) -> dict:
    """Keyword arguments of the model's __call__ taken from a batch."""
    return batch

  @abc.abstractmethod
  def loss(self, model, params, batch, rng, step):
    """-> (scalar loss, dict of scalar metrics); `step` is the (traced) optimizer step."""

  def eval_metrics(self, model, params, batch) -> dict:
    """-> {name: (sum, count)}; averaged over the eval set as sum(sum) / sum(count)."""
    loss, metrics = self.loss(model, params, batch, None, None)
    return {"loss": (loss, 1.0), **{k: (v, 1.0) for k, v in metrics.items()}}

  @abc.abstractmethod
  def train_data(self, *, batch_size: int, seed: int, shard_index: int, shard_count: int):
    """An iterator of per-host batches supporting get_state()/set_state() (a grain DatasetIterator)."""

  def eval_data(self, *, batch_size: int, shard_index: int, shard_count: int):
    """A finite iterable of per-host eval batches, or None."""
    return None

  def evaluate(self, model, params) -> dict:
    """Heavier host-side evaluation (e.g. generation accuracy) run at eval time; {name: float}."""
    return {}

  def count_tokens(self, batch) -> int:
    """Tokens per (global) batch, for tokens/s; default: elements of the first 2-D array."""
    for v in batch.values():
      if np.ndim(v) >= 2:
        return int(np.prod(np.shape(v)[:2]))
    return 0

  def flops_per_step(self, model, batch, num_params: int) -> float | None:
    """Analytic training FLOPs of one step on the (global) `batch`, or None (then XLA's count is used).

    Families with a formula (`train_flops` beside the model) override this; fwd + bwd = 3x fwd, no
    rematerialisation (the MFU convention).
    """
    return None
