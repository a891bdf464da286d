"""Per-device memory of one OpenTSLM training step, Flamingo vs SoftPrompt, by series length.

python benchmarks/opentslm_memory.py [--num_layers=8 --embed_dim=512 --batch_size=4]

Compiles (does not run) the real train step and reads XLA's memory analysis
(medjax.benchmarks.opentslm_memory). Expected: SoftPrompt needs 21x Flamingo's memory at 1x10000
samples (table: docs/results.md).
"""

from absl import app, flags

from medjax.benchmarks import opentslm_memory

flags.DEFINE_integer("num_layers", 8, "Base LM layers.")
flags.DEFINE_integer("embed_dim", 512, "Base LM width.")
flags.DEFINE_integer("batch_size", 4, "Examples per step (the paper uses 4).")
flags.DEFINE_integer("text_len", 160, "Text tokens per example besides the series tokens.")
flags.DEFINE_string("cases", "1x100,1x1000,1x10000,12x1000", "NUM_SERIESxSAMPLES, comma-separated.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cases = [tuple(int(v) for v in case.split("x")) for case in FLAGS.cases.split(",")]
  names = ("num_layers", "embed_dim", "batch_size", "text_len")
  opentslm_memory.run(cases, **{n: FLAGS[n].value for n in names})


if __name__ == "__main__":
  app.run(main)
