"""Measurements behind docs/results.md: speed, memory and quality studies that train or load models.

The scripts in experiments/ and benchmarks/ parse flags and call these modules; notebooks and tests
import them directly. Each sits on top of the training loop (`medjax.train`).
"""
