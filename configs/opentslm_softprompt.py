"""OpenTSLM-SoftPrompt on the embedded synthetic HAR-CoT task (arXiv 2510.02410).

python experiments/train.py --config=configs/opentslm_softprompt.py:tiny --workdir=/tmp/tslm_sp
Variants: tiny (CPU, about a minute), tiny_ecg, paper (Llama-3.2-1B base, frozen). The recipe is shared
with configs/opentslm_flamingo.py. LoRA on the LM projections (the paper: r=16, alpha=32 from stage 3):
--config.model.lm.lora_rank=16 --config.model.lm.lora_alpha=32 [--config.model.lm.lora_targets=...];
the base stays frozen (optim.freeze spares the lora_a/lora_b params).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
  "_opentslm_flamingo_config",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "opentslm_flamingo.py"),
)
_flamingo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_flamingo)


def get_config(arg=None):
  return _flamingo.make_config("softprompt", arg)
