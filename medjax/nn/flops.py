"""Forward matmul FLOPs of the shared layers, the terms of the models' analytic training counts.

2 FLOPs per multiply-add, matmuls and attention only: embedding lookups, norms, activations, softmax
and other elementwise work are left out. A model's `train_flops` is 3 x its forward (fwd + bwd, no
rematerialisation: the MFU convention of `medjax.tasks.base.Task.flops_per_step`).
"""


def dense(tokens, d_in: int, d_out: int) -> float:
  """A [d_in, d_out] projection of `tokens` tokens."""
  return 2.0 * tokens * d_in * d_out


def attention(queries, keys, width: int, inner: int | None = None, kv_width: int | None = None):
  """One multi-head attention over one sequence: q and o projections of `queries` tokens (width <->
  inner = heads x head_dim, default width), k and v of `keys` tokens (kv_width -> inner, default
  width), and the scores and weighted values, 4 x inner per (query, key) pair."""
  inner = width if inner is None else inner
  kv_width = width if kv_width is None else kv_width
  return (
    4.0 * queries * width * inner + 4.0 * keys * kv_width * inner + 4.0 * queries * keys * inner
  )


def mlp(tokens, width: int, hidden: int, gated: bool = False) -> float:
  """up (and gate) and down projections of `tokens` tokens."""
  return (6.0 if gated else 4.0) * tokens * width * hidden


def encoder(tokens, width: int, mlp_dim: int, depth: int) -> float:
  """`depth` bidirectional self-attention + MLP blocks over one sequence of `tokens` tokens."""
  return depth * (attention(tokens, tokens, width) + mlp(tokens, width, mlp_dim))
