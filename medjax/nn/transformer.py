"""Bidirectional pre-LN transformer encoder and MAP head (ViT / SigLIP layout) from nn/ layers."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.attention import Attention
from medjax.nn.mlp import MLP
from medjax.nn.norms import layer_norm


def vit_attention(num_heads, dtype, param_dtype, name):
  """Biased, Xavier-initialised attention (the ViT / SigLIP layout)."""
  return Attention(
    num_heads,
    use_bias=True,
    kernel_init="xavier",
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


def vit_mlp(hidden_dim, act, dtype, param_dtype, name="mlp"):
  """up -> act -> down with biases and Xavier init (the ViT / SigLIP layout)."""
  return MLP(
    hidden_dim,
    act,
    use_bias=True,
    kernel_init=nn.initializers.xavier_uniform(),
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


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
    ln = lambda name: layer_norm(name, self.norm_eps, self.dtype, self.param_dtype)
    x = x + vit_attention(self.num_heads, self.dtype, self.param_dtype, "attn")(
      ln("ln1")(x), mask=mask
    )
    x = x + vit_mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype)(ln("ln2")(x))
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
    return layer_norm("final_norm", self.norm_eps, self.dtype, self.param_dtype)(x)


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
    h = vit_attention(self.num_heads, self.dtype, self.param_dtype, "attn")(probe, x, mask)
    ln = layer_norm("ln", self.norm_eps, self.dtype, self.param_dtype)
    h = h + vit_mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype)(ln(h))
    return h[:, 0]
