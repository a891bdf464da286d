"""Bidirectional pre-LN transformer pieces (ViT / SigLIP style): biased MHA, MLP, encoder, MAP head."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.attention import dot_product_attention
from medjax.nn.mlp import activation, dense


def layer_norm(eps, dtype, param_dtype, name):
  return nn.LayerNorm(
    eps,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


class _BiasedEinsum(nn.Module):
  """`einsum(spec, x, kernel) + bias` with the param layout of nn.DenseGeneral (kernel [in..., out...], bias
  [out...]) and Xavier-uniform init over the flattened in/out axes. Unlike DenseGeneral, its boxed
  init works under a mesh (DenseGeneral constrains the flat kernel with the full-rank axis names).
  `shape` entries of None take the input's last dimension; the first `n_in` axes are contracted.
  """

  spec: str
  shape: tuple
  axes: tuple
  n_in: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = tuple(x.shape[-1] if s is None else s for s in self.shape)
    n = len(shape)
    init = nn.initializers.variance_scaling(
      1.0,
      "fan_avg",
      "uniform",
      in_axis=tuple(range(self.n_in)),
      out_axis=tuple(range(self.n_in, n)),
    )
    kernel = self.param(
      "kernel", nn.with_logical_partitioning(init, self.axes), shape, self.param_dtype
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.n_in :]),
      shape[self.n_in :],
      self.param_dtype,
    )
    return jnp.einsum(self.spec, x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(
      self.dtype
    )


class MultiHeadAttention(nn.Module):
  """Biased multi-head attention: queries from x [B,T,E], keys/values from kv [B,S,E] (default x).

  mask: optional [B,1,T,S] bool (True = attend); None attends everywhere.
  """

  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _proj(self, name, head_dim):
    return _BiasedEinsum(
      "bte,ehd->bthd",
      (None, self.num_heads, head_dim),
      ("embed", "heads", "head_dim"),
      1,
      self.dtype,
      self.param_dtype,
      name=name,
    )

  @nn.compact
  def __call__(self, x, kv=None, mask=None):
    kv = x if kv is None else kv
    e = x.shape[-1]
    if e % self.num_heads:
      raise ValueError(f"num_heads: width {e} is not divisible by {self.num_heads} heads")
    hd = e // self.num_heads
    q, k, v = self._proj("q", hd)(x), self._proj("k", hd)(kv), self._proj("v", hd)(kv)
    q = nn.with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
    k = nn.with_logical_constraint(k, ("act_batch", "act_length", "act_heads", None))
    v = nn.with_logical_constraint(v, ("act_batch", "act_length", "act_heads", None))
    if mask is None:
      mask = jnp.ones((x.shape[0], 1, x.shape[1], kv.shape[1]), bool)
    out = dot_product_attention(q, k, v, mask, scale=hd**-0.5)
    return _BiasedEinsum(
      "bthd,hde->bte",
      (self.num_heads, hd, e),
      ("heads", "head_dim", "embed"),
      2,
      self.dtype,
      self.param_dtype,
      name="o",
    )(out)


class MLP(nn.Module):
  """fc2(act(fc1(x))) with biases."""

  hidden_dim: int
  act: str = "gelu_tanh"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.xavier_uniform()
    h = dense(self.hidden_dim, ("embed", "mlp"), "fc1", self.dtype, self.param_dtype, True, init)(x)
    h = nn.with_logical_constraint(activation(self.act)(h), ("act_batch", "act_length", "act_mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), "fc2", self.dtype, self.param_dtype, True, init)(h)


class EncoderBlock(nn.Module):
  """x + MHA(LN(x)); x + MLP(LN(x))."""

  num_heads: int
  mlp_dim: int
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    ln = lambda name: layer_norm(self.norm_eps, self.dtype, self.param_dtype, name)
    x = x + MultiHeadAttention(self.num_heads, self.dtype, self.param_dtype, name="attn")(
      ln("ln1")(x), mask=mask
    )
    x = x + MLP(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(ln("ln2")(x))
    return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))


class Encoder(nn.Module):
  """`depth` EncoderBlocks and a final LayerNorm; `remat` rematerialises each block."""

  depth: int
  num_heads: int
  mlp_dim: int
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    for i in range(self.depth):
      x = block(
        self.num_heads,
        self.mlp_dim,
        self.act,
        self.norm_eps,
        self.dtype,
        self.param_dtype,
        name=f"block_{i}",
      )(x, mask)
    return layer_norm(self.norm_eps, self.dtype, self.param_dtype, "final_norm")(x)


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over tokens [B,N,E] -> [B,E]."""

  num_heads: int
  mlp_dim: int
  act: str = "gelu_tanh"
  norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    e = x.shape[-1]
    probe = self.param(
      "probe",
      nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, None, "embed")),
      (1, 1, e),
      self.param_dtype,
    )
    probe = jnp.broadcast_to(probe.astype(self.dtype), (x.shape[0], 1, e))
    if mask is not None:
      mask = mask.astype(bool)[:, None, None, :]
    h = MultiHeadAttention(self.num_heads, self.dtype, self.param_dtype, name="attn")(
      probe, x, mask
    )
    ln = layer_norm(self.norm_eps, self.dtype, self.param_dtype, "ln")
    h = h + MLP(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(ln(h))
    return h[:, 0]
