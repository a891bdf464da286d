"""Per-device memory of one OpenTSLM training step, Flamingo vs SoftPrompt, by series length.

python benchmarks/opentslm_memory.py [--num_layers=8 --embed_dim=512 --batch_size=4]

Compiles (does not run) the real train step of the one training loop for the paper recipe (frozen
base LM, paper-size encoders) on a small-but-not-tiny LM and reads XLA's `memory_analysis()`.
SoftPrompt puts one LM token per 4 samples into the context, so its memory grows with the series
length; Flamingo resamples every series to a fixed number of latents and stays nearly flat.

Defaults (8 x 512 LM, vocab 8192, bf16, batch 4, paper-size encoders), XLA:CPU, total MiB per device:
  series     Flamingo  SoftPrompt (LM tokens)   ratio
  1x100        1213        824      (185)        0.68
  1x1000       1263       1803      (410)        1.43
  1x10000      1783      37053     (2660)       20.8
  12x1000      2917      32680     (3160)       11.2
"""

from absl import app, flags

from medjax.config_lib import config_from_file

flags.DEFINE_integer("num_layers", 8, "Base LM layers.")
flags.DEFINE_integer("embed_dim", 512, "Base LM width.")
flags.DEFINE_integer("batch_size", 4, "Examples per step (the paper uses 4).")
flags.DEFINE_integer("text_len", 160, "Text tokens per example besides the series tokens.")
flags.DEFINE_string("cases", "1x100,1x1000,1x10000,12x1000", "NUM_SERIESxSAMPLES, comma-separated.")
FLAGS = flags.FLAGS


def _config(variant: str, num_series: int, samples: int):
  c = config_from_file(f"configs/opentslm_{variant}.py:paper")
  with c.unlocked():
    heads = FLAGS.embed_dim // 64
    c.model.lm.update(
      vocab_size=8192,
      embed_dim=FLAGS.embed_dim,
      num_layers=FLAGS.num_layers,
      num_heads=heads,
      num_kv_heads=max(heads // 2, 1),
      head_dim=64,
      mlp_dim=3 * FLAGS.embed_dim,
    )
    patches = -(-samples // c.model.patch)
    c.model.update(ts_token_id=259, max_patches=max(c.model.max_patches, patches))
    extra = num_series * patches if variant == "softprompt" else num_series
    c.data.update(
      tokenizer="byte", num_series=num_series, series_len=samples, seq_len=FLAGS.text_len + extra
    )
    c.train.batch_size = FLAGS.batch_size
    c.parallel.mesh.update(data=1, fsdp=-1)
  return c


def step_memory(variant: str, num_series: int, samples: int) -> dict:
  """Compiled per-device memory of one train step (bytes) and the LM sequence length (nothing runs)."""
  import jax

  from medjax.train.aot import compile_train_step
  from medjax.train.metrics import compiled_cost

  c = _config(variant, num_series, samples)
  compiled = compile_train_step(c, jax.devices()[:1])[0]
  return {"seq_len": c.data.seq_len, **compiled_cost(compiled)}


def main(argv):
  del argv
  cases = [tuple(int(v) for v in case.split("x")) for case in FLAGS.cases.split(",")]
  rows = {}
  print(
    f"LM: {FLAGS.num_layers} layers x {FLAGS.embed_dim}, batch {FLAGS.batch_size}, frozen base; "
    "per-device MiB from XLA memory_analysis (args + outputs + temps - aliased)"
  )
  print(
    f"{'series':>9} | {'variant':>10} | {'LM tokens':>9} | {'args':>8} | {'temp':>8} | {'total':>8}"
  )
  for m, s in cases:
    for variant in ("flamingo", "softprompt"):
      r = rows[(m, s, variant)] = step_memory(variant, m, s)
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


if __name__ == "__main__":
  app.run(main)
