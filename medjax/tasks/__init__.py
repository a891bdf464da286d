"""Task registry: `config.task` names the class that plugs a model family into the trainer."""

import importlib

TASKS = {
  "lm": "medjax.tasks.lm:LMTask",
  "bora": "medjax.tasks.bora:BoraTask",
  "medgemini_vqa": "medjax.tasks.medgemini:MedGeminiVQATask",
  "siglip": "medjax.tasks.medgemini:SigLIPTask",
  "opentslm": "medjax.tasks.opentslm:OpenTSLMTask",
  "anatomy_vlm": "medjax.tasks.anatomy_vlm:AnatomyVLMTask",
}


def get_task(config):
  """Instantiates the task named by `config.task`."""
  if config.task not in TASKS:
    raise ValueError(f"config.task: expected one of {sorted(TASKS)}, got {config.task!r}")
  module, cls = TASKS[config.task].split(":")
  return getattr(importlib.import_module(module), cls)(config)
