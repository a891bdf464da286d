"""Training-step benchmark: step time, tokens/s, TFLOP/s per device, MFU and compiled memory.

python experiments/benchmark.py --configs=configs/llm.py:tiny,configs/llm.py:tiny-gemma --steps=10
Any config of any family works (its task defines the batch); --set applies overrides to every config,
e.g. --set=train.batch_size=8,data.seq_len=128; --config adds one config with its own overrides, e.g.
--config="configs/llm.py:llama-3.2-1b data.tokenizer=byte train.batch_size=8 model.attention_impl=cudnn".
How MFU is counted: medjax.benchmarks.step. benchmarks/gpu_mfu.sh runs the GPU table (docs/results.md).
"""

from absl import app, flags

from medjax.benchmarks import step

flags.DEFINE_list(
  "configs", ["configs/llm.py:tiny", "configs/llm.py:tiny-gemma"], "Config files with variants."
)
flags.DEFINE_integer(
  "steps", 10, "Timed steps per config (after one warm-up step); 0: compile only."
)
flags.DEFINE_list("set", [], "Overrides key=value applied to every config.")
flags.DEFINE_multi_string(
  "config", [], "One config and its own overrides: 'path:variant key=value ...'."
)
flags.DEFINE_string("json_out", "", "Also append each result as a JSON line to this file.")
flags.DEFINE_integer("data_batches", 20, "Batches drawn to time the input pipeline (0 to skip).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  runs = [(spec, list(FLAGS.set)) for spec in FLAGS.configs]
  runs += [(item.split()[0], list(FLAGS.set) + item.split()[1:]) for item in FLAGS.config]
  step.run(runs, FLAGS.steps, FLAGS.data_batches, FLAGS.json_out)


if __name__ == "__main__":
  app.run(main)
