"""One attention for every family: MHA/GQA, self or cross, RoPE, masks, biases, KV cache."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.nn import lora as lora_lib
from medjax.nn.norms import RMSNorm
from medjax.nn.rope import apply_rope


@flax.struct.dataclass
class KVCache:
  """Keys/values [B, S, K, D]; slot s holds position s; `end` [B] counts filled slots per row."""

  k: jax.Array
  v: jax.Array
  end: jax.Array

  @classmethod
  def zeros(cls, batch, max_len, kv_heads, head_dim, dtype=jnp.float32):
    shape = (batch, max_len, kv_heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


@flax.struct.dataclass
class PrefixedCache:
  """A KV cache whose first part is shared: `prefix` holds a prompt's keys/values once for `group` consecutive
  (prompt-major) rows, [B0, P, K, D] with `end` = the prompt lengths [B0]; `suffix` [B0 * group, S, K, D] holds
  each row's own tokens after its prompt (slot s = position prompt_len + s). Decoding many samples of one
  prompt then reads the prompt's keys once per step instead of once per sample."""

  prefix: KVCache
  suffix: KVCache


def attention_mask(
  q_pos, k_pos, k_valid, *, causal=True, q_prefix=None, k_prefix=None, window=None
):
  """Boolean mask [B, 1, Tq, Tk] from positions.

  causal: keys at later positions are hidden; with `q_prefix`/`k_prefix` ([B, T] bool) the prefix
  tokens see each other bidirectionally (prefix-LM). `window`: only keys within `window` positions.
  """
  qp, kp = q_pos[:, :, None], k_pos[:, None, :]
  allowed = jnp.broadcast_to(
    k_valid[:, None, :].astype(bool), (q_pos.shape[0], q_pos.shape[1], k_pos.shape[1])
  )
  if causal:
    visible = kp <= qp
    if q_prefix is not None:
      visible |= q_prefix[:, :, None] & k_prefix[:, None, :]
    allowed &= visible
  if window is not None:
    allowed &= (qp - kp < window) & (kp - qp < window)
  return allowed[:, None]


