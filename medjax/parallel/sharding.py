"""Shardings for parameters, optimizer state and batches."""

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def strip_boxes(tree):
  """Removes logical-axis boxes without applying sharding constraints (works on abstract trees)."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  return jax.tree.map(
    lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree, is_leaf=is_box
  )


def param_shardings(boxed_params, mesh, rules):
  """NamedShardings (unboxed tree) for params carrying logical axis metadata."""
  specs = nn.get_partition_spec(boxed_params)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def shard_like_params(tx: optax.GradientTransformation, abstract_opt_state, params_sharding, mesh):
  """Optimizer-state shardings: param-shaped leaves follow their parameter, the rest is replicated."""
  replicated = NamedSharding(mesh, P())
  masked = lambda x: isinstance(x, optax.MaskedNode)  # state of frozen params (optim.freeze)
  return optax.tree_map_params(
    tx,
    lambda p, s: p if masked(p) else s,
    abstract_opt_state,
    params_sharding,
    transform_non_params=lambda _: replicated,
    is_leaf=masked,
  )


def sharded_init(init_fn, out_shardings, *args):
  """Runs `init_fn(*args)` under jit so every array is created directly in its sharding."""
  return jax.jit(init_fn, out_shardings=out_shardings)(*args)


def batch_sharding(mesh, ndim: int, sequence: bool = False):
  """Batch axis over (data, fsdp); optionally the second axis over `sequence`."""
  spec = [("data", "fsdp")] + [None] * (ndim - 1)
  if sequence and ndim > 1:
    spec[1] = "sequence"
  return NamedSharding(mesh, P(*spec))


def data_parallel_size(mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch(local_batch, mesh):
  """Per-host numpy batch -> global jax.Arrays sharded over the batch axes of `mesh`."""

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

  return jax.tree.map(put, local_batch)
