"""Per-device memory of one OpenTSLM training step, Flamingo vs SoftPrompt, by series length.

Compiles (does not run) the real train step of the one training loop for the paper recipe (frozen
base LM, paper-size encoders) on a small-but-not-tiny LM and reads XLA's `memory_analysis()`.
SoftPrompt puts one LM token per 4 samples into the context, so its memory grows with the series
length; Flamingo resamples every series to a fixed number of latents and stays nearly flat.
Measured figures: docs/results.md.
"""

import jax

from medjax.config_lib import config_from_file
from medjax.train.aot import compile_train_step
from medjax.train.metrics import compiled_cost


def step_config(
  variant: str,
  num_series: int,
  samples: int,
  *,
  num_layers: int = 8,
  embed_dim: int = 512,
  batch_size: int = 4,
  text_len: int = 160,
):
  """configs/opentslm_<variant>.py:paper on a `num_layers` x `embed_dim` LM with `num_series`
  series of `samples` samples and `text_len` text tokens per example."""
  c = config_from_file(f"configs/opentslm_{variant}.py:paper")
  with c.unlocked():
    heads = embed_dim // 64
    c.model.lm.update(
      vocab_size=8192,
      embed_dim=embed_dim,
      num_layers=num_layers,
      num_heads=heads,
      num_kv_heads=max(heads // 2, 1),
      head_dim=64,
      mlp_dim=3 * embed_dim,
    )
    patches = -(-samples // c.model.patch)
    # the paper's placeholder ids are Llama-3's (128k vocabulary): the byte tokenizer's ids instead
    eoc = 260 if c.model.eoc_token_id >= 0 else -1
    c.model.update(ts_token_id=259, eoc_token_id=eoc, max_patches=max(c.model.max_patches, patches))
    extra = num_series * patches if variant == "softprompt" else num_series
    c.data.update(
      tokenizer="byte", num_series=num_series, series_len=samples, seq_len=text_len + extra
    )
    c.train.batch_size = batch_size
    c.parallel.mesh.update(data=1, fsdp=-1)
  return c


def step_memory(variant: str, num_series: int, samples: int, **model_kw) -> dict:
  """Compiled per-device memory of one train step (bytes) and the LM sequence length (nothing runs)."""
  c = step_config(variant, num_series, samples, **model_kw)
  compiled = compile_train_step(c, jax.devices()[:1])[0]
  return {"seq_len": c.data.seq_len, **compiled_cost(compiled)}


def run(cases, **model_kw):
  """Prints one row per (num_series, samples) case and variant, then the memory ratios."""
  rows = {}
  print(
    f"LM: {model_kw.get('num_layers', 8)} layers x {model_kw.get('embed_dim', 512)}, batch "
    f"{model_kw.get('batch_size', 4)}, frozen base; per-device MiB from XLA memory_analysis "
    "(args + outputs + temps - aliased)"
  )
  print(
    f"{'series':>9} | {'variant':>10} | {'LM tokens':>9} | {'args':>8} | {'temp':>8} | {'total':>8}"
  )
  for m, s in cases:
    for variant in ("flamingo", "softprompt"):
      r = rows[(m, s, variant)] = step_memory(variant, m, s, **model_kw)
      mib = lambda k: r.get(k, 0) / 2**20
      print(
        f"{f'{m}x{s}':>9} | {variant:>10} | {r['seq_len']:>9} | {mib('argument_bytes'):8.1f} | "
        f"{mib('temp_bytes'):8.1f} | {mib('total_bytes'):8.1f}",
        flush=True,
      )
  for m, s in cases:
    f, p = rows[(m, s, "flamingo")], rows[(m, s, "softprompt")]
    if f.get("total_bytes"):
      print(
        f"{m}x{s}: SoftPrompt / Flamingo total memory = {p['total_bytes'] / f['total_bytes']:.2f}"
      )
  return rows
