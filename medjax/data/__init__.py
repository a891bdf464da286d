"""Data: tokenizers, grain pipelines and embedded synthetic tasks."""
