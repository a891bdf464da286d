"""Decoder LM (Llama-3.x / Gemma-3 architectures) on the embedded triage MCQ task or a text dataset.

python experiments/train.py --config=configs/llm.py:tiny --workdir=/tmp/lm
Variants: tiny (CPU, ~3 min; tests/test_train.py asserts >= 80% held-out answer accuracy after 200 steps, chance 25%), tiny-gemma, and the published sizes llama-3.2-1b, llama-3.2-3b,
gemma-3-270m, gemma-3-1b (paper-size shapes; bring weights with the checkpoint importer).
"""

import dataclasses

from medjax import config_lib
from medjax.models.llm import PRESETS


def get_config(arg=None):
  variant = config_lib.parse_variant(arg, PRESETS)
  c = config_lib.base_config()
  c.task = "lm"
  model = dataclasses.asdict(PRESETS[variant])
  if model["rope_scaling"] is not None:
    model["rope_scaling"] = dict(model["rope_scaling"])
  c.model = model
  c.model.preset = variant
  c.init.lm = ""  # e.g. hf:DIR, a Hugging Face Llama-3.x / Gemma-3 directory of this preset
  c.data.name = "synthetic_triage"
  c.data.tokenizer = "byte"
  c.data.data_dir = ""  # TFDS data_dir; default ~/tensorflow_datasets
  c.data.seq_len = 144
  c.data.cot = True
  c.data.refine_frac = 0.0  # share of train examples in ensemble-refinement format (needs cot)
  c.data.direct_frac = (
    0.0  # share of train examples answered directly, without chain of thought (needs cot)
  )
  c.data.refine_candidates = 4  # at most this many candidate explanations per refinement example
  c.data.test_size = 128
  c.data.max_new_tokens = 72
  c.train.update(
    steps=400,
    batch_size=32,
    log_every=50,
    eval_every=200,
    eval_batch_size=64,
    eval_batches=4,
    checkpoint_every=200,
  )
  c.optim.update(lr=3e-3, warmup_steps=0.05, schedule="cosine", weight_decay=0.01)
  if variant not in ("tiny", "tiny-gemma"):
    c.model.dtype = "bfloat16"
    c.data.tokenizer = ""  # a Hugging Face tokenizer directory
    c.data.seq_len = 2048
    c.train.update(batch_size=256, steps=10_000)
    c.optim.update(lr=3e-4)
    c.parallel.rules = "fsdp_tp"
    c.parallel.mesh.update(data=1, fsdp=-1)
  return config_lib.finalize(c)
