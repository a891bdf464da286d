"""Losses shared by model families."""

from medjax.objectives.lm import masked_cross_entropy

__all__ = ["masked_cross_entropy"]
