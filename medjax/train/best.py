"""Best-by-validation-loss params, early stopping, and warm starts from another run's best params."""

import json

import flax
import jax
import orbax.checkpoint as ocp

from medjax import paths

METRIC = "eval/loss"


class BestParams:
  """Keeps the params of the lowest `eval/loss` under `<directory>/params` and counts evaluations
  without improvement; `stop` turns true after `patience` of them (0: never). The record
  (`best.json`: step, loss, evaluations without improvement, stopped) survives a restart. The
  directory may be a cloud path (gs://...); process 0 writes the record, every process its shards
  of the params."""

  def __init__(self, directory: str, patience: int = 0):
    if patience < 0:
      raise ValueError(f"train.early_stop_patience: expected >= 0 (0: off), got {patience}")
    self.directory, self.patience = paths.resolve(directory), patience
    self.record = {"step": None, "loss": float("inf"), "bad_evals": 0, "stopped": False}
    if self._json.exists():
      self.record.update(json.loads(self._json.read_text()))

  @property
  def _json(self):
    return self.directory / "best.json"

  @property
  def stop(self) -> bool:
    return self.record["stopped"]

  def update(self, step: int, loss: float, params) -> bool:
    """Records an evaluation; saves `params` if `loss` is the lowest so far. Returns True when improved."""
    improved = loss < self.record["loss"]
    if improved:
      ckptr = ocp.StandardCheckpointer()
      ckptr.save(self.directory / "params", params, force=True)
      ckptr.wait_until_finished()
      self.record.update(step=step, loss=float(loss), bad_evals=0)
    else:
      self.record["bad_evals"] += 1
    self.record["stopped"] = bool(self.patience and self.record["bad_evals"] >= self.patience)
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      self._json.write_text(json.dumps(self.record))
    return improved


def load_params(directory: str, params):
  """`params` with every leaf that `directory` (a BestParams directory) holds replaced by the saved one.

  Leaves the saved tree lacks (e.g. LoRA adapters added in this stage) keep their values; a saved
  leaf the model lacks, or of another shape, is an error. Returns (params, number of leaves loaded).
  """
  path = paths.resolve(directory) / "params"
  if not path.is_dir():
    raise FileNotFoundError(
      f"train.init_from: expected best params at {path} (written by a run with eval), found none"
    )
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(path).item_metadata
  saved = flax.traverse_util.flatten_dict(getattr(meta, "tree", meta), sep="/")
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  missing = sorted(set(saved) - set(flat))
  if missing:
    raise ValueError(
      f"train.init_from: {len(missing)} saved params are not in this model, e.g. {missing[:3]}"
    )
  for k, m in saved.items():
    if tuple(m.shape) != tuple(flat[k].shape):
      raise ValueError(
        f"train.init_from: param {k}: expected shape {tuple(flat[k].shape)}, got {tuple(m.shape)}"
      )
  target = flax.traverse_util.unflatten_dict(
    {
      k: jax.ShapeDtypeStruct(flat[k].shape, flat[k].dtype, sharding=flat[k].sharding)
      for k in saved
    },
    sep="/",
  )
  loaded = flax.traverse_util.flatten_dict(ckptr.restore(path, target), sep="/")
  return flax.traverse_util.unflatten_dict({**flat, **loaded}, sep="/"), len(loaded)
