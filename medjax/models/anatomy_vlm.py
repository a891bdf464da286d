"""Anatomy-VLM (arXiv 2511.08402): anatomy queries over ViT tokens, frozen knowledge text encoder.

images [B,H,W,C] -> ViT patch tokens -> M learnable anatomy queries refined by decoder layers
(self-attention among queries, cross-attention to the patch tokens, MLP) -> per query a box
(cxcywh in [0, 1]), region-identity logits and a region embedding (projection of [pooled image
token ; query token]); the pooled token gives the image embedding. Text (phrases, disease prompts)
goes through a frozen transformer encoder (mean over valid tokens, gradient stopped; freeze its
parameters in the optimizer with the pattern `FROZEN_TEXT`) and a trained linear projection into the
same unit-norm space.

The text encoder is a real transformer whose weights are frozen, as in the paper: at paper size a
BERT-family encoder (`text.kind="bert"`, `medjax.models.bert`) loaded from a medical BERT checkpoint
(`--config.init.text=hf:DIR`); in the tiny variant word embeddings + sin-cos positions +
bidirectional encoder blocks, mean-pooled, with its deterministic random initialisation:
a frozen random transformer still maps phrases sharing words to nearby features, which is what lets
descriptions of held-out findings ("a large round dense spot") land near what the seen findings'
descriptions taught the trained projection.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import vit
from medjax.models.bert import Bert, BertConfig
from medjax.models.vit import ViT, ViTConfig
from medjax.nn import flops
from medjax.nn.dtypes import DTYPES
from medjax.nn.embed import token_embedding
from medjax.nn.mlp import dense
from medjax.nn.norms import layer_norm
from medjax.nn.patch import sincos_2d
from medjax.nn.transformer import Encoder, vit_attention, vit_mlp

FROZEN_TEXT = "^text_encoder/"


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
  """A bidirectional transformer over word-piece tokens (pad id 0), mean-pooled."""

  kind: str = "sincos"  # the section's tag (BertConfig: "bert")
  vocab_size: int = 128
  width: int = 64
  depth: int = 1
  heads: int = 4
  mlp_dim: int = 128
  max_len: int = 16
  pos_scale: float = 1.0  # scale of the sin-cos position table added to word embeddings

  def __post_init__(self):
    if self.kind != "sincos":
      raise ValueError(f"kind: expected 'sincos', got {self.kind!r}")


TEXT_ENCODERS = {"sincos": TextEncoderConfig, "bert": BertConfig}


@dataclasses.dataclass(frozen=True)
class AnatomyVLMConfig:
  vit: ViTConfig = ViTConfig(image_size=64, patch_size=8)
  text: Any = TextEncoderConfig()  # a TEXT_ENCODERS config (its `kind` names it)
  num_queries: int = 11  # M anatomy queries (= regions)
  num_regions: int = 11  # region classes (identity logits, for Hungarian matching)
  decoder_depth: int = 2
  decoder_heads: int = 4
  decoder_mlp_dim: int = 128
  embed_dim: int = 64  # joint image-text space
  # > 0: the frozen text encoder reads each distinct phrase of a call once, for up to this many
  # distinct phrases (a call with more reads every phrase); equal results, less text-encoder work
  # where phrases repeat (region phrases, negatives, label prompts). 0: every phrase.
  text_unique: int = 0

  def __post_init__(self):
    if self.text_unique < 0:
      raise ValueError(f"text_unique: expected >= 0 (0: off), got {self.text_unique}")
    if self.num_queries < self.num_regions:
      raise ValueError(
        f"num_queries: expected >= num_regions ({self.num_regions}), got {self.num_queries}"
      )
    if self.vit.pool == "none":
      raise ValueError("vit.pool: expected a pooled image token (map / gap / cls), got 'none'")


class TextEncoder(nn.Module):
  """tokens [..., T] (0 = pad) -> mean-pooled features [..., width]."""

  cfg: TextEncoderConfig

  @nn.compact
  def __call__(self, tokens):
    cfg = self.cfg
    if tokens.shape[-1] > cfg.max_len:
      raise ValueError(
        f"tokens: expected at most {cfg.max_len} tokens (text.max_len), got {tokens.shape[-1]}"
      )
    lead, t = tokens.shape[:-1], tokens.shape[-1]
    tokens = tokens.reshape(-1, t)
    valid = tokens != 0
    x = token_embedding(cfg.vocab_size, cfg.width, 1.0)(tokens)
    x = x + cfg.pos_scale * jnp.asarray(sincos_2d(1, cfg.max_len, cfg.width))[None, :t]
    mask = valid[:, None, None, :] & valid[:, None, :, None]
    mask = (
      mask | jnp.eye(t, dtype=bool)[None, None]
    )  # pad queries attend to themselves (no empty rows)
    x = Encoder(cfg.depth, cfg.heads, cfg.mlp_dim, name="encoder")(x, mask)
    w = valid.astype(x.dtype)[..., None]
    pooled = jnp.sum(x * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
    return pooled.reshape(lead + (cfg.width,))


class AnatomyDecoderLayer(nn.Module):
  """queries += SelfAttn(LN(q)); += CrossAttn(LN(q), tokens); += MLP(LN(q))."""

  heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q, tokens):
    ln = lambda name: layer_norm(name, 1e-6, self.dtype, self.param_dtype)
    mha = lambda name: vit_attention(self.heads, self.dtype, self.param_dtype, name)
    h = ln("ln_self")(q)
    q = q + mha("self_attn")(h)
    q = q + mha("cross_attn")(ln("ln_cross")(q), tokens)
    q = q + vit_mlp(self.mlp_dim, "gelu_tanh", self.dtype, self.param_dtype)(ln("ln_mlp")(q))
    return nn.with_logical_constraint(q, ("act_batch", "act_length", "act_embed"))


def _normalize(x):
  return x / jnp.sqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)


class AnatomyVLM(nn.Module):
  """`encode_image(images)` / `encode_text(tokens)`; `__call__` runs both (used for init)."""

  cfg: AnatomyVLMConfig

  def setup(self):
    cfg = self.cfg
    dtype, pdtype = DTYPES[cfg.vit.dtype], DTYPES[cfg.vit.param_dtype]
    d = cfg.vit.width
    self.vision = ViT(cfg.vit)
    self.queries = self.param(
      "queries",
      nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
      (cfg.num_queries, d),
      pdtype,
    )
    self.decoder = [
      AnatomyDecoderLayer(
        cfg.decoder_heads, cfg.decoder_mlp_dim, dtype, pdtype, name=f"decoder_{i}"
      )
      for i in range(cfg.decoder_depth)
    ]
    self.decoder_norm = layer_norm("decoder_norm", 1e-6, dtype, pdtype)
    self.box_hidden = [
      dense(d, ("embed", "mlp"), f"box_{i}", dtype, pdtype, use_bias=True) for i in range(2)
    ]
    self.box_out = dense(4, ("mlp", None), "box_out", dtype, pdtype, use_bias=True)
    self.region_cls = dense(
      cfg.num_regions, ("embed", None), "region_cls", dtype, pdtype, use_bias=True
    )
    self.region_proj = dense(
      cfg.embed_dim, ("embed", None), "region_proj", dtype, pdtype, use_bias=True
    )
    self.image_proj = dense(
      cfg.embed_dim, ("embed", None), "image_proj", dtype, pdtype, use_bias=True
    )
    bert = isinstance(cfg.text, BertConfig)
    self.text_encoder = Bert(cfg.text) if bert else TextEncoder(cfg.text)
    self.text_proj = dense(
      cfg.embed_dim, ("embed", None), "text_proj", dtype, pdtype, use_bias=True
    )
    scalar = lambda name, v: self.param(
      name, nn.with_logical_partitioning(nn.initializers.constant(v), ()), (), jnp.float32
    )
    self.fine_logit_scale = scalar("fine_logit_scale", jnp.log(10.0))
    self.global_logit_scale = scalar("global_logit_scale", jnp.log(10.0))
    self.global_logit_bias = scalar("global_logit_bias", -2.0)

  def encode_image(self, images, train: bool = False) -> dict:
    """-> boxes [B,M,4] cxcywh, region_logits [B,M,R], region_emb [B,M,E], image_emb [B,E] (unit norm)."""
    out = self.vision(images, train=train)
    tokens, pooled = out["tokens"], out["pooled"]
    b = tokens.shape[0]
    q = jnp.broadcast_to(self.queries.astype(tokens.dtype), (b,) + self.queries.shape)
    for layer in self.decoder:
      q = layer(q, tokens)
    q = self.decoder_norm(q)
    h = q
    for layer in self.box_hidden:
      h = jax.nn.relu(layer(h))
    boxes = jax.nn.sigmoid(self.box_out(h).astype(jnp.float32))
    glob = jnp.broadcast_to(pooled[:, None], q.shape)
    region = self.region_proj(jnp.concatenate([glob, q], -1))
    return {
      "boxes": boxes,
      "region_logits": self.region_cls(q).astype(jnp.float32),
      "region_emb": _normalize(region.astype(jnp.float32)),
      "image_emb": _normalize(self.image_proj(pooled).astype(jnp.float32)),
    }

  def encode_text(self, tokens):
    """tokens [..., T] -> [..., E] unit norm; the encoder is frozen (no gradient flows into it)."""
    feats = jax.lax.stop_gradient(self._text_features(tokens))
    return _normalize(self.text_proj(feats).astype(jnp.float32))

  def _text_features(self, tokens):
    """The frozen encoder's pooled features [..., W]; with `text_unique`, computed once per
    distinct token row (rows are independent: padding masks are per row)."""

    def features(mdl, rows):
      out = mdl.text_encoder(rows)
      return out["pooled"] if isinstance(out, dict) else out

    lead, t = tokens.shape[:-1], tokens.shape[-1]
    rows = tokens.reshape(-1, t)
    u = self.cfg.text_unique
    if not u or u >= rows.shape[0] or self.is_initializing():
      return features(self, rows).reshape(*lead, -1)
    # Distinct rows, padded with all-pad rows to u; the counts sum to fewer than the rows when a
    # call has more than u distinct phrases, and then every row is read.
    uniq, inverse, counts = jnp.unique(
      rows, axis=0, size=u, fill_value=0, return_inverse=True, return_counts=True
    )
    out = nn.cond(
      jnp.sum(counts) == rows.shape[0],
      lambda mdl, uniq, inverse, rows: features(mdl, uniq)[inverse.reshape(-1)],
      lambda mdl, uniq, inverse, rows: features(mdl, rows),
      self,
      uniq,
      inverse,
      rows,
    )
    return out.reshape(*lead, -1)

  def logit_params(self) -> dict:
    return {
      "fine_scale": jnp.exp(self.fine_logit_scale),
      "global_scale": jnp.exp(self.global_logit_scale),
      "global_bias": self.global_logit_bias,
    }

  def __call__(self, images, text_tokens, train: bool = False):
    return self.encode_image(images, train), self.encode_text(text_tokens), self.logit_params()


def train_flops(cfg: AnatomyVLMConfig, batch: int, phrases: int, phrase_len: int) -> float:
  """Analytic training FLOPs of a step on `batch` images and `phrases` phrases of `phrase_len`
  tokens (`medjax.nn.flops`): 3 x forward of the vision tower, the anatomy query decoder
  (self-attention among the queries, cross-attention to the patch tokens, MLP), the box / region /
  image heads and the text projection; the frozen text encoder once (its output is
  gradient-stopped: no backward pass) on at most `text_unique` of the phrases where that is fewer
  (the distinct ones; `_text_features`)."""
  w, q = cfg.vit.width, cfg.num_queries
  layer = flops.attention(q, q, w) + flops.attention(q, cfg.vit.num_tokens, w)
  heads = 2 * flops.dense(q, w, w) + flops.dense(q, w, 4 + cfg.num_regions)
  heads += flops.dense(q, 2 * w, cfg.embed_dim) + flops.dense(1, w, cfg.embed_dim)
  image = vit.forward_flops(cfg.vit, batch) + batch * heads
  image += batch * cfg.decoder_depth * (layer + flops.mlp(q, w, cfg.decoder_mlp_dim))
  t = cfg.text
  read = min(phrases, cfg.text_unique or phrases)
  text = read * flops.encoder(phrase_len, t.width, t.mlp_dim, t.depth)
  return 3.0 * (image + phrases * flops.dense(1, t.width, cfg.embed_dim)) + text
