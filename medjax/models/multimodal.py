"""Interleaved multimodal decoder (PaliGemma / Med-Gemini style).

Text tokens [B,T] hold one placeholder id per medium (e.g. one for each image, another for each
volume). Each placeholder is replaced by its medium's ViT tokens, projected to the LM width; the
k-th placeholder of a modality takes item k of that modality's media [B, M, ...]. The expanded
sequence (length T + sum_m M_m (N_m - 1), padding at the end) runs through `DecoderLM` with a
prefix-LM mask: bidirectional over media + prompt, causal over the answer. Logits are gathered
back to text positions, so targets / loss masks stay in text coordinates.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import llm, vit
from medjax.models.llm import DecoderLM, LMConfig
from medjax.models.vit import ViT, ViTConfig
from medjax.nn import flops
from medjax.nn.dtypes import DTYPES
from medjax.nn.mlp import dense


@dataclasses.dataclass(frozen=True)
class MediaSpec:
  """A modality: its placeholder token id, its encoder and the most items per example."""

  name: str
  token_id: int
  vit: ViTConfig
  max_items: int = 1


@dataclasses.dataclass(frozen=True)
class MultimodalConfig:
  lm: LMConfig
  media: tuple = ()  # MediaSpec, ...
  projector: str = "linear"  # linear | mlp

  def __post_init__(self):
    object.__setattr__(self, "media", tuple(self.media))
    ids = [m.token_id for m in self.media]
    if len(set(ids)) != len(ids) or len({m.name for m in self.media}) != len(ids):
      raise ValueError(
        f"media: expected distinct names and token ids, got {[(m.name, m.token_id) for m in self.media]}"
      )
    for m in self.media:
      if not 0 <= m.token_id < self.lm.vocab_size:
        raise ValueError(
          f"media[{m.name!r}].token_id: expected an id in [0, {self.lm.vocab_size}), got {m.token_id}"
        )
    if self.projector not in ("linear", "mlp"):
      raise ValueError(f"projector: expected 'linear' or 'mlp', got {self.projector!r}")

  def expanded_len(self, text_len: int) -> int:
    return text_len + sum(m.max_items * (m.vit.num_tokens - 1) for m in self.media)


def train_flops(cfg: MultimodalConfig, batch: int, text_len: int) -> float:
  """Analytic training FLOPs of a step on `batch` rows of `text_len` text tokens
  (`medjax.nn.flops`).

  3 x forward of every item slot's tower and projector (padding items run too), plus the decoder
  over the expanded sequence by `llm.train_flops` with N = `lm.num_params()` (6 N T: a tied
  embedding counts once, as the logits matmul over every position; causal attention, S / 2 keys).
  """
  e = cfg.lm.embed_dim
  media = 0.0
  for m in cfg.media:
    n = m.vit.num_tokens
    proj = flops.dense(n, m.vit.width, e) + (flops.dense(n, e, e) if cfg.projector == "mlp" else 0)
    media += batch * m.max_items * (vit.forward_flops(m.vit, 1) + proj)
  seq = cfg.expanded_len(text_len)
  return 3.0 * media + llm.train_flops(cfg.lm, cfg.lm.num_params(), batch, seq)


def count_placeholders(tokens, cfg: MultimodalConfig) -> dict:
  """{modality: [B] placeholder counts} (numpy)."""
  tokens = np.asarray(tokens)
  return {m.name: (tokens == m.token_id).sum(-1) for m in cfg.media}


def check_media_counts(tokens, media_mask: dict, cfg: MultimodalConfig) -> None:
  """Raises ValueError where an example's placeholders and its valid media differ in number."""
  counts = count_placeholders(tokens, cfg)
  for m in cfg.media:
    have = np.asarray(media_mask[m.name]).astype(bool).sum(-1)
    bad = np.nonzero(have != counts[m.name])[0]
    if bad.size:
      i = int(bad[0])
      raise ValueError(
        f"media[{m.name!r}]: example {i} has {int(counts[m.name][i])} placeholder(s) (token id "
        f"{m.token_id}) but {int(have[i])} valid item(s); each placeholder needs exactly one item"
      )


