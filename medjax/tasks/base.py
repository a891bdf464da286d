"""The contract between a model family and the one training loop (`medjax.train.loop`)."""

import abc
from collections.abc import Sequence

import numpy as np

from medjax.data import pipeline


class Task(abc.ABC):
  """A model family plugs into `medjax.train.loop.train` by subclassing this.

  Batches are dicts of numpy arrays with a leading per-host batch axis. `loss` and
  `eval_metrics` are traced inside jit; everything else runs on the host.

  Data: a task names a random-access `source(split)` of records for "train" and "validation" and
  an `encode(record)` -> dict of numpy arrays (one batch row). `train_data` / `eval_data` build
  every family's batches from them with `medjax.data.pipeline.dataset`, which alone shuffles,
  repeats, shards each global batch over hosts, batches and prefetches, so the global batch never
  depends on the host count and every task's iterator checkpoints (get_state / set_state).
  Generated sources draw their records from the config (e.g. `config.seed`); the `seed` of
  `train_data` orders them.
  """

  # Batch entries that carry the non-text input (series, image, volume, video, caption). The
  # input-ablation control (`ablate`, `train.eval_ablation`) rolls them by one along the batch axis,
  # so every example is scored with another example's input; a model that reads its input falls
  # towards chance there, one that ignores it does not.
  ablation_keys: tuple[str, ...] = ()

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

  def init_slots(self) -> dict:
    """Param subtrees that public weights may initialise (`config.init.<slot>`, see
    `medjax.checkpoints.init`): {slot: (path in the param tree, the subtree's module config)}."""
    return {}

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
  def source(self, split: str) -> Sequence | None:
    """Random-access records of `split` ("train" or "validation"); None: no such split."""

  @abc.abstractmethod
  def encode(self, record) -> dict:
    """A record of `source` -> dict of numpy arrays (one batch row, without the batch axis)."""

  def _data(self, split, **kw):
    source = self.source(split)
    if source is None:
      return None
    return pipeline.dataset(source, self.encode, **kw)

  def train_data(self, *, batch_size: int, seed: int, shard_index: int, shard_count: int):
    """Per-host training batches, shuffled from `seed` and repeated forever: a grain IterDataset
    whose iterator supports get_state()/set_state()."""
    return self._data(
      "train",
      batch_size=batch_size,
      seed=seed,
      shuffle=True,
      num_epochs=None,
      shard_index=shard_index,
      shard_count=shard_count,
    )

  def eval_data(self, *, batch_size: int, shard_index: int, shard_count: int):
    """Per-host eval batches: one pass over "validation" in order, the same number of batches on
    every host (a last partial global batch is dropped); None without a validation source."""
    return self._data(
      "validation",
      batch_size=batch_size,
      shuffle=False,
      num_epochs=1,
      shard_index=shard_index,
      shard_count=shard_count,
    )

  def ablation_groups(self) -> dict[str, tuple[str, ...]]:
    """{name: keys} of the controls `train.eval_ablation` runs: "" rolls every ablation key
    (`eval_ablated/...`); a task with several inputs adds one group per input alone
    (`eval_ablated_<name>/...`: which input the model reads)."""
    return {"": tuple(self.ablation_keys)}

  def ablate(self, batch: dict, keys=True) -> dict:
    """`batch` with its `keys` entries (True: the `ablation_keys`) rolled by one example along the
    batch axis."""
    keys = tuple(self.ablation_keys) if keys is True else tuple(keys)
    missing = [k for k in keys if k not in batch]
    if missing:
      raise KeyError(f"ablation_keys: {missing} not in the batch (keys: {sorted(batch)})")
    return {k: np.roll(v, 1, axis=0) if k in keys else v for k, v in batch.items()}

  def evaluate(self, model, params, ablate: bool = False) -> dict:
    """Heavier host-side evaluation (e.g. generation accuracy) run at eval time; {name: float}.

    With `ablate` (True or the keys of one of `ablation_groups`), the same evaluation on inputs
    passed through `self.ablate`.
    """
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
