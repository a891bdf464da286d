"""Decoder-only LM covering the Llama-3.x and Gemma-3 text architectures."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.nn import (
  DTYPES,
  MLP,
  Attention,
  KVCache,
  PrefixedCache,
  RMSNorm,
  attention_mask,
  rope_frequencies,
)
from medjax.nn.embed import token_embedding
from medjax.nn.lora import TARGETS as LORA_TARGETS
from medjax.nn.lora import LoRAConfig
from medjax.nn.remat import REMAT_POLICIES, remat_name


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of a decoder LM (field names follow HF configs where they exist)."""

  vocab_size: int = 264
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 384
  activation: str = "silu"
  norm_eps: float = 1e-5
  norm_zero_centered: bool = False  # Gemma: scale by (1 + w)
  post_norms: bool = False  # Gemma: extra norms after attention and MLP
  qk_norm: bool = False
  rope_theta: float = 10_000.0
  rope_scaling: Any = None  # HF-style {"rope_type": "llama3"|"linear", ...}, stored as sorted items
  rope_local_theta: float | None = None  # Gemma-3 sliding-window layers
  sliding_window: int | None = None
  global_every: int = 0  # every n-th layer is global, the rest local (0: all global)
  query_scale: float | None = None  # default head_dim ** -0.5; Gemma: query_pre_attn_scalar ** -0.5
  attn_softcap: float | None = None
  final_softcap: float | None = None
  tie_embeddings: bool = True
  scale_embeddings: bool = False  # Gemma: embeddings * sqrt(embed_dim)
  max_seq_len: int = 512
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"  # a REMAT_POLICIES name (True / False: "full" / "none")
  attention_impl: str = "xla"  # "cudnn" for the fused GPU kernel
  logits_chunk: int = 0  # > 0: the training loss projects this many positions at a time (0: all)
  lora_rank: int = 0  # > 0: LoRA adapters on `lora_targets` (params lora_a/lora_b)
  lora_alpha: float = 16.0
  lora_targets: tuple = LORA_TARGETS

  def __post_init__(self):
    if isinstance(
      self.rope_scaling, dict
    ):  # keep the config hashable (it is a static jit argument)
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank: expected >= 0 (0: no LoRA), got {self.lora_rank}")
    if self.logits_chunk < 0:
      raise ValueError(
        f"logits_chunk: expected >= 0 (0: the whole sequence at once), got {self.logits_chunk}"
      )
    self.lora()  # validates the targets
    object.__setattr__(self, "remat", remat_name(self.remat))
    for f in ("dtype", "param_dtype"):
      if getattr(self, f) not in DTYPES:
        raise ValueError(f"{f}: expected one of {sorted(DTYPES)}, got {getattr(self, f)!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
      )

  def lora(self) -> LoRAConfig | None:
    return (
      LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_targets) if self.lora_rank else None
    )

  def layer_is_local(self) -> np.ndarray:
    """Bool per layer: True where the layer uses the sliding window."""
    idx = np.arange(self.num_layers)
    if not self.sliding_window:
      return np.zeros(self.num_layers, bool)
    if not self.global_every:
      return np.ones(self.num_layers, bool)
    return (idx + 1) % self.global_every != 0

  def num_params(self) -> int:
    attn = self.embed_dim * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
    layer = attn + 3 * self.embed_dim * self.mlp_dim
    head = 0 if self.tie_embeddings else self.vocab_size * self.embed_dim
    return self.num_layers * layer + self.vocab_size * self.embed_dim + head


