"""OpenTSLM: time-series language models (Flamingo and SoftPrompt variants) on a DecoderLM.

Inputs besides text: `series` [B,M,S] (M series per example, padded to S samples), `series_mask`
[B,M,S] (1 on real samples) and, for Flamingo, `series_pos` [B,M] (the index of each series'
`<ts>` placeholder token in `tokens`). The base LM's parameters live under `lm/` with exactly
DecoderLM's layout, so a base checkpoint loads unchanged and `optim.freeze=("^lm/",)` freezes it.

- Flamingo: per-series patch encoder -> Perceiver resampler -> a gated cross-attention block
  before every `xattn_every`-th decoder layer. Each text token attends to the series whose
  placeholder is at or before it; padded samples and absent series are masked out.
- SoftPrompt: patch encoder -> post-LN transformer encoder (PyTorch's) -> MLP projector; the host expands each
  placeholder into one `<ts>` token per patch and the projected patches replace those embeddings.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import llm
from medjax.models.llm import DecoderLM, LMConfig
from medjax.nn import DTYPES, Attention, attention_mask, flops
from medjax.nn.attention import Einsum
from medjax.nn.gated_xattn import GatedCrossAttentionBlock
from medjax.nn.mlp import MLP, dense
from medjax.nn.norms import layer_norm
from medjax.nn.perceiver import PerceiverResampler

VARIANTS = ("flamingo", "softprompt")
# How a series' placeholder and its description are ordered in the text (medjax.tasks.opentslm):
# "paper" is the variant's original, series_first for Flamingo and text_first for SoftPrompt.
LAYOUTS = ("series_first", "text_first")
PAPER_LAYOUT = {"flamingo": "series_first", "softprompt": "text_first"}


@dataclasses.dataclass(frozen=True)
class TSLMConfig:
  """Architecture of an OpenTSLM model (defaults: the paper's sizes)."""

  lm: LMConfig = LMConfig()
  variant: str = "flamingo"
  ts_token_id: int = 259  # id of the `<ts>` placeholder token
  layout: str = "paper"  # "paper", or one of LAYOUTS
  eoc_token_id: int = (
    -1
  )  # closes each series' chunk (the original Flamingo's `<|endofchunk|>`); -1: none
  patch: int = 4
  enc_dim: int = 128
  max_patches: int = 1024
  # Flamingo
  resampler_layers: int = 6
  num_latents: int = 64
  resampler_heads: int = 8
  resampler_head_dim: int = 64
  ff_mult: int = 4
  xattn_every: int = 1
  xattn_heads: int = 8
  xattn_head_dim: int = 64
  xattn_gate_init: float = 0.0  # the paper's 0 (starts as the base LM); > 0 opens the gates at init
  # SoftPrompt
  encoder_layers: int = 6
  encoder_heads: int = 8
  encoder_mlp: int = 1024

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"variant: expected one of {VARIANTS}, got {self.variant!r}")
    if self.variant == "flamingo" and self.lm.scan_layers:
      raise ValueError(
        "lm.scan_layers: expected False for the Flamingo variant (cross-attention runs "
        "between layers), got True"
      )
    if self.layout != "paper" and self.layout not in LAYOUTS:
      raise ValueError(f"layout: expected 'paper' or one of {LAYOUTS}, got {self.layout!r}")
    if not -1 <= self.eoc_token_id < self.lm.vocab_size:
      raise ValueError(
        f"eoc_token_id: expected -1 (none) or in [0, {self.lm.vocab_size}), got {self.eoc_token_id}"
      )
    if self.xattn_every < 1:
      raise ValueError(f"xattn_every: expected >= 1, got {self.xattn_every}")
    if not 0 <= self.ts_token_id < self.lm.vocab_size:
      raise ValueError(
        f"ts_token_id: expected in [0, {self.lm.vocab_size}), got {self.ts_token_id}"
      )

  @property
  def text_layout(self) -> str:
    """The layout in force: "paper" resolved to the variant's original."""
    return PAPER_LAYOUT[self.variant] if self.layout == "paper" else self.layout

  @property
  def max_samples(self) -> int:
    return self.patch * self.max_patches

  def num_patches(self, length: int) -> int:
    return -(-length // self.patch)


class SeriesPatchEncoder(nn.Module):
  """Conv1d patching (kernel = stride = patch, no bias) + learned positions + LayerNorm.

  series [N,S], mask [N,S] -> tokens [N,P,enc_dim], patch mask [N,P] with P = ceil(S / patch).
  Padded samples are zeroed, so a patch's output does not depend on how much padding follows.
  """

  patch: int = 4
  dim: int = 128
  max_patches: int = 1024
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, series, mask):
    n, s = series.shape
    p = -(-s // self.patch)
    if p > self.max_patches:
      raise ValueError(
        f"series: expected at most {self.patch * self.max_patches} samples "
        f"({self.max_patches} patches of {self.patch}), got {s}"
      )
    pad = ((0, 0), (0, p * self.patch - s))
    mask = jnp.pad(mask.astype(bool), pad)
    x = jnp.pad(jnp.where(mask[:, :s], series, 0.0), pad).reshape(n, p, self.patch)
    x = Einsum(
      "npk,kd->npd",
      (self.patch, self.dim),
      (None, "embed"),
      self.dtype,
      self.param_dtype,
      name="patch",
    )(x)
    pos = self.param(
      "pos_embed",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (self.max_patches, self.dim),
      self.param_dtype,
    )
    x = layer_norm("norm", 1e-5, self.dtype, self.param_dtype)(x + pos[:p].astype(self.dtype))
    return x, mask.reshape(n, p, self.patch).any(-1)


class EncoderLayer(nn.Module):
  """PyTorch's default `TransformerEncoderLayer` (post-LN, biases, exact GELU; the original's
  SoftPrompt encoder): x = LN(x + attn(x)); x = LN(x + FF(x)), with a padding mask."""

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"encoder: dim {d} must divide by encoder_heads ({self.num_heads})")
    norm = lambda name, h: layer_norm(name, 1e-5, self.dtype, self.param_dtype)(h)
    h = Attention(
      self.num_heads, use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype, name="attn"
    )(x, mask=mask)
    x = norm("attn_norm", x + h)
    h = MLP(
      self.mlp_dim,
      "gelu",
      use_bias=True,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="ff",
    )(x)
    return norm("ff_norm", x + h)


