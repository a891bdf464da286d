"""Reusable Flax linen layers shared by every model family."""

from medjax.nn.attention import (
  Attention,
  KVCache,
  PrefixedCache,
  attention_mask,
  dot_product_attention,
)
from medjax.nn.mlp import GatedMLP
from medjax.nn.norms import RMSNorm
from medjax.nn.rope import apply_rope, rope_frequencies

__all__ = [
  "Attention",
  "KVCache",
  "PrefixedCache",
  "attention_mask",
  "dot_product_attention",
  "GatedMLP",
  "RMSNorm",
  "apply_rope",
  "rope_frequencies",
]
