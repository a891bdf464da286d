"""Greedy decoding speed: medjax `generate` vs `transformers` `generate()` on one random Llama checkpoint.

python benchmarks/decode_vs_transformers.py --new_tokens=64 --repeats=5

Times both decoders on the same prompts and checks they produce the same tokens
(medjax.benchmarks.decode_speed). CPU by default; needs torch.
"""

from absl import app, flags

from medjax.benchmarks import decode_speed

flags.DEFINE_integer("batch", 1, "Prompts decoded together.")
flags.DEFINE_integer("prompt_len", 32, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 64, "Greedy tokens generated per prompt.")
flags.DEFINE_integer("repeats", 5, "Timed calls per implementation.")
flags.DEFINE_integer("hidden", 256, "Model width.")
flags.DEFINE_integer("layers", 4, "Decoder layers.")
flags.DEFINE_integer("vocab", 2048, "Vocabulary size.")
flags.DEFINE_integer(
  "torch_threads",
  1,
  "torch intra-op threads (more threads on a busy 2-core machine "
  "make small-model decoding tens of times slower).",
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  names = ("batch", "prompt_len", "new_tokens", "repeats", "hidden", "layers", "vocab")
  print(
    decode_speed.compare(torch_threads=FLAGS.torch_threads, **{n: FLAGS[n].value for n in names})
  )


if __name__ == "__main__":
  app.run(main)
