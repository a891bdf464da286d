"""Orbax checkpoints of train state + data-iterator state + config, with corrupt-checkpoint fallback."""

import time

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint._src.metadata import array_metadata_store

from medjax import paths

# Replica-parallel saving splits each replicated array across its replicas, one eager slice (and
# one small compilation) per array and device; below this slice size it costs more than it saves,
# so a small array is written whole by one replica (figures: docs/results.md, test-suite time).
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _register_array_handler():
  """orbax's default jax.Array handler, with replica-parallel saving for large slices only."""
  ocp.type_handlers.register_type_handler(
    jax.Array,
    ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
      array_metadata_store=array_metadata_store.Store(),
    ),
    override=True,
  )


class Checkpointer:
  """Keep-last-N, atomic (orbax writes to a temporary directory and renames it, or on gs:// marks a
  finished step with commit_success.txt), optionally async. Every process writes its own array
  shards and its own data-iterator state (`process_<i>-of-<n>.json`)."""

  def __init__(self, directory, *, keep: int = 3, use_async: bool = True):
    _register_array_handler()
    self.directory = paths.resolve(directory)  # local or gs://; orbax needs absolute paths
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      enable_async_checkpointing=use_async,
      create=True,
      cleanup_tmp_directories=True,
    )
    self.manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "data", "config")
    )

  def save(self, step: int, state, data_iter=None, config=None, force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config.to_dict())
    return self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

  def wait(self):
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, data_iter=None):
    """Restores the newest readable checkpoint -> (state, step), or (None, None) if there is none.

    An unreadable checkpoint is moved aside to `<step>.corrupt-<time>` (not deleted) with a warning,
    and the previous one is tried.
    """
    for step in reversed(self.steps()):
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], step
      except Exception as e:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
        aside = self.directory / f"{step}.corrupt-{int(time.time())}"
        logging.warning(
          "Checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s and falling back "
          "to the previous checkpoint.",
          step,
          self.directory,
          type(e).__name__,
          str(e).splitlines()[0][:300] if str(e) else "",
          aside,
        )
        if jax.process_index() == 0:
          (self.directory / str(step)).rename(aside)
        self.manager.reload()
    return None, None

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
