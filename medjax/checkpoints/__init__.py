"""Importers for public checkpoints."""

from medjax.checkpoints.hf_bert import load_bert_config, load_bert_params
from medjax.checkpoints.hf_llm import load_hf_config, load_hf_model, load_hf_params
from medjax.checkpoints.hf_siglip import (
  load_siglip_model,
  load_siglip_params,
  load_siglip_text_config,
  load_siglip_vision_config,
  load_siglip_vision_params,
)

__all__ = [
  "load_bert_config",
  "load_bert_params",
  "load_hf_config",
  "load_hf_model",
  "load_hf_params",
  "load_siglip_model",
  "load_siglip_params",
  "load_siglip_text_config",
  "load_siglip_vision_config",
  "load_siglip_vision_params",
]
