"""OpenTSLM's staged curriculum (arXiv 2510.02410): each stage starts from the previous stage's best
(lowest validation loss) params and stops early on validation loss.

python experiments/curriculum.py --config=configs/opentslm_curriculum.py:flamingo_tiny --workdir=/tmp/tslm_cur
Variants `<model>_<size>`, model flamingo | softprompt:
- tiny: the embedded synthetic stages, HAR-CoT then ECG-QA-CoT (the public sets are not offline).
- paper: TSQA -> M4 captions -> HAR-CoT -> Sleep-CoT -> ECG-QA-CoT on Llama-3.2-1B; SoftPrompt adds
  LoRA (r=16, alpha=32) from stage 3 as in the paper. Its stages read the public datasets' TFDS builders
  (data/<data.name>), each prepared from the raw files in its `curriculum.<stage>.data.manual_dir`
  (e.g. --config.curriculum.tsqa.data.manual_dir=RAW/tsqa) into `data.data_dir`.
- fixture: the paper's five stages, optimiser groups, layout and per-epoch early stopping on the
  builders' dummy_data (data/<builder>/dummy_data; set data.data_dir), one epoch each, the paper
  architecture at tiny width on the frozen base LM of --config.init.lm=hf:DIR (model.lm must match
  it) with --config.data.tokenizer=DIR; for CI (tests/test_opentslm_curriculum.py).
`curriculum.stages` lists the stage names in order; `curriculum.<stage>` overrides the base config.
"""

import importlib.util
import os

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "_opentslm_flamingo_config",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "opentslm_flamingo.py"),
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

MODELS = ("flamingo", "softprompt")
SIZES = ("tiny", "paper", "fixture")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
# fixture stages: one data shape fitting every dummy_data file (ECG: 12 x 1000; Sleep: 1500 samples;
# ECG prompts: up to 1209 byte tokens), so that with a constant lr every stage runs the same
# compiled step (the persistent compilation cache then compiles it once)
FIXTURE_SHAPE = dict(num_series=12, series_len=1500, seq_len=1232)
# stage -> (series per example, samples per series): HAR 3 axes x 128, Sleep 1 EEG x 1500 (30 s at 50 Hz),
# ECG 12 leads x 1000 (10 s at 100 Hz); TSQA and M4 series up to the encoder's 4096 samples.
PAPER_STAGES = {
  "tsqa": (1, 4096),
  "m4_captions": (1, 4096),
  "har_cot": (3, 128),
  "sleep_cot": (1, 1500),
  "ecg_qa_cot": (12, 1000),
}
BUILDERS = {
  "har_cot": "opentslm_har_cot"
}  # stage -> its TFDS builder in data/, where the names differ


def _tiny_stages(model: str) -> dict:
  train = dict(eval_every=50, keep_best=True, early_stop_patience=2)
  return {
    "har": dict(
      data=dict(_base.synthetic_data("synthetic_har", model), test_size=0),
      train=dict(train, steps=300),
    ),
    "ecg": dict(
      data=dict(_base.synthetic_data("synthetic_ecg", model), test_size=0),
      train=dict(train, steps=600),
    ),
  }


def _paper_stages(model: str) -> dict:
  stages = {}
  for i, (name, (num_series, series_len)) in enumerate(PAPER_STAGES.items()):
    series_tokens = num_series * (
      series_len // 4 if model == "softprompt" else 1
    )  # one per patch of 4
    stage = dict(
      data=dict(
        name=BUILDERS.get(name, name),
        num_series=num_series,
        series_len=series_len,
        seq_len=1024 + series_tokens,
        test_size=0,
      ),
      train=dict(epochs=_base.PAPER_EPOCHS[name], early_stop_patience=5, keep_best=True),
    )
    if model == "softprompt" and i >= 2:
      stage["model"] = dict(lm=dict(lora_rank=16, lora_alpha=32.0))
    stages[name] = stage
  return stages


def _fixture_stages(model: str) -> dict:
  stages = _paper_stages(model)
  for name, stage in stages.items():
    stage["data"].update(
      FIXTURE_SHAPE,
      manual_dir=os.path.join(DATA, BUILDERS.get(name, name), "dummy_data"),
    )
    if model == "softprompt":
      stage["data"]["seq_len"] += FIXTURE_SHAPE["num_series"] * FIXTURE_SHAPE["series_len"] // 4
    stage["train"].update(epochs=1)
  return stages


def _tiny_width(c, model: str):
  """The paper architecture (depths, patching, cross-attention in every layer) at tiny width."""
  c.model.update(enc_dim=16)
  if model == "flamingo":
    c.model.update(
      num_latents=8, resampler_heads=2, resampler_head_dim=8, xattn_heads=2, xattn_head_dim=8
    )
  else:
    c.model.update(encoder_heads=2, encoder_mlp=32)
  c.model.lm.dtype = "float32"
  c.data.update(max_new_tokens=4, eval_gen_batch=1)
  c.train.update(batch_size=2, eval_batch_size=1, eval_batches=0, checkpoint_every=0, log_every=1)
  c.optim.update(schedule="constant", warmup_steps=0)  # the paper's groups; one step for all stages
  c.parallel.update(num_devices=1)  # 1-row validation splits: batches of 1
  c.parallel.mesh.update(data=-1, fsdp=1)


def get_config(arg=None):
  arg = arg or "flamingo_tiny"
  model, _, size = arg.partition("_")
  if model not in MODELS or size not in SIZES:
    raise ValueError(
      f"config variant: expected <model>_<size> with model in {MODELS} and size in {SIZES}, "
      f"got {arg!r}"
    )
  c = _base.make_config(model, "paper" if size == "fixture" else size)
  stages = {"tiny": _tiny_stages, "paper": _paper_stages, "fixture": _fixture_stages}[size](model)
  test_size = {"tiny": 64, "paper": 500, "fixture": 1}[size]
  with c.unlocked():
    if size == "fixture":
      _tiny_width(c, model)
    c.curriculum = ml_collections.ConfigDict(
      dict(stages=tuple(stages), test_size=test_size, **stages)
    )
  return c
