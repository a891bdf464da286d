"""OpenTSLM-Flamingo on the embedded synthetic HAR-CoT / ECG-QA-CoT tasks (arXiv 2510.02410).

python experiments/train.py --config=configs/opentslm_flamingo.py:tiny --workdir=/tmp/tslm
Variants: tiny (synthetic HAR, CPU, about a minute; the tiny LM trains jointly since a random frozen
LM cannot read, with the cross-attention gates open at init), tiny_ecg (synthetic 3-lead ECG with 4 question templates), paper (Llama-3.2-1B
base, frozen; bring its weights and tokenizer directory). The paper variants keep the params of the
lowest validation loss and stop early; `model.lm.lora_rank` > 0 adds LoRA (trained, base frozen).
Public datasets: --config.data.name=tsqa (m4_captions, opentslm_har_cot, sleep_cot, ecg_qa_cot)
--config.data.manual_dir=RAW [--config.data.data_dir=TFDS_DIR], with num_series / series_len / seq_len
fitting the data (configs/opentslm_curriculum.py:<model>_paper sets them per stage).
"""

import dataclasses

from medjax import config_lib
from medjax.models.llm import PRESETS
from medjax.nn.lora import frozen_base

VARIANTS = ("tiny", "tiny_ecg", "paper")
# embedded synthetic datasets -> data fields; seq_len per model variant (SoftPrompt adds a token per 4 samples)
SYNTHETIC = {
  "synthetic_har": dict(
    num_series=3, series_len=128, max_new_tokens=56, seq_len=dict(flamingo=168, softprompt=264)
  ),
  "synthetic_ecg": dict(
    num_series=3, series_len=200, max_new_tokens=72, seq_len=dict(flamingo=216, softprompt=368)
  ),
}


# The original's AdamW parameter groups (its curriculum trainer). Flamingo: lr 2e-4 for all, weight
# decay 0.1 on the gated cross-attention blocks only. SoftPrompt: weight decay 0.01 on every trained
# parameter (biases too: the catch-all group), encoder 2e-4, projector and LoRA adapters 1e-4.
PAPER_OPTIM = {
  "flamingo": dict(weight_decay=0.0, groups=((r"^xattn_\d+/", None, 0.1),)),
  "softprompt": dict(
    weight_decay=0.01,
    groups=((r"^proj(_norm)?/", 1e-4, None), (r"lora_[ab]$", 1e-4, None), (r".", None, None)),
  ),
}
# Epochs per curriculum stage in the original (early stopping after 5 epochs without improvement).
PAPER_EPOCHS = {"tsqa": 30, "m4_captions": 20, "har_cot": 30, "sleep_cot": 60, "ecg_qa_cot": 60}


def synthetic_data(name: str, model_variant: str) -> dict:
  """The `data` fields of an embedded synthetic dataset for `model_variant`."""
  d = dict(SYNTHETIC[name], name=name)
  d["seq_len"] = d["seq_len"][model_variant]
  return d


def make_config(model_variant: str, arg=None):
  """Shared by opentslm_flamingo.py and opentslm_softprompt.py."""
  variant = config_lib.parse_variant(arg, VARIANTS)
  c = config_lib.base_config()
  c.task = "opentslm"
  tiny = variant.startswith("tiny")
  lm = dataclasses.asdict(PRESETS["tiny" if tiny else "llama-3.2-1b"])
  if lm["rope_scaling"] is not None:
    lm["rope_scaling"] = dict(lm["rope_scaling"])
  lm["scan_layers"] = False if model_variant == "flamingo" else lm["scan_layers"]
  c.model = dict(
    variant=model_variant,
    ts_token_id=259 if tiny else 128_002,
    layout="paper",  # Flamingo: series marker, description, end-of-chunk; SoftPrompt: text, series
    eoc_token_id=(260 if tiny else 128_003) if model_variant == "flamingo" else -1,
    patch=4,
    enc_dim=128,
    max_patches=1024,
  )
  c.model.lm = lm
  # the frozen base LM from public weights, e.g. hf:DIR of Llama-3.2-1B; LoRA adapters start fresh
  c.init.lm = ""
  c.init.allow_missing = ("lm/*lora_*",)
  if model_variant == "flamingo":
    c.model.update(
      resampler_layers=6,
      num_latents=64,
      resampler_heads=8,
      resampler_head_dim=64,
      ff_mult=4,
      xattn_every=1,
      xattn_heads=8,
      xattn_head_dim=64,
    )
    if tiny:
      c.model.update(
        enc_dim=64,
        resampler_layers=1,
        num_latents=8,
        resampler_heads=2,
        resampler_head_dim=32,
        ff_mult=2,
        xattn_heads=2,
        xattn_head_dim=32,
        # open gates: the tiny LM trains from scratch, and closed gates starve the series path of
        # gradient for the first hundreds of steps (the paper's 0 keeps a pretrained LM intact)
        xattn_gate_init=1.0,
      )
  else:
    c.model.update(encoder_layers=6, encoder_heads=8, encoder_mlp=1024)
    if tiny:
      c.model.update(enc_dim=64, encoder_layers=1, encoder_heads=2, encoder_mlp=128)
  c.data = dict(
    tokenizer="byte",
    train_size=100_000,
    eval_size=512,
    eval_seed=12345,
    test_size=64,
    eval_gen_batch=64,
    data_dir="",
    manual_dir="",
    builder_config="",  # public builders' (data/<name>)
    **synthetic_data("synthetic_ecg" if variant == "tiny_ecg" else "synthetic_har", model_variant),
  )
  c.train.update(
    steps=600 if variant == "tiny_ecg" else 300,
    batch_size=16,
    log_every=50,
    eval_every=300,
    eval_batch_size=64,
    eval_batches=2,
    checkpoint_every=0,
  )
  c.optim.update(lr=3e-3, warmup_steps=0.05, schedule="cosine", weight_decay=0.01)
  if not tiny:  # the paper's recipe: frozen base LM, AdamW 2e-4, linear decay, 3% warmup, batch 4
    c.model.lm.dtype = "bfloat16"
    c.data.update(tokenizer="", seq_len=1024, eval_gen_batch=8, max_new_tokens=256)
    c.train.update(
      steps=20_000,  # the original trains epochs: curriculum stages set train.epochs
      batch_size=4,
      eval_every=1000,
      eval_batch_size=8,
      checkpoint_every=1000,
      keep_best=True,
      early_stop_patience=5,
    )
    c.optim.update(
      lr=2e-4,
      warmup_steps=0.03,
      schedule="linear",
      end_lr_frac=0.0,
      grad_clip=1.0,
      freeze=(frozen_base("lm/"),),
      **PAPER_OPTIM[model_variant],
    )
    c.parallel.mesh.update(data=1, fsdp=-1)
  return config_lib.finalize(c)


def get_config(arg=None):
  return make_config("flamingo", arg)
