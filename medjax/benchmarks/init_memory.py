"""Memory while a public checkpoint loads into parameters sharded over devices (`init.lm=hf:DIR`).

Writes random weights in the real on-disk layout of a Hugging Face Llama (config.json +
model.safetensors, bfloat16, Llama-3.2-1B by default), builds the decoder's params sharded over
every device (`fsdp`), and loads the checkpoint with `medjax.checkpoints.init.load` as the training
loop does (lazily read, one tensor at a time, replaced leaves donated). Reports, against the whole
model's bytes: each device's bytes before, at the peak of and after the load (live arrays, sampled
after every placed leaf), and the process's resident memory before and at its peak (anonymous memory; on CPU the devices' buffers are host memory too).
Measured figures: docs/results.md.
"""

import json
import os
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.checkpoints import hf_llm
from medjax.checkpoints import init as init_lib
from medjax.models.llm import DecoderLM
from medjax.parallel import logical_rules, make_mesh, sharded_init
from medjax.parallel.sharding import param_shardings, strip_boxes

GiB = 2**30
# The hub's config.json of Llama-3.2-1B (public architecture facts).
LLAMA_32_1B = {
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 128256,
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "num_hidden_layers": 16,
  "num_attention_heads": 32,
  "num_key_value_heads": 8,
  "head_dim": 64,
  "hidden_act": "silu",
  "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "tie_word_embeddings": True,
  "attention_bias": False,
  "mlp_bias": False,
  "torch_dtype": "bfloat16",
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
  },
}


def hf_tensor_shapes(hf: dict) -> dict:
  """{tensor name: shape} of a Llama safetensors checkpoint described by `hf` (config.json)."""
  e, m, v = hf["hidden_size"], hf["intermediate_size"], hf["vocab_size"]
  q, kv = hf["num_attention_heads"] * hf["head_dim"], hf["num_key_value_heads"] * hf["head_dim"]
  per_layer = {
    "self_attn.q_proj.weight": (q, e),
    "self_attn.k_proj.weight": (kv, e),
    "self_attn.v_proj.weight": (kv, e),
    "self_attn.o_proj.weight": (e, q),
    "mlp.gate_proj.weight": (m, e),
    "mlp.up_proj.weight": (m, e),
    "mlp.down_proj.weight": (e, m),
    "input_layernorm.weight": (e,),
    "post_attention_layernorm.weight": (e,),
  }
  shapes = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,)}
  for i in range(hf["num_hidden_layers"]):
    shapes.update({f"model.layers.{i}.{k}": s for k, s in per_layer.items()})
  return shapes


def write_random_checkpoint(path: str, hf: dict = LLAMA_32_1B, seed: int = 0) -> int:
  """config.json + model.safetensors (bfloat16) with random weights; returns the file's bytes."""
  from safetensors.flax import save_file

  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=1)
  rng = np.random.default_rng(seed)
  tensors = {
    name: jnp.asarray(rng.standard_normal(shape, np.float32) * 0.02, jnp.bfloat16)
    for name, shape in hf_tensor_shapes(hf).items()
  }
  file = os.path.join(path, "model.safetensors")
  save_file(tensors, file, metadata={"format": "pt"})
  return os.path.getsize(file)


def device_bytes() -> dict:
  """{device: bytes of live array shards on it}."""
  out = {}
  for a in jax.live_arrays():
    if a.is_deleted():
      continue
    shard = int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
    for d in a.sharding.addressable_devices:  # from the sharding: no shard views are made
      out[d] = out.get(d, 0) + shard
  return out


def _rss() -> int:
  """Anonymous resident memory: the checkpoint file's pages, mapped by safetensors, are page cache
  (RssFile) that the kernel reclaims, not memory the load holds."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


class _PeakRSS:
  """Samples the resident set size every few milliseconds on a thread."""

  def __enter__(self):
    self.peak, self._stop = _rss(), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss())
      time.sleep(0.005)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss())


def run(path: str, param_dtype: str = "bfloat16") -> dict:
  """Loads the checkpoint in `path` into fsdp-sharded params; the memory figures (bytes)."""
  cfg = hf_llm.load_hf_config(path, param_dtype=param_dtype, dtype=param_dtype)
  mesh = make_mesh({"fsdp": -1})
  rules = logical_rules("fsdp_tp")
  model = DecoderLM(cfg)
  init = lambda r: model.init(r, jnp.zeros((1, 1), jnp.int32))["params"]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = param_shardings(abstract, mesh, rules)
    # Zeros stand in for the fresh state (a random init would add its own transient to the RSS).
    zeros = lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), strip_boxes(abstract))
    params = sharded_init(zeros, shardings)
  jax.block_until_ready(params)
  model_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  before = device_bytes()
  peak = dict(before)
  place = jax.make_array_from_callback

  def placing(*args, **kw):  # the device bytes after every placed leaf
    out = place(*args, **kw)
    for d, b in device_bytes().items():
      peak[d] = max(peak.get(d, 0), b)
    return out

  rss_before = _rss()
  t0 = time.perf_counter()
  jax.make_array_from_callback = placing
  try:
    with _PeakRSS() as rss:
      params, _ = init_lib.load(params, {"lm": ((), cfg)}, {"lm": f"hf:{path}"}, donate=True)
      jax.block_until_ready(params)
  finally:
    jax.make_array_from_callback = place
  seconds = time.perf_counter() - t0
  after, rss_after = device_bytes(), _rss()
  largest = max(x.nbytes for x in jax.tree.leaves(params))
  return {
    "devices": len(jax.devices()),
    "params": sum(x.size for x in jax.tree.leaves(params)),
    "param_dtype": param_dtype,
    "model_gib": model_bytes / GiB,
    "largest_leaf_gib": largest / GiB,
    "device_before_gib": max(before.values()) / GiB,
    "device_peak_gib": max(peak.values()) / GiB,
    "device_after_gib": max(after.values()) / GiB,
    "rss_before_gib": rss_before / GiB,
    "rss_peak_gib": rss.peak / GiB,
    "rss_after_gib": rss_after / GiB,
    "host_transient_gib": (rss.peak - rss_before) / GiB,
    "load_s": seconds,
  }


def format_report(r: dict) -> str:
  return "\n".join(
    [
      f"{r['params'] / 1e9:.3f}B params ({r['param_dtype']}): {r['model_gib']:.3f} GiB, over "
      f"{r['devices']} devices; largest leaf {r['largest_leaf_gib']:.3f} GiB; load {r['load_s']:.1f} s",
      f"  per device (most loaded): before {r['device_before_gib']:.3f} GiB, peak "
      f"{r['device_peak_gib']:.3f} GiB, after {r['device_after_gib']:.3f} GiB "
      f"(peak = {r['device_peak_gib'] / r['model_gib']:.3f} x the model)",
      f"  process anonymous RSS: before {r['rss_before_gib']:.3f} GiB, peak {r['rss_peak_gib']:.3f} GiB, "
      f"after {r['rss_after_gib']:.3f} GiB: "
      f"the load adds at most {r['host_transient_gib']:.3f} GiB "
      f"({r['host_transient_gib'] / r['model_gib']:.2f} x the model)",
    ]
  )
