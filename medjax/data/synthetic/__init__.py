"""Embedded synthetic tasks, generated in-process and learnable in minutes on CPU."""