PRESETS = {
  "tiny": LMConfig(),
  "tiny-gemma": LMConfig(
    activation="gelu_tanh",
    norm_eps=1e-6,
    norm_zero_centered=True,
    post_norms=True,
    qk_norm=True,
    rope_local_theta=10_000.0,
    rope_theta=1e6,
    sliding_window=16,
    global_every=2,
    scale_embeddings=True,
    query_scale=32**-0.5,
  ),
  "llama-3.2-1b": LMConfig(
    vocab_size=128_256,
    embed_dim=2048,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
    mlp_dim=8192,
    rope_theta=500_000.0,
    max_seq_len=131_072,
    scan_layers=True,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 32.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
    },
  ),
  "llama-3.2-3b": LMConfig(
    vocab_size=128_256,
    embed_dim=3072,
    num_layers=28,
    num_heads=24,
    num_kv_heads=8,
    head_dim=128,
    mlp_dim=8192,
    rope_theta=500_000.0,
    max_seq_len=131_072,
    scan_layers=True,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 32.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
    },
  ),
  "gemma-3-270m": LMConfig(
    vocab_size=262_144,
    embed_dim=640,
    num_layers=18,
    num_heads=4,
    num_kv_heads=1,
    head_dim=256,
    mlp_dim=2048,
    activation="gelu_tanh",
    norm_eps=1e-6,
    norm_zero_centered=True,
    post_norms=True,
    qk_norm=True,
    rope_theta=1e6,
    rope_local_theta=10_000.0,
    sliding_window=512,
    global_every=6,
    query_scale=256**-0.5,
    scale_embeddings=True,
    max_seq_len=32_768,
    scan_layers=True,
  ),
  "gemma-3-1b": LMConfig(
    vocab_size=262_144,
    embed_dim=1152,
    num_layers=26,
    num_heads=4,
    num_kv_heads=1,
    head_dim=256,
    mlp_dim=6912,
    activation="gelu_tanh",
    norm_eps=1e-6,
    norm_zero_centered=True,
    post_norms=True,
    qk_norm=True,
    rope_theta=1e6,
    rope_local_theta=10_000.0,
    sliding_window=512,
    global_every=6,
    query_scale=256**-0.5,
    scale_embeddings=True,
    max_seq_len=32_768,
    scan_layers=True,
  ),
}


def lm_config(preset: str = "tiny", **overrides) -> LMConfig:
  if preset not in PRESETS:
    raise ValueError(f"LM preset: expected one of {sorted(PRESETS)}, got {preset!r}")
  return dataclasses.replace(PRESETS[preset], **overrides)


class DecoderLayer(nn.Module):
  """Pre-norm attention + gated MLP; Gemma adds post-norms. Selects local/global by `is_local`."""

  cfg: LMConfig

  @nn.compact
  def __call__(self, x, positions, masks, inv_freqs, is_local, cache=None):
    cfg, dtype, pdtype = self.cfg, DTYPES[self.cfg.dtype], DTYPES[self.cfg.param_dtype]
    norm = lambda name: RMSNorm(
      cfg.norm_eps, cfg.norm_zero_centered, "norm", dtype, pdtype, name=name
    )
    global_mask, local_mask = masks
    mask = global_mask if local_mask is None else jnp.where(is_local, local_mask, global_mask)
    inv_freq = (
      inv_freqs[0] if inv_freqs[1] is None else jnp.where(is_local, inv_freqs[1], inv_freqs[0])
    )
    attn = Attention(
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      qk_norm=cfg.qk_norm,
      qk_norm_zero_centered=cfg.norm_zero_centered,
      norm_eps=cfg.norm_eps,
      query_scale=cfg.query_scale,
      softcap=cfg.attn_softcap,
      implementation=cfg.attention_impl,
      dtype=dtype,
      param_dtype=pdtype,
      lora=cfg.lora(),
      name="attn",
    )
    h = attn(norm("attn_norm")(x), mask=mask, positions=positions, inv_freq=inv_freq, cache=cache)
    if cache is not None:
      h, cache = h
    if cfg.post_norms:
      h = norm("attn_post_norm")(h)
    x = x + h
    mlp = MLP(
      cfg.mlp_dim,
      cfg.activation,
      gated=True,
      dtype=dtype,
      param_dtype=pdtype,
      lora=cfg.lora(),
      name="mlp",
    )
    h = mlp(norm("mlp_norm")(x))
    if cfg.post_norms:
      h = norm("mlp_post_norm")(h)
    x = nn.with_logical_constraint(x + h, ("act_batch", "act_length", "act_embed"))
    return x, cache


