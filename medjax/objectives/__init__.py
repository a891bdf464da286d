"""Losses shared by model families."""

from medjax.objectives.lm import chunked_cross_entropy, lm_loss, masked_cross_entropy

__all__ = ["chunked_cross_entropy", "lm_loss", "masked_cross_entropy"]
