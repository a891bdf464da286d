"""Greedy decoding speed: medjax `generate` vs `transformers` `generate()` on one random Llama checkpoint.

python benchmarks/decode_vs_transformers.py --new_tokens=64 --repeats=5

Builds a small random LlamaForCausalLM, saves it as safetensors, loads it into medjax with
`load_hf_model`, and times both decoders on the same prompts (medjax after compilation, both after a
warm-up call). Also checks that both produce the same tokens. CPU by default; needs torch.
"""

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from absl import app, flags

from medjax.checkpoints import load_hf_model
from medjax.inference import generate

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


def random_llama(path: str) -> transformers.LlamaForCausalLM:
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=FLAGS.vocab,
    hidden_size=FLAGS.hidden,
    intermediate_size=3 * FLAGS.hidden,
    num_hidden_layers=FLAGS.layers,
    num_attention_heads=8,
    num_key_value_heads=4,
    rope_theta=500_000.0,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64,
    },
    max_position_embeddings=1024,
    initializer_range=0.1,
    tie_word_embeddings=True,
  )
  model = transformers.LlamaForCausalLM(cfg).eval()
  model.save_pretrained(path)
  return model


def best_time(fn, repeats: int) -> float:
  fn()  # warm-up (and compilation for medjax)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main(_):
  torch.set_num_threads(FLAGS.torch_threads)
  prompts = np.random.RandomState(0).randint(3, FLAGS.vocab, (FLAGS.batch, FLAGS.prompt_len))
  with tempfile.TemporaryDirectory() as path:
    hf_model = random_llama(path)
    model, params, _ = load_hf_model(path)
  n = FLAGS.new_tokens
  lengths = jnp.full((FLAGS.batch,), FLAGS.prompt_len, jnp.int32)
  rng = jax.random.PRNGKey(0)
  ours = lambda: jax.block_until_ready(
    generate(model, params, jnp.asarray(prompts), lengths, rng, max_new_tokens=n)[0]
  )
  ids = torch.tensor(prompts)

  def theirs():
    with torch.inference_mode():
      return hf_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
      )[:, FLAGS.prompt_len :]

  same = np.array_equal(np.asarray(ours()), theirs().numpy())
  t_ours, t_theirs = best_time(ours, FLAGS.repeats), best_time(theirs, FLAGS.repeats)
  tokens = FLAGS.batch * n
  print(
    f"Llama {FLAGS.layers}x{FLAGS.hidden}, vocab {FLAGS.vocab}, batch {FLAGS.batch}, prompt {FLAGS.prompt_len}, "
    f"{n} new tokens, best of {FLAGS.repeats}, {jax.devices()[0].platform}, torch threads "
    f"{torch.get_num_threads()}"
  )
  print(f"{'implementation':<28}{'seconds':>10}{'tokens/s':>12}")
  print(f"{'medjax generate (jit)':<28}{t_ours:>10.4f}{tokens / t_ours:>12.1f}")
  print(
    f"{'transformers ' + transformers.__version__:<28}{t_theirs:>10.4f}{tokens / t_theirs:>12.1f}"
  )
  print(f"speed-up medjax / transformers: {t_theirs / t_ours:.2f}x; same greedy tokens: {same}")


if __name__ == "__main__":
  app.run(main)
