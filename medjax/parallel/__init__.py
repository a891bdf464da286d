"""Device meshes, logical-axis sharding rules and sharded state creation."""

from medjax.parallel.mesh import MESH_AXES, initialize_distributed, make_mesh
from medjax.parallel.rules import RULE_PRESETS, logical_rules
from medjax.parallel.sharding import global_batch, shard_like_params, sharded_init

__all__ = [
  "MESH_AXES",
  "initialize_distributed",
  "make_mesh",
  "RULE_PRESETS",
  "logical_rules",
  "global_batch",
  "shard_like_params",
  "sharded_init",
]
