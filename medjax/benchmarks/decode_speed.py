"""Greedy decoding speed: medjax `generate` vs `transformers` `generate()` on one random Llama checkpoint.

`compare` builds a small random LlamaForCausalLM, saves it as safetensors, loads it into medjax with
`load_hf_model`, and times both decoders on the same prompts (medjax after compilation, both after a
warm-up call); it also checks that both produce the same tokens. Needs torch and transformers.
"""

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from medjax.checkpoints import load_hf_model
from medjax.inference import generate


def random_llama(path: str, *, hidden: int, layers: int, vocab: int):
  """A random Llama-3-style LlamaForCausalLM (GQA, llama3 RoPE scaling), saved to `path`."""
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=vocab,
    hidden_size=hidden,
    intermediate_size=3 * hidden,
    num_hidden_layers=layers,
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


def compare(*, batch, prompt_len, new_tokens, repeats, hidden, layers, vocab, torch_threads) -> str:
  """Times both decoders (best of `repeats`); -> the report as text."""
  torch.set_num_threads(torch_threads)
  prompts = np.random.RandomState(0).randint(3, vocab, (batch, prompt_len))
  with tempfile.TemporaryDirectory() as path:
    hf_model = random_llama(path, hidden=hidden, layers=layers, vocab=vocab)
    model, params, _ = load_hf_model(path)
  n = new_tokens
  lengths = jnp.full((batch,), prompt_len, jnp.int32)
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
      )[:, prompt_len:]

  same = np.array_equal(np.asarray(ours()), theirs().numpy())
  t_ours, t_theirs = best_time(ours, repeats), best_time(theirs, repeats)
  tokens = batch * n
  return "\n".join(
    [
      f"Llama {layers}x{hidden}, vocab {vocab}, batch {batch}, prompt {prompt_len}, {n} new tokens, "
      f"best of {repeats}, {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}",
      f"{'implementation':<28}{'seconds':>10}{'tokens/s':>12}",
      f"{'medjax generate (jit)':<28}{t_ours:>10.4f}{tokens / t_ours:>12.1f}",
      f"{'transformers ' + transformers.__version__:<28}{t_theirs:>10.4f}{tokens / t_theirs:>12.1f}",
      f"speed-up medjax / transformers: {t_theirs / t_ours:.2f}x; same greedy tokens: {same}",
    ]
  )
