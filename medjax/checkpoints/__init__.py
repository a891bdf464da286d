"""Importers for public checkpoints."""
from medjax.checkpoints.hf_llm import load_hf_config, load_hf_model, load_hf_params

__all__ = ["load_hf_config", "load_hf_model", "load_hf_params"]
