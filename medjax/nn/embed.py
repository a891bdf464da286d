"""Token embedding table whose rows are sharded along the logical "vocab" axis."""

import flax.linen as nn
import jax.numpy as jnp


def token_embedding(
  vocab_size, width, std, name="embed", dtype=jnp.float32, param_dtype=jnp.float32
):
  """nn.Embed [vocab_size, width] initialised N(0, std^2), axes ("vocab", "embed")."""
  return nn.Embed(
    vocab_size,
    width,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
    embedding_init=nn.with_logical_partitioning(nn.initializers.normal(std), ("vocab", "embed")),
  )
