"""BERT-family text encoder (BiomedBERT, PubMedBERT, CXR-BERT): post-LN blocks from nn/ layers.

word + learned position + token-type embeddings -> LayerNorm -> `depth` blocks of
LN(x + MHA(x)), LN(x + MLP(x)) with biased attention and an exact-GELU MLP. Pad id 0 is masked as a
key; the output is every position's hidden state and their mean over real tokens (or the [CLS]
state). Hugging Face checkpoints load with `medjax.checkpoints.hf_bert`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.nn.dtypes import DTYPES
from medjax.nn.embed import token_embedding
from medjax.nn.norms import layer_norm
from medjax.nn.transformer import vit_attention, vit_mlp

POOLS = ("mean", "cls")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture of a BERT encoder (HF `BertConfig` names in `hf_bert`); `kind` tags the section."""

  kind: str = "bert"
  vocab_size: int = 30_522
  width: int = 768  # hidden_size
  depth: int = 12  # num_hidden_layers
  heads: int = 12  # num_attention_heads
  mlp_dim: int = 3072  # intermediate_size
  max_len: int = 512  # max_position_embeddings
  type_vocab_size: int = 2
  act: str = "gelu"
  norm_eps: float = 1e-12
  pool: str = "mean"  # mean over real tokens | cls (the first position)
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.kind != "bert":
      raise ValueError(f"kind: expected 'bert', got {self.kind!r}")
    if self.pool not in POOLS:
      raise ValueError(f"pool: expected one of {list(POOLS)}, got {self.pool!r}")
    if self.width % self.heads:
      raise ValueError(f"width: expected a multiple of heads ({self.heads}), got {self.width}")


class BertLayer(nn.Module):
  """Post-LN: x = LN(x + MHA(x)); x = LN(x + MLP(x))."""

  heads: int
  mlp_dim: int
  act: str
  norm_eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    ln = lambda name: layer_norm(name, self.norm_eps, self.dtype, self.param_dtype)
    x = ln("ln_attn")(
      x + vit_attention(self.heads, self.dtype, self.param_dtype, "attn")(x, mask=mask)
    )
    x = ln("ln_mlp")(x + vit_mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype)(x))
    return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))


class Bert(nn.Module):
  """tokens [..., T] (0 = pad; token type 0) -> {"tokens": [..., T, width], "pooled": [..., width]}."""

  cfg: BertConfig

  @nn.compact
  def __call__(self, tokens):
    cfg = self.cfg
    d, pd = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
    if tokens.shape[-1] > cfg.max_len:
      raise ValueError(
        f"tokens: expected at most {cfg.max_len} tokens (text.max_len), got {tokens.shape[-1]}"
      )
    lead, t = tokens.shape[:-1], tokens.shape[-1]
    tokens = tokens.reshape(-1, t)
    table = lambda name, rows: self.param(
      name,
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (rows, cfg.width),
      pd,
    )
    x = token_embedding(cfg.vocab_size, cfg.width, 0.02, dtype=d, param_dtype=pd)(tokens)
    x = x + table("pos_embedding", cfg.max_len)[:t].astype(d)
    x = x + table("type_embedding", cfg.type_vocab_size)[0].astype(d)
    x = layer_norm("embed_norm", cfg.norm_eps, d, pd)(x)
    valid = tokens != 0
    # Real tokens attend to real tokens; a pad query also sees itself (no empty softmax row).
    mask = valid[:, None, None, :] | jnp.eye(t, dtype=bool)[None, None]
    for i in range(cfg.depth):
      x = BertLayer(cfg.heads, cfg.mlp_dim, cfg.act, cfg.norm_eps, d, pd, name=f"layer_{i}")(
        x, mask
      )
    if cfg.pool == "cls":
      pooled = x[:, 0]
    else:
      w = valid.astype(x.dtype)[..., None]
      pooled = jnp.sum(x * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
    return {
      "tokens": x.reshape(lead + (t, cfg.width)),
      "pooled": pooled.reshape(lead + (cfg.width,)),
    }
