"""Reusable Flax linen layers shared by every model family."""

from medjax.nn.attention import (
  Attention,
  KVCache,
  PrefixedCache,
  attention_mask,
  dot_product_attention,
)
from medjax.nn.dtypes import DTYPES
from medjax.nn.mlp import MLP
from medjax.nn.norms import RMSNorm, layer_norm
from medjax.nn.rope import apply_rope, rope_frequencies

__all__ = [
  "Attention",
  "KVCache",
  "PrefixedCache",
  "attention_mask",
  "dot_product_attention",
  "DTYPES",
  "MLP",
  "RMSNorm",
  "layer_norm",
  "apply_rope",
  "rope_frequencies",
]
