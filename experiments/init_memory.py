"""Per-device and host memory while a 1B-parameter Hugging Face checkpoint loads into sharded params.

XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/init_memory.py --dir=/tmp/llama1b
Writes random Llama-3.2-1B weights in the hub's layout into --dir when it has none (2.5 GB), then
loads them as `--config.init.lm=hf:DIR` does. How it measures: medjax.benchmarks.init_memory.
"""

import os

from absl import app, flags

flags.DEFINE_string("dir", None, "Checkpoint directory (written with random weights if empty).")
flags.DEFINE_string("param_dtype", "bfloat16", "dtype of the params the checkpoint fills.")
flags.mark_flags_as_required(["dir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from medjax.benchmarks import init_memory

  if not os.path.exists(os.path.join(FLAGS.dir, "model.safetensors")):
    size = init_memory.write_random_checkpoint(FLAGS.dir)
    print(f"wrote {size / 2**30:.2f} GiB of random Llama-3.2-1B weights to {FLAGS.dir}")
  print(init_memory.format_report(init_memory.run(FLAGS.dir, FLAGS.param_dtype)))


if __name__ == "__main__":
  app.run(main)
