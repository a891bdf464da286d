"""Jit-compiled KV-cache decoding and prompting strategies."""

from medjax.inference.decode import generate, generate_text, pad_prompts, sample_logits

__all__ = ["generate", "generate_text", "pad_prompts", "sample_logits"]