def _layout(tokens, specs):
  """Per row: text -> expanded positions. Returns (out_pos [T], span [T], {name: (start [M], k [T])})."""
  extra = jnp.zeros(tokens.shape, jnp.int32)
  for m in specs:
    extra += jnp.where(tokens == m.token_id, m.vit.num_tokens - 1, 0)
  out_pos = jnp.arange(tokens.shape[0]) + jnp.cumsum(extra) - extra
  starts = {}
  for m in specs:
    is_ph = tokens == m.token_id
    k = jnp.cumsum(is_ph) - 1  # index of this placeholder among its modality's
    start = (
      jnp.full((m.max_items,), -1, jnp.int32)
      .at[jnp.where(is_ph, k, m.max_items)]
      .set(out_pos, mode="drop")
    )
    starts[m.name] = start
  return out_pos, extra, starts


class MultimodalLM(nn.Module):
  """tokens [B,T] with placeholders + media {name: [B, M, *input_shape]} -> text logits [B,T,V].

  media_mask {name: [B, M]} marks real items (default: all). input_mask [B,T]: real text tokens.
  prefix_mask [B,T]: media + prompt (bidirectional); None = fully causal. With concrete (non-traced)
  inputs, placeholder and item counts are checked; under jit extra items are ignored and
  placeholders without an item see zeros (the data pipeline checks counts on the host).
  With return_aux, also returns {"logits": expanded [B,L,V], "input_mask", "prefix_mask",
  "is_media": [B,L], "read_pos": [B,T] (expanded position whose logits predict text token t+1)}.
  """

  cfg: MultimodalConfig

  def setup(self):
    cfg = self.cfg
    self.lm = DecoderLM(cfg.lm)
    self.encoders = {m.name: ViT(m.vit, name=f"enc_{m.name}") for m in cfg.media}
    d, pd = DTYPES[cfg.lm.dtype], DTYPES[cfg.lm.param_dtype]
    proj = {}
    for m in cfg.media:
      if cfg.projector == "mlp":
        proj[m.name] = (
          dense(cfg.lm.embed_dim, ("mlp", "embed"), f"proj_{m.name}_0", d, pd, True),
          dense(cfg.lm.embed_dim, ("embed", "embed"), f"proj_{m.name}_1", d, pd, True),
        )
      else:
        proj[m.name] = (dense(cfg.lm.embed_dim, ("mlp", "embed"), f"proj_{m.name}", d, pd, True),)
    self.projectors = proj

  def encode_media(self, name, items):
    """items [B, M, *input_shape] -> projected tokens [B, M, N, E]."""
    spec = next(m for m in self.cfg.media if m.name == name)
    want = spec.vit.input_shape
    if items.ndim != len(want) + 2 or tuple(items.shape[2:]) != want:
      raise ValueError(
        f"media[{name!r}]: expected [batch, items, {', '.join(map(str, want))}], got {items.shape}"
      )
    b, m = items.shape[:2]
    tok = self.encoders[name](items.reshape((b * m,) + want))["tokens"]
    layers = self.projectors[name]
    tok = layers[0](tok)
    if len(layers) > 1:
      tok = layers[1](jax.nn.gelu(tok))
    return tok.reshape(b, m, tok.shape[1], -1)

  def embed_interleaved(self, tokens, media, media_mask=None, input_mask=None, prefix_mask=None):
    """-> (embeds [B,L,E], input_mask [B,L], prefix_mask [B,L] or None, is_media [B,L], read_pos [B,T])."""
    cfg = self.cfg
    if tokens.ndim != 2:
      raise ValueError(f"tokens: expected [batch, length], got {tokens.shape}")
    media = dict(media or {})
    names = [m.name for m in cfg.media]
    if set(media) != set(names):
      raise ValueError(f"media: expected items for modalities {names}, got {sorted(media)}")
    b, t = tokens.shape
    for m in cfg.media:
      if media[m.name].shape[:2] != (b, m.max_items):
        raise ValueError(
          f"media[{m.name!r}]: expected [batch={b}, items={m.max_items}, ...], got "
          f"{media[m.name].shape}"
        )
    mmask = {
      n: jnp.ones((b, media[n].shape[1]), bool)
      if media_mask is None or media_mask.get(n) is None
      else jnp.asarray(media_mask[n]).astype(bool)
      for n in names
    }
    if not isinstance(tokens, jax.core.Tracer) and not any(
      isinstance(v, jax.core.Tracer) for v in mmask.values()
    ):
      check_media_counts(tokens, mmask, cfg)
    valid = jnp.ones((b, t), bool) if input_mask is None else input_mask.astype(bool)
    prefix = None if prefix_mask is None else prefix_mask.astype(bool)
    text = self.lm.embed(tokens)
    enc = {n: self.encode_media(n, media[n]).astype(text.dtype) for n in names}
    L = cfg.expanded_len(t)

    def row(tok, txt, val, pre, enc_row, mm_row):
      out_pos, extra, starts = _layout(tok, cfg.media)
      is_ph = jnp.zeros(tok.shape, bool)
      for m in cfg.media:
        is_ph |= tok == m.token_id
      dest = jnp.where(is_ph, L, out_pos)  # placeholders themselves are replaced
      x = jnp.zeros((L, txt.shape[-1]), txt.dtype).at[dest].set(txt, mode="drop")
      v = jnp.zeros((L,), bool).at[dest].set(val, mode="drop")
      p = jnp.zeros((L,), bool).at[dest].set(pre, mode="drop")
      is_media = jnp.zeros((L,), bool)
      ph_pre = (
        jnp.zeros((L,), bool).at[out_pos].set(pre, mode="drop")
      )  # a placeholder's prefix flag
      ph_val = jnp.zeros((L,), bool).at[out_pos].set(val, mode="drop")
      for m in cfg.media:
        n = m.vit.num_tokens
        start = starts[m.name]
        ok = (start >= 0) & mm_row[m.name]
        pos = jnp.where(ok[:, None], start[:, None] + jnp.arange(n), L)  # [M, N]
        x = x.at[pos].set(enc_row[m.name], mode="drop")
        first = jnp.where(ok, start, L)
        flag = lambda a: jnp.broadcast_to(
          a.at[first].get(mode="fill", fill_value=False)[:, None], pos.shape
        )
        v = v.at[pos].set(flag(ph_val), mode="drop")
        p = p.at[pos].set(flag(ph_pre), mode="drop")
        is_media = is_media.at[pos].set(True, mode="drop")
      read = jnp.minimum(out_pos + extra, L - 1)
      return x, v, p, is_media, read

    pre_in = jnp.zeros((b, t), bool) if prefix is None else prefix
    x, v, p, is_media, read = jax.vmap(row)(tokens, text, valid, pre_in, enc, mmask)
    x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
    return x, v, (None if prefix is None else p), is_media, read

  def __call__(
    self,
    tokens,
    media=None,
    media_mask=None,
    *,
    input_mask=None,
    prefix_mask=None,
    return_aux=False,
  ):
    x, valid, prefix, is_media, read = self.embed_interleaved(
      tokens, media, media_mask, input_mask, prefix_mask
    )
    logits, _ = self.lm(embeds=x, input_mask=valid, prefix_mask=prefix)
    text_logits = jnp.take_along_axis(logits, read[..., None], axis=1)
    if not return_aux:
      return text_logits
    return text_logits, {
      "logits": logits,
      "input_mask": valid,
      "prefix_mask": prefix,
      "is_media": is_media,
      "read_pos": read,
    }
