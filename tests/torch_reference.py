"""Shared helper of the parity tests that run reference torch models (transformers, diffusers)."""


def randomize(model, seed: int = 1, only_1d: bool = False):
  """Adds 0.2 x N(0, 1) to every parameter (with `only_1d`, to norms and biases only): HF initialises
  norms to identity and biases to zero, so random values make a wrong mapping observable."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if not only_1d or p.ndim == 1:
        p.add_(0.2 * torch.randn(p.shape, generator=gen))
  return model.eval()


def llama_like_llm_tiny(path, **overrides):
  """A random transformers LlamaForCausalLM with configs/llm.py:tiny's shapes (`overrides` change
  its LlamaConfig), saved to `path` in its on-disk layout; returns the model."""
  import torch
  import transformers

  torch.manual_seed(0)
  cfg = dict(
    vocab_size=264,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-5,
    rope_theta=10_000.0,
    tie_word_embeddings=True,
    max_position_embeddings=512,
    initializer_range=0.2,
  )
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**cfg, **overrides}))
  randomize(model, only_1d=True).save_pretrained(str(path))  # a misplaced norm shows
  return model


def tiny_gemma3(**overrides):
  """A random transformers Gemma3ForCausalLM: sliding-window and global layers, Gemma-3's rope
  bases, query scale and final soft-cap (`overrides` change its Gemma3TextConfig)."""
  import torch
  import transformers

  torch.manual_seed(0)
  cfg = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=24,
    sliding_window=4,
    layer_types=["sliding_attention", "full_attention"] * 2,
    rope_theta=1e6,
    rope_local_base_freq=1e4,
    final_logit_softcapping=4.0,
    max_position_embeddings=64,
    initializer_range=0.2,
  )
  config = transformers.Gemma3TextConfig(**{**cfg, **overrides})
  return randomize(transformers.Gemma3ForCausalLM(config), only_1d=True)