def _check_inputs(tokens, series, series_mask):
  b = tokens.shape[0]
  if series.ndim != 3 or series.shape[0] != b:
    raise ValueError(f"series: expected [batch={b}, num_series, samples], got {series.shape}")
  if series_mask.shape != series.shape:
    raise ValueError(f"series_mask: expected {series.shape}, got {series_mask.shape}")


class _OpenTSLMBase(nn.Module):
  """Shared pieces: the base LM under `lm/` and the per-series patch encoder."""

  cfg: TSLMConfig

  def _dtypes(self):
    return DTYPES[self.cfg.lm.dtype], DTYPES[self.cfg.lm.param_dtype]

  def _patches(self, series, series_mask):
    """[B,M,S] -> patch tokens [B*M,P,D], patch mask [B*M,P]."""
    b, m, s = series.shape
    return self.encoder(series.reshape(b * m, s).astype(jnp.float32), series_mask.reshape(b * m, s))

  def _positions(self, tokens, positions):
    b, t = tokens.shape
    return (
      jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)) if positions is None else positions
    )


class OpenTSLMFlamingo(_OpenTSLMBase):
  """Frozen-LM-friendly Flamingo: series -> resampled latents -> gated cross-attention in the LM."""

  def setup(self):
    cfg, (dtype, pdtype) = self.cfg, self._dtypes()
    self.lm = DecoderLM(cfg.lm)
    self.encoder = SeriesPatchEncoder(cfg.patch, cfg.enc_dim, cfg.max_patches, dtype, pdtype)
    self.resampler = PerceiverResampler(
      cfg.resampler_layers,
      cfg.num_latents,
      cfg.resampler_heads,
      cfg.resampler_head_dim,
      cfg.ff_mult,
      dtype,
      pdtype,
    )
    self.xattn = [
      GatedCrossAttentionBlock(
        cfg.xattn_heads, cfg.xattn_head_dim, cfg.ff_mult, dtype, pdtype, cfg.xattn_gate_init
      )
      for _ in range(0, cfg.lm.num_layers, cfg.xattn_every)
    ]
    # A trainable offset to the (frozen) embedding of `<ts>`; zero at init, so the model starts as the base LM.
    self.ts_embed = self.param(
      "ts_embed",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (cfg.lm.embed_dim,),
      pdtype,
    )

  def encode(self, series, series_mask):
    """-> media [B,M,num_latents,enc_dim], series validity [B,M]."""
    b, m, _ = series.shape
    x, pmask = self._patches(series, series_mask)
    media = self.resampler(x, pmask)
    return media.reshape(b, m, *media.shape[1:]), pmask.reshape(b, m, -1).any(-1)

  def __call__(
    self,
    tokens,
    *,
    series,
    series_mask,
    series_pos,
    positions=None,
    input_mask=None,
    cache=None,
    return_hidden=False,
  ):
    _check_inputs(tokens, series, series_mask)
    if series_pos.shape != series.shape[:2]:
      raise ValueError(f"series_pos: expected {series.shape[:2]}, got {series_pos.shape}")
    cfg = self.cfg
    positions = self._positions(tokens, positions)
    media, valid = self.encode(series, series_mask)
    media_mask = valid[:, None, :] & (series_pos[:, None, :] <= positions[:, :, None])
    x = self.lm.embed(tokens)
    x = x + (tokens == cfg.ts_token_id)[..., None] * self.ts_embed.astype(x.dtype)

    def hook(i, h):
      return h if i % cfg.xattn_every else self.xattn[i // cfg.xattn_every](h, media, media_mask)

    return self.lm(
      embeds=x,
      positions=positions,
      input_mask=input_mask,
      cache=cache,
      return_hidden=return_hidden,
      layer_hook=hook,
    )


class OpenTSLMSoftPrompt(_OpenTSLMBase):
  """Series patches become LM input embeddings at the `<ts>` positions (one token per patch)."""

  def setup(self):
    cfg, (dtype, pdtype) = self.cfg, self._dtypes()
    self.lm = DecoderLM(cfg.lm)
    self.encoder = SeriesPatchEncoder(cfg.patch, cfg.enc_dim, cfg.max_patches, dtype, pdtype)
    self.layers = [
      EncoderLayer(cfg.encoder_heads, cfg.encoder_mlp, dtype, pdtype, name=f"encoder_layer_{i}")
      for i in range(cfg.encoder_layers)
    ]
    self.proj_norm = layer_norm("proj_norm", 1e-5, dtype, pdtype)
    self.proj = dense(cfg.lm.embed_dim, ("mlp", "embed"), "proj", dtype, pdtype, use_bias=True)

  def encode(self, series, series_mask):
    """-> soft tokens [B, M*P, E] and their validity [B, M*P] (series-major order)."""
    b, m, _ = series.shape
    x, pmask = self._patches(series, series_mask)
    pos = jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), pmask.shape)
    mask = attention_mask(pos, pos, pmask, causal=False)
    for layer in self.layers:
      x = layer(x, mask)
    x = jax.nn.gelu(self.proj(self.proj_norm(x)), approximate=False)
    return x.reshape(b, -1, x.shape[-1]), pmask.reshape(b, -1)

  def __call__(
    self,
    tokens,
    *,
    series,
    series_mask,
    series_pos=None,
    positions=None,
    input_mask=None,
    cache=None,
    return_hidden=False,
  ):
    """The k-th `<ts>` token of a row takes that row's k-th real patch (series in order)."""
    _check_inputs(tokens, series, series_mask)
    x = self.lm.embed(tokens)
    if cache is None or tokens.shape[1] > 1:  # decode steps (one new token) hold no placeholders
      soft, valid = self.encode(series, series_mask)
      is_ts = tokens == self.cfg.ts_token_id
      order = jnp.argsort(~valid, axis=1, stable=True)  # real patches first, in order
      rank = jnp.clip(jnp.cumsum(is_ts, axis=1) - 1, 0, soft.shape[1] - 1)
      idx = jnp.take_along_axis(order, rank, axis=1)
      gathered = jnp.take_along_axis(soft, idx[..., None], axis=1).astype(x.dtype)
      x = jnp.where(is_ts[..., None], gathered, x)
    return self.lm(
      embeds=x, positions=positions, input_mask=input_mask, cache=cache, return_hidden=return_hidden
    )