def dot_product_attention(
  q, k, v, mask=None, *, scale, bias=None, softcap=None, implementation="xla", prefix=None
):
  """q [B,T,N,D], k/v [B,S,K,D] with N % K == 0, mask [B,1,T,S] (broadcastable; None: all) -> [B,T,N,D].

  logits = scale * q.k (+ `bias` [B or 1, N, T, S], e.g. T5's relative positions), soft-capped to
  `softcap` if set. `prefix` = (pk, pv, pmask): extra keys/values [B0, P, K, D] shared by each group
  of B / B0 consecutive rows, with their mask [B,1,T,P]; one softmax runs over the P + S keys.
  """
  if implementation == "cudnn" and softcap is None and prefix is None:
    if mask is not None:  # cuDNN takes the mask as a bias spanning every query and key
      mask = jnp.broadcast_to(mask, mask.shape[:-2] + (q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(
      q, k, v, bias=bias, mask=mask, scale=scale, implementation="cudnn"
    )
  b, t, n, d = q.shape
  kv = k.shape[2]
  if n % kv:
    raise ValueError(f"num_heads ({n}) must be a multiple of num_kv_heads ({kv})")
  if bias is not None and prefix is not None:
    raise ValueError("bias: not supported together with a prefix cache")
  qg = q.reshape(b, t, kv, n // kv, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.reshape(bias.shape[0], kv, n // kv, t, k.shape[1])
  if prefix is not None:
    pk, pv, pmask = prefix
    b0, p = pk.shape[:2]
    grouped = qg.reshape(b0, b // b0, t, kv, n // kv, d)
    plogits = (
      jnp.einsum("brtkgd,bskd->brkgts", grouped, pk, preferred_element_type=jnp.float32) * scale
    )
    logits = jnp.concatenate([plogits.reshape(b, kv, n // kv, t, p), logits], axis=-1)
    mask = jnp.concatenate([pmask, mask], axis=-1)
  if softcap is not None:
    logits = jnp.tanh(logits / softcap) * softcap
  if mask is not None:
    logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  if prefix is None:
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, n, d)
  pprobs = probs[..., :p].reshape(b0, b // b0, kv, n // kv, t, p)
  out = jnp.einsum("bkgts,bskd->btkgd", probs[..., p:], v)
  out = out + jnp.einsum("brkgts,bskd->brtkgd", pprobs, pv).reshape(b, t, kv, n // kv, d)
  return out.reshape(b, t, n, d)


def _write(cache: KVCache, k, v, start, length: int) -> KVCache:
  """`cache` with k/v [B, T, K, D] written at slots start..start+T-1 of each row."""
  write = jax.vmap(lambda c, u, s: jax.lax.dynamic_update_slice(c, u.astype(c.dtype), (s, 0, 0)))
  return KVCache(
    write(cache.k, k, start), write(cache.v, v, start), jnp.maximum(cache.end, start + length)
  )


_INITS = {  # kernel_init name -> (variance_scaling mode, distribution)
  "fan_in": ("fan_in", "truncated_normal"),  # LeCun normal over the flattened fan-in
  "xavier": ("fan_avg", "uniform"),  # nn.DenseGeneral / timm / PixArt
}


class Einsum(nn.Module):
  """A projection `einsum(spec, x, kernel) (+ bias)` whose params carry logical axis names.

  Kernel [in..., out...] (the first axes listed in `fan_in_axes` are contracted), bias [out...] as
  in nn.DenseGeneral, but its boxed init also works under a mesh. `shape` entries of None take the
  input's last dimension. `kernel_init`: "fan_in", "xavier" or "zeros". `lora`: an optional LoRA
  adapter (nn/lora.py).
  """

  spec: str
  shape: tuple
  axes: tuple
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  fan_in_axes: tuple = (0,)
  use_bias: bool = False
  kernel_init: str = "fan_in"
  lora: Any = None

  @nn.compact
  def __call__(self, x):
    shape = tuple(x.shape[-1] if s is None else s for s in self.shape)
    out_axes = tuple(i for i in range(len(shape)) if i not in self.fan_in_axes)
    if self.kernel_init == "zeros":
      init = nn.initializers.zeros
    elif self.kernel_init in _INITS:
      mode, dist = _INITS[self.kernel_init]
      init = nn.initializers.variance_scaling(
        1.0, mode, dist, in_axis=self.fan_in_axes, out_axis=out_axes
      )
    else:
      raise ValueError(
        f"kernel_init: expected one of {sorted(_INITS) + ['zeros']}, got {self.kernel_init!r}"
      )
    kernel = self.param(
      "kernel", nn.with_logical_partitioning(init, self.axes), shape, self.param_dtype
    )
    y = jnp.einsum(self.spec, x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.axes[i] for i in out_axes)),
        tuple(shape[i] for i in out_axes),
        self.param_dtype,
      )
      y = y + bias.astype(self.dtype)
    if self.lora is None:
      return y
    return y + lora_lib.delta(
      self,
      x,
      self.spec,
      shape,
      self.fan_in_axes,
      self.axes,
      self.lora,
      self.dtype,
      self.param_dtype,
    ).astype(y.dtype)


class Attention(nn.Module):
  """One multi-head attention for every family, configured by options.

  __call__(x [B,T,E], context [B,S,C] = None, mask = None, *, positions [B,T], inv_freq, cache,
  bias [B or 1,N,T,S]) -> y [B,T,E], or (y, cache) when a cache is given.

  - self-attention (`context` None) or cross-attention (keys/values from `context`);
  - `num_kv_heads` < `num_heads`: grouped-query attention; `head_dim` None: E // num_heads;
  - `mask`: bool broadcastable to [B,1,T,S] (True = attend; None: all), from `attention_mask`
    (causal, prefix-LM, padding, sliding window);
  - `inv_freq` with `positions`: RoPE on q and k (self-attention only); `qk_norm`: RMS-normed q, k;
  - `query_scale`: logit scale (None: head_dim**-0.5; T5: 1.0); `bias`: additive logits (T5's
    relative positions); `softcap`: Gemma-2 logit soft-capping;
  - `use_bias`: biases on q/k/v/o (ViT, SigLIP, DiT); `kernel_init`: "fan_in" or "xavier";
    `zero_init_out`: o starts at zero (DiT-style residual branches);
  - a KVCache: this call's keys/values are written at slots `positions` and the mask covers the
    cache's S slots; with a PrefixedCache they go to the suffix (slot = position - prompt length)
    and the mask covers the P prefix slots, then the S suffix slots;
  - `lora` (a LoRAConfig) adds adapters to its targets among q/k/v/o.
  """

  num_heads: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  use_bias: bool = False
  kernel_init: str = "fan_in"
  zero_init_out: bool = False
  qk_norm: bool = False
  qk_norm_zero_centered: bool = False
  norm_eps: float = 1e-6
  query_scale: float | None = None
  softcap: float | None = None
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  lora: Any = None

  def _proj(self, name, heads, head_axis, head_dim):
    return Einsum(
      "bte,ehd->bthd",
      (None, heads, head_dim),
      ("embed", head_axis, "head_dim"),
      self.dtype,
      self.param_dtype,
      use_bias=self.use_bias,
      kernel_init=self.kernel_init,
      lora=lora_lib.for_target(self.lora, name),
      name=name,
    )

  @nn.compact
  def __call__(
    self, x, context=None, mask=None, *, positions=None, inv_freq=None, cache=None, bias=None
  ):
    e = x.shape[-1]
    hd = self.head_dim
    if hd is None:
      if e % self.num_heads:
        raise ValueError(f"x: embedding dim {e} is not divisible by num_heads={self.num_heads}")
      hd = e // self.num_heads
    kvh = self.num_kv_heads or self.num_heads
    ctx = x if context is None else context
    q = self._proj("q", self.num_heads, "heads", hd)(x)
    k = self._proj("k", kvh, "kv_heads", hd)(ctx)
    v = self._proj("v", kvh, "kv_heads", hd)(ctx)
    if self.qk_norm:
      norm = lambda name: RMSNorm(
        self.norm_eps,
        self.qk_norm_zero_centered,
        "head_dim",
        self.dtype,
        self.param_dtype,
        name=name,
      )
      q, k = norm("q_norm")(q), norm("k_norm")(k)
    if inv_freq is not None:
      if context is not None:
        raise ValueError("inv_freq: RoPE is only supported for self-attention (context=None)")
      q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    q = nn.with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
    k = nn.with_logical_constraint(k, ("act_batch", "act_length", "act_kv_heads", None))
    v = nn.with_logical_constraint(v, ("act_batch", "act_length", "act_kv_heads", None))
    prefix = None
    if isinstance(cache, PrefixedCache):
      pre, own = cache.prefix, cache.suffix
      start = positions[:, 0] - jnp.repeat(pre.end, x.shape[0] // pre.k.shape[0])
      own = _write(own, k, v, start, x.shape[1])
      cache = PrefixedCache(pre, own)
      p = pre.k.shape[1]
      prefix = (pre.k.astype(self.dtype), pre.v.astype(self.dtype), mask[..., :p])
      k, v, mask = own.k.astype(self.dtype), own.v.astype(self.dtype), mask[..., p:]
    elif cache is not None:
      cache = _write(cache, k, v, positions[:, 0], x.shape[1])
      k, v = cache.k.astype(self.dtype), cache.v.astype(self.dtype)
    scale = self.query_scale if self.query_scale is not None else hd**-0.5
    out = dot_product_attention(
      q,
      k,
      v,
      mask,
      scale=scale,
      bias=bias,
      softcap=self.softcap,
      implementation=self.implementation,
      prefix=prefix,
    )
    out = nn.with_logical_constraint(out, ("act_batch", "act_length", "act_heads", None))
    y = Einsum(
      "bthd,hde->bte",
      (self.num_heads, hd, e),
      ("heads", "head_dim", "embed"),
      self.dtype,
      self.param_dtype,
      fan_in_axes=(0, 1),
      use_bias=self.use_bias,
      kernel_init="zeros" if self.zero_init_out else self.kernel_init,
      lora=lora_lib.for_target(self.lora, "o"),
      name="o",
    )(out)
    return y if cache is None else (y, cache)