class _ScanLayer(nn.Module):
  """Adapter giving DecoderLayer the (carry, xs) signature nn.scan wants."""

  cfg: LMConfig

  @nn.compact
  def __call__(self, x, scanned, positions, masks, inv_freqs):
    is_local, cache = scanned
    layer = _maybe_remat(DecoderLayer, self.cfg)
    x, cache = layer(self.cfg, name="layer")(x, positions, masks, inv_freqs, is_local, cache)
    return x, cache


def _maybe_remat(cls, cfg):
  policy = REMAT_POLICIES[cfg.remat]
  if cfg.remat == "none":
    return cls
  return nn.remat(cls, policy=policy, prevent_cse=not cfg.scan_layers)


def _prefixed_keys(cache, positions, t: int):
  """Positions [B, P + S] and validity of a PrefixedCache's keys (stacked over layers) for queries at `positions`."""
  pre, own = cache.prefix, cache.suffix
  b = positions.shape[0]
  p, s = pre.k.shape[2], own.k.shape[2]
  prompt_len = jnp.repeat(pre.end[0], b // pre.k.shape[1])[:, None]
  p_pos = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  slot = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  own_end = jnp.maximum(own.end[0], positions[:, 0] - prompt_len[:, 0] + t)
  k_pos = jnp.concatenate([p_pos, prompt_len + slot], axis=1)
  return k_pos, jnp.concatenate([p_pos < prompt_len, slot < own_end[:, None]], axis=1)


class DecoderLM(nn.Module):
  """tokens [B,T] (or input embeddings [B,T,E]) -> logits [B,T,V] (float32)."""

  cfg: LMConfig

  def setup(self):
    cfg = self.cfg
    self.embedder = token_embedding(
      cfg.vocab_size,
      cfg.embed_dim,
      cfg.embed_dim**-0.5,
      dtype=DTYPES[cfg.dtype],
      param_dtype=DTYPES[cfg.param_dtype],
    )
    if cfg.scan_layers:
      self.layers = nn.scan(
        _ScanLayer,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, name="layers")
    else:
      layer = _maybe_remat(DecoderLayer, cfg)
      self.layers = [layer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(
      cfg.norm_eps, cfg.norm_zero_centered, "norm", DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
    )
    if not cfg.tie_embeddings:
      self.head = nn.Dense(
        cfg.vocab_size,
        use_bias=False,
        dtype=DTYPES[cfg.dtype],
        param_dtype=DTYPES[cfg.param_dtype],
        kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("embed", "vocab")
        ),
      )

  def embed(self, tokens):
    x = self.embedder(tokens)
    if self.cfg.scale_embeddings:
      x = x * jnp.asarray(self.cfg.embed_dim**0.5, x.dtype)
    return x

  def __call__(
    self,
    tokens=None,
    *,
    embeds=None,
    positions=None,
    input_mask=None,
    prefix_mask=None,
    cache: KVCache | None = None,
    return_hidden=False,
    layer_hook=None,
  ):
    """Runs the decoder. `cache` (stacked over layers, leading dim L) switches on KV-cache decoding:
    keys are written at `positions` and attend over the whole cache. `layer_hook(i, x) -> x` runs
    before decoder layer i (e.g. Flamingo cross-attention; needs scan_layers=False). Returns (logits, cache)."""
    cfg = self.cfg
    if layer_hook is not None and cfg.scan_layers:
      raise ValueError(
        "layer_hook: expected scan_layers=False (layers run one by one), got scan_layers=True"
      )
    x = self.embed(tokens) if embeds is None else embeds.astype(DTYPES[cfg.dtype])
    if x.ndim != 3 or x.shape[-1] != cfg.embed_dim:
      raise ValueError(f"embeds: expected [batch, length, {cfg.embed_dim}], got {x.shape}")
    b, t = x.shape[:2]
    x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    valid = jnp.ones((b, t), bool) if input_mask is None else input_mask.astype(bool)
    if cache is None:
      k_pos, k_valid, k_prefix = positions, valid, prefix_mask
    elif isinstance(cache, PrefixedCache):
      if prefix_mask is not None:
        raise ValueError("prefix_mask: expected None when decoding from a PrefixedCache")
      (k_pos, k_valid), k_prefix = _prefixed_keys(cache, positions, t), None
    else:
      slots = cache.k.shape[2]
      k_pos = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (b, slots))
      k_end = jnp.maximum(cache.end[0], positions[:, 0] + t)
      k_valid = k_pos < k_end[:, None]
      k_prefix = (
        None if prefix_mask is None else k_pos < jnp.sum(prefix_mask, axis=1, keepdims=True)
      )
    mask_kw = dict(q_prefix=prefix_mask, k_prefix=k_prefix) if prefix_mask is not None else {}
    global_mask = attention_mask(positions, k_pos, k_valid, **mask_kw)
    local_mask = None
    is_local = cfg.layer_is_local()
    if is_local.any():
      local_mask = attention_mask(positions, k_pos, k_valid, window=cfg.sliding_window, **mask_kw)
    inv_global = rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    inv_local = (
      None if cfg.rope_local_theta is None else rope_frequencies(cfg.head_dim, cfg.rope_local_theta)
    )
    masks, inv_freqs = (global_mask, local_mask), (inv_global, inv_local)
    if cfg.scan_layers:
      x, cache = self.layers(x, (jnp.asarray(is_local), cache), positions, masks, inv_freqs)
    else:
      new = []
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else jax.tree.map(lambda c: c[i], cache)
        if layer_hook is not None:
          x = layer_hook(i, x)
        x, layer_cache = layer(x, positions, masks, inv_freqs, bool(is_local[i]), layer_cache)
        new.append(layer_cache)
      if isinstance(
        cache, PrefixedCache
      ):  # the shared prompt is unchanged: restack only the rows' own caches
        cache = PrefixedCache(
          cache.prefix, jax.tree.map(lambda *c: jnp.stack(c), *[c.suffix for c in new])
        )
      elif cache is not None:
        cache = jax.tree.map(lambda *c: jnp.stack(c), *new)
    x = self.final_norm(x)
    if return_hidden:
      return x, cache
    return self.logits(x), cache

  def logits(self, x):
    """Final hidden states [B,T,E] -> logits [B,T,V] (float32, soft-capped if configured)."""
    cfg = self.cfg
    logits = self.embedder.attend(x) if cfg.tie_embeddings else self.head(x)
    logits = logits.astype(jnp.float32)
    if cfg.final_softcap is not None:
      logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))

  def output_params(self, params) -> dict:
    """The subtree of `params` that `logits` reads: the embedding table (tied) or the head."""
    return {"embed": params["embed"]} if self.cfg.tie_embeddings else {"head": params["head"]}

  def init_cache(self, batch: int, max_len: int) -> KVCache:
    """An empty KV cache stacked over layers: arrays [L, B, S, K, D]."""
    cfg = self.cfg
    one = KVCache.zeros(batch, max_len, cfg.num_kv_heads, cfg.head_dim, DTYPES[cfg.dtype])
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.num_layers,) + a.shape), one)


def train_flops(cfg: LMConfig, num_params: int, batch_size: int, seq_len: int) -> float:
  """Analytic training FLOPs of one step (fwd + bwd = 3x fwd; no remat recomputation: the MFU convention).

  MaxText-style: 6 * params * tokens + causal attention 12 * H * D * S * (keys per query) per layer,
  S / 2 keys for global layers, min(window, S / 2) for sliding-window ones. Unlike XLA's count this
  sees every scanned layer.
  """
  local = int(cfg.layer_is_local().sum())
  keys = (cfg.num_layers - local) * seq_len / 2 + local * min(
    cfg.sliding_window or seq_len, seq_len / 2
  )
  attention = 12 * cfg.num_heads * cfg.head_dim * seq_len * keys
  return batch_size * (6 * num_params * seq_len + attention)