def train_flops(cfg: TSLMConfig, batch: int, seq_len: int, num_series: int, series_len: int):
  """Analytic training FLOPs of a step on `batch` rows of `seq_len` tokens with `num_series` series
  of `series_len` samples each (`medjax.nn.flops`; every series slot runs, padding too).

  3 x forward of the patch encoder and of, for Flamingo, the perceiver resampler (latents attend to
  [patches; latents]) and the gated cross-attention blocks (every text token to all series' latents,
  keys / values projected in each block); for SoftPrompt, the series encoder and projector. The LM:
  `llm.train_flops` with N = `lm.num_params()` (3 x forward even where the base is frozen, as MFU
  is usually stated; the step skips a frozen base's weight gradients, about a third of that).
  """
  series, d, e = batch * num_series, cfg.enc_dim, cfg.lm.embed_dim
  p = cfg.num_patches(series_len)
  fwd = series * flops.dense(p, cfg.patch, d)
  if cfg.variant == "flamingo":
    lat = cfg.num_latents
    inner = cfg.resampler_heads * cfg.resampler_head_dim
    layer = flops.attention(lat, p + lat, d, inner) + flops.mlp(lat, d, cfg.ff_mult * d)
    fwd += series * cfg.resampler_layers * layer
    blocks = len(range(0, cfg.lm.num_layers, cfg.xattn_every))
    inner = cfg.xattn_heads * cfg.xattn_head_dim
    block = flops.attention(seq_len, num_series * lat, e, inner, kv_width=d)
    fwd += batch * blocks * (block + flops.mlp(seq_len, e, cfg.ff_mult * e))
  else:
    fwd += series * (
      flops.encoder(p, d, cfg.encoder_mlp, cfg.encoder_layers) + flops.dense(p, d, e)
    )
  return 3.0 * fwd + llm.train_flops(cfg.lm, cfg.lm.num_params(), batch, seq_len)


def build(cfg: TSLMConfig) -> nn.Module:
  return OpenTSLMFlamingo(cfg) if cfg.variant == "flamingo" else OpenTSLMSoftPrompt(cfg)


@dataclasses.dataclass(frozen=True)
class SeriesConditioned:
  """Adapts an OpenTSLM model to `medjax.inference.generate` (which calls `model.apply` with tokens,
  positions and cache only): pass params={"model": params, "inputs": {series, series_mask, series_pos}}."""

  model: nn.Module

  def apply(self, variables, tokens, *, positions=None, cache=None):
    p = variables["params"]
    return self.model.apply(
      {"params": p["model"]}, tokens, positions=positions, cache=cache, **p["inputs"]
    )

  def init_cache(self, batch: int, max_len: int):
    return DecoderLM(self.model.cfg.lm, parent=None).init_cache(batch, max_len)
