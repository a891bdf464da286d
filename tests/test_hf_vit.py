"""ViT checkpoint import: features equal `transformers.ViTModel` on tiny random models (pixels through
the checkpoint's processor), and the Anatomy-VLM image slot starts from such a checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="parity tests run the reference transformers models on torch"
)
transformers = pytest.importorskip(
  "transformers", reason="parity tests need the reference transformers models"
)

from torch_reference import randomize  # noqa: E402

from medjax.checkpoints import hf_vit  # noqa: E402
from medjax.models.vit import ViT  # noqa: E402

torch.set_num_threads(1)
VIT = dict(
  hidden_size=64,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=128,
  image_size=64,
  patch_size=8,
  num_channels=3,
  hidden_act="gelu",
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """name -> (directory, torch ViTModel): a ViTModel (with its pooler) and a classifier."""
  root = tmp_path_factory.mktemp("vit")
  torch.manual_seed(0)
  config = transformers.ViTConfig(**VIT)
  out = {}
  for name, cls in (
    ("model", transformers.ViTModel),
    ("cls", transformers.ViTForImageClassification),
  ):
    model = randomize(cls(config))
    model.save_pretrained(str(root / name))
    transformers.ViTImageProcessor(do_resize=False).save_pretrained(str(root / name))
    out[name] = (str(root / name), model if name == "model" else model.vit)
  return out


def _reference(model, pixels):
  """pixels [B, H, W, 3] in [0, 1] -> last hidden state, through the checkpoint's processor."""
  processor = transformers.ViTImageProcessor(do_resize=False, do_rescale=False)
  inputs = processor(list(pixels), return_tensors="pt", input_data_format="channels_last")
  with torch.no_grad():
    return model(pixel_values=inputs["pixel_values"]).last_hidden_state.numpy()


@pytest.mark.parametrize("name", ["model", "cls"])
def test_class_token_and_patches_equal_transformers(checkpoints, name):
  path, ref = checkpoints[name]
  cfg = hf_vit.load_vit_config(path)
  assert (cfg.pool, cfg.act, cfg.input_range) == ("cls", "gelu", (-1.0, 1.0))
  params, unused = hf_vit.load_vit_params(path, cfg)
  assert unused == (
    ("pooler.dense.bias", "pooler.dense.weight")
    if name == "model"
    else ("classifier.bias", "classifier.weight")
  )
  pixels = np.random.default_rng(0).random((2, 64, 64, 3), np.float32)
  out = ViT(cfg).apply({"params": params}, jnp.asarray(pixels))
  want = _reference(ref, pixels)
  np.testing.assert_allclose(np.asarray(out["pooled"]), want[:, 0], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["tokens"]), want[:, 1:], atol=1e-4, rtol=0)


def test_anatomy_image_slot_starts_from_a_vit_checkpoint_in_grey(checkpoints):
  """configs/anatomy_vlm.py:tiny's image slot with class-token pooling: the one-channel tower reads
  the RGB checkpoint (kernel summed over channels), so a grey image gives transformers' features of
  the same image replicated to RGB; a wrong architecture is refused by name."""
  import flax.linen as nn

  from medjax import config_lib
  from medjax.checkpoints import init as init_lib
  from medjax.tasks import get_task

  path, ref = checkpoints["model"]
  config = config_lib.config_from_file("configs/anatomy_vlm.py:tiny", [f"init.image=hf:{path}"])
  with config.unlocked():
    config.model.vit.update(pool="cls", act="gelu", norm_eps=1e-12, input_range=(-1.0, 1.0))
  task = get_task(config)
  where, cfg = task.init_slots()["image"]
  assert where == ("vision",) and cfg.channels == 1
  grey = np.random.default_rng(1).random((2, 64, 64, 1), np.float32)
  fresh = nn.meta.unbox(ViT(cfg).init(jax.random.PRNGKey(0), grey)["params"])
  params, (report,) = init_lib.load({"vision": fresh}, task.init_slots(), config.init)
  assert report.loaded == len(jax.tree.leaves(fresh)) and not report.new
  assert report.unused == ("pooler.dense.bias", "pooler.dense.weight")
  out = ViT(cfg).apply({"params": params["vision"]}, jnp.asarray(grey))
  want = _reference(ref, np.repeat(grey, 3, axis=-1))
  np.testing.assert_allclose(np.asarray(out["pooled"]), want[:, 0], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["tokens"]), want[:, 1:], atol=1e-4, rtol=0)
  with config.unlocked():
    config.model.vit.heads = 2
  with pytest.raises(
    ValueError, match=r"init.image: the checkpoint's heads is 4, the config's is 2"
  ):
    init_lib.read("image", "hf", path, get_task(config).init_slots()["image"][1])


def test_position_table_of_another_size_is_refused(checkpoints, tmp_path):
  path, _ = checkpoints["model"]
  config = json.loads(open(f"{path}/config.json").read())
  assert config["model_type"] == "vit"
  cfg = hf_vit.load_vit_config(path, image_size=32)
  with pytest.raises(ValueError, match=r"position_embeddings: expected shape \(1, 17, 64\)"):
    hf_vit.load_vit_params(path, cfg)
