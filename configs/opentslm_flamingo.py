"""OpenTSLM-Flamingo on the embedded synthetic HAR-CoT task (arXiv 2510.02410).

python experiments/train.py --config=configs/opentslm_flamingo.py:tiny --workdir=/tmp/tslm
Variants: tiny (CPU, about a minute; the tiny LM trains jointly since a random frozen LM cannot
read), paper (Llama-3.2-1B base, frozen; bring its weights and tokenizer directory).
"""
import dataclasses

from medjax import config_lib
from medjax.models.llm import PRESETS

VARIANTS = ("tiny", "paper")


def make_config(model_variant: str, arg=None):
  """Shared by opentslm_flamingo.py and opentslm_softprompt.py."""
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.base_config()
  c.task = "opentslm"
  tiny = variant == "tiny"
  lm = dataclasses.asdict(PRESETS["tiny" if tiny else "llama-3.2-1b"])
  if lm["rope_scaling"] is not None:
    lm["rope_scaling"] = dict(lm["rope_scaling"])
  lm["scan_layers"] = False if model_variant == "flamingo" else lm["scan_layers"]
  c.model = dict(variant=model_variant, ts_token_id=259 if tiny else 128_002, patch=4, enc_dim=128,
                 max_patches=1024)
  c.model.lm = lm
  if model_variant == "flamingo":
    c.model.update(resampler_layers=6, num_latents=64, resampler_heads=8, resampler_head_dim=64, ff_mult=4,
                   xattn_every=1, xattn_heads=8, xattn_head_dim=64)
    if tiny:
      c.model.update(enc_dim=64, resampler_layers=1, num_latents=8, resampler_heads=2, resampler_head_dim=32,
                     ff_mult=2, xattn_heads=2, xattn_head_dim=32)
  else:
    c.model.update(encoder_layers=6, encoder_heads=8, encoder_mlp=1024)
    if tiny:
      c.model.update(enc_dim=64, encoder_layers=1, encoder_heads=2, encoder_mlp=128)
  c.data = dict(name="synthetic_har", tokenizer="byte", num_series=3, series_len=128, train_examples=100_000,
                eval_examples=512, eval_seed=12345, eval_questions=64, eval_gen_batch=64, max_new_tokens=56,
                seq_len=168 if model_variant == "flamingo" else 264)
  c.train.update(steps=300, batch_size=16, log_every=50, eval_every=300, eval_batch_size=64, eval_batches=2,
                 checkpoint_every=0)
  c.optim.update(lr=3e-3, warmup_steps=0.05, schedule="cosine", weight_decay=0.01)
  if not tiny:  # the paper's recipe: frozen base LM, AdamW 2e-4, linear decay, 3% warmup, batch 4
    c.model.lm.dtype = "bfloat16"
    c.data.update(tokenizer="", seq_len=1024, eval_gen_batch=8, max_new_tokens=256)
    c.train.update(steps=20_000, batch_size=4, eval_every=1000, eval_batch_size=8, checkpoint_every=1000)
    c.optim.update(lr=2e-4, warmup_steps=0.03, schedule="linear", end_lr_frac=0.0, weight_decay=0.01,
                   grad_clip=1.0, freeze=("^lm/",))
    c.parallel.mesh.update(data=1, fsdp=-1)
  return config_lib.finalize(c)


def get_config(arg=None):
  return make_config("flamingo", arg)
