"""A trained model for inference, from a medjax training workdir or a Hugging Face directory."""

import ml_collections
import orbax.checkpoint as ocp

from medjax import paths
from medjax.config_lib import config_from_file
from medjax.train.loop import trained_params


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The ml_collections config stored with the newest checkpoint of a medjax workdir (local or
  gs://)."""
  mngr = ocp.CheckpointManager(
    paths.resolve(workdir) / "checkpoints", item_names=("state", "data", "config")
  )
  step = mngr.latest_step()
  if step is None:
    raise ValueError(f"--checkpoint: no checkpoint under {workdir}/checkpoints")
  cfg = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  mngr.close()
  return ml_collections.ConfigDict(cfg)


def load_model(checkpoint: str, config_spec: str | None = None):
  """-> (model, params, tokenizer, config or None) from a medjax workdir (its saved config unless
  `config_spec` names one) or a Hugging Face directory (config.json + safetensors + tokenizer.json),
  given bare or, as training's `init.<slot>` takes it, as `hf:DIR`."""
  if checkpoint.startswith("hf:"):
    rest = checkpoint[len("hf:") :]
    if not (paths.resolve(rest) / "config.json").exists():
      raise ValueError(
        f"--checkpoint: {checkpoint}: expected a Hugging Face directory with config.json"
      )
    checkpoint = rest
  root = paths.resolve(checkpoint)  # local or gs://
  if (root / "config.json").exists():
    try:  # optional dependencies (safetensors, tokenizers)
      from medjax.checkpoints.hf_llm import load_hf_model
    except ImportError as e:
      raise ValueError(
        f"--checkpoint: {checkpoint} is a Hugging Face directory but the importer "
        f"medjax.checkpoints.hf_llm is unavailable ({e})"
      ) from e
    with paths.local_dir(checkpoint, "--checkpoint") as local:
      model, params, tokenizer = load_hf_model(local)
    if tokenizer is None:
      raise ValueError(
        f"--checkpoint: no tokenizer.json in the Hugging Face directory {checkpoint}"
      )
    return model, params, tokenizer, None
  if not (root / "checkpoints").is_dir():
    raise ValueError(
      f"--checkpoint: expected a medjax workdir (with checkpoints/) or a Hugging Face "
      f"directory (with config.json), got {checkpoint}"
    )
  config = config_from_file(config_spec) if config_spec else saved_config(checkpoint)
  params, model, task, _, _, _ = trained_params(config, checkpoint)
  return model, params, task.tokenizer, config
