"""SigLIP checkpoint import: features and logits equal `transformers` on tiny random models."""

import dataclasses
import json

import flax
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

from torch_reference import randomize, tiny_gemma3  # noqa: E402

from medjax.checkpoints import (  # noqa: E402
  load_siglip_model,
  load_siglip_params,
  load_siglip_text_config,
  load_siglip_vision_config,
  load_siglip_vision_params,
)
from medjax.models.vit import ViT, vit_config  # noqa: E402

torch.set_num_threads(1)
VISION = dict(
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  image_size=16,
  patch_size=4,
  num_channels=3,
)
TEXT = dict(
  vocab_size=50,
  hidden_size=32,
  intermediate_size=40,
  num_hidden_layers=2,
  num_attention_heads=2,
  max_position_embeddings=10,
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """name -> (directory, torch model): a SiglipVisionModel and a SiglipModel."""
  root = tmp_path_factory.mktemp("siglip")
  torch.manual_seed(0)
  vision = randomize(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION)))
  full = randomize(
    transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VISION))
  )
  out = {}
  for name, model in (("vision", vision), ("full", full)):
    model.save_pretrained(str(root / name))
    out[name] = (str(root / name), model)
  return out


def _images(n=2, seed=0):
  """Pixels in [0, 1], as medjax pipelines give them."""
  return np.random.RandomState(seed).rand(n, 16, 16, 3).astype(np.float32)


def _pixel_values(images):
  """SigLIP's processor: [0, 1] -> (x - 0.5) / 0.5, channels first."""
  return torch.tensor((2.0 * images - 1.0).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("name", ["vision", "full"])
def test_vision_tower_matches_transformers(checkpoints, name):
  path, model = checkpoints[name]
  cfg = load_siglip_vision_config(path)
  params = load_siglip_vision_params(path, cfg)
  images = _images()
  tower = model if name == "vision" else model.vision_model
  with torch.no_grad():
    ref = tower(pixel_values=_pixel_values(images))
  out = ViT(cfg).apply({"params": params}, jnp.asarray(images))
  assert np.abs(ref.pooler_output.numpy()).max() > 0.5  # features are not trivially small
  np.testing.assert_allclose(
    np.asarray(out["tokens"]), ref.last_hidden_state.numpy(), atol=1e-4, rtol=0
  )
  np.testing.assert_allclose(
    np.asarray(out["pooled"]), ref.pooler_output.numpy(), atol=1e-4, rtol=0
  )


def test_two_tower_logits_match_transformers(checkpoints):
  path, model = checkpoints["full"]
  module, params = load_siglip_model(path)
  images = _images(3, seed=1)
  tokens = np.random.RandomState(2).randint(
    0, TEXT["vocab_size"], (3, TEXT["max_position_embeddings"])
  )
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens), pixel_values=_pixel_values(images))
  out = module.apply({"params": params}, jnp.asarray(images), jnp.asarray(tokens))
  logits = np.exp(float(out["t_prime"])) * np.asarray(out["zimg"]) @ np.asarray(
    out["ztxt"]
  ).T + float(out["bias"])
  np.testing.assert_allclose(np.asarray(out["zimg"]), ref.image_embeds.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["ztxt"]), ref.text_embeds.numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits, ref.logits_per_image.numpy(), atol=1e-4, rtol=0)
  assert np.ptp(logits) > 0.1  # pairs are told apart


def test_configs_map_fields(checkpoints):
  path, _ = checkpoints["full"]
  vision = load_siglip_vision_config(path)
  assert (
    vision.width,
    vision.depth,
    vision.heads,
    vision.mlp_dim,
    vision.patch_size,
    vision.image_size,
    vision.channels,
    vision.pool,
    vision.act,
  ) == (32, 2, 4, 48, 4, 16, 3, "map", "gelu_tanh")
  assert vision.input_range == (-1.0, 1.0)  # SigLIP's processor: mean 0.5, std 0.5
  text, embed_dim = load_siglip_text_config(path)
  assert (
    text.vocab_size,
    text.max_len,
    text.width,
    text.depth,
    text.heads,
    text.mlp_dim,
    text.pool,
    embed_dim,
  ) == (50, 10, 32, 2, 2, 40, "last", 32)


def test_pixel_range_follows_the_preprocessor_config(tmp_path):
  path = _write_config(tmp_path, SO400M_224)
  proc = tmp_path / "preprocessor_config.json"
  proc.write_text(json.dumps({"image_mean": [0.25] * 3, "image_std": [0.25] * 3}))
  assert load_siglip_vision_config(path).input_range == (-1.0, 3.0)
  proc.write_text(json.dumps({"image_mean": [0.485, 0.456, 0.406], "image_std": [0.2] * 3}))
  with pytest.raises(ValueError, match=r"expected one image_mean and image_std for every channel"):
    load_siglip_vision_config(path)


def _write_config(tmp_path, hf):
  (tmp_path / "config.json").write_text(json.dumps(hf))
  return str(tmp_path)


# The vision section of google/siglip-so400m-patch14-224's config.json (the rest takes transformers' defaults).
SO400M_224 = {
  "architectures": ["SiglipModel"],
  "model_type": "siglip",
  "text_config": {"hidden_size": 1152},
  "vision_config": {
    "hidden_size": 1152,
    "image_size": 224,
    "intermediate_size": 4304,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "patch_size": 14,
  },
}


def test_hub_config_maps_to_the_so400m_preset(tmp_path):
  assert load_siglip_vision_config(_write_config(tmp_path, SO400M_224)) == vit_config("so400m-14")


@pytest.mark.parametrize(
  "change,field",
  [
    ({"model_type": "siglip2_vision_model"}, "model_type"),
    ({"hidden_act": "quick_gelu"}, "hidden_act"),
  ],
)
def test_unsupported_configs_name_the_field(tmp_path, change, field):
  hf = {"model_type": "siglip_vision_model", **VISION, **change}
  with pytest.raises(ValueError, match=f"'{field}'"):
    load_siglip_vision_config(_write_config(tmp_path, hf))


def test_vision_only_checkpoint_has_no_text_tower(checkpoints):
  with pytest.raises(ValueError, match="'model_type'.*'siglip'"):
    load_siglip_text_config(checkpoints["vision"][0])


def test_params_that_do_not_fit_the_config_are_rejected(checkpoints):
  path, _ = checkpoints["vision"]
  cfg = load_siglip_vision_config(path)
  with pytest.raises(ValueError, match="fc1.weight.*expected shape"):
    load_siglip_vision_params(path, dataclasses.replace(cfg, mlp_dim=64))
  with pytest.raises(ValueError, match="no place in the config.*head"):
    load_siglip_vision_params(path, dataclasses.replace(cfg, pool="none"))
  with pytest.raises(ValueError, match="pool: expected 'map'"):
    load_siglip_vision_params(path, dataclasses.replace(cfg, pool="gap"))
  full, _ = checkpoints["full"]
  vision, (text, _) = load_siglip_vision_config(full), load_siglip_text_config(full)
  with pytest.raises(ValueError, match="embed_dim"):
    load_siglip_params(full, vision, text, 16)


def test_init_slot_loads_a_headed_checkpoint_into_a_tower_without_pooling(checkpoints):
  """`config.init.<slot>` with a SigLIP checkpoint: tokens equal transformers', head unused by design."""
  from medjax.checkpoints import init as init_lib

  path, model = checkpoints["full"]
  cfg = dataclasses.replace(load_siglip_vision_config(path), pool="none")
  tower = ViT(cfg)
  sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ("d",)), jax.sharding.PartitionSpec())
  fresh = jax.device_put(
    flax.linen.meta.unbox(tower.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]),
    sharding,
  )
  params, (report,) = init_lib.load(
    {"image": fresh}, {"image": (("image",), cfg)}, {"image": f"hf:{path}"}
  )
  assert report.unused and all(k.startswith("head/") for k in report.unused) and not report.new
  images = _images()
  with torch.no_grad():
    ref = model.vision_model(pixel_values=_pixel_values(images))
  out = tower.apply({"params": params["image"]}, jnp.asarray(images))
  np.testing.assert_allclose(
    np.asarray(out["tokens"]), ref.last_hidden_state.numpy(), atol=1e-4, rtol=0
  )
  with pytest.raises(ValueError, match="the checkpoint's depth is 2, the config's is 3"):
    init_lib.load(
      {"image": fresh},
      {"image": (("image",), dataclasses.replace(cfg, depth=3))},
      {"image": f"hf:{path}"},
    )


def test_medgemini_starts_from_siglip_and_gemma_checkpoints(tmp_path, train_step0):
  """experiments/train.py on configs/medgemini.py:tiny3d with `init.image` and `init.volume` from a
  SigLIP checkpoint (its pixel range) and `init.lm` from a Gemma-3 one (the LM config its
  config.json defines), one step at which nothing moves: the saved image tower gives transformers'
  SigLIP tokens on an image file read through the data pipeline (its processor's rescale and
  normalisation included), the volume tower the same tower inflated to 3D, and the model's
  text-only logits are Gemma3ForCausalLM's."""
  import flax.linen as nn
  from PIL import Image

  from medjax.checkpoints import init as init_lib
  from medjax.checkpoints import load_hf_config
  from medjax.data import media_io

  hf = dict(
    VISION, hidden_size=64, intermediate_size=128, image_size=32, patch_size=8, num_hidden_layers=1
  )
  model = randomize(
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**dict(hf, num_channels=1)))
  )
  model.save_pretrained(str(tmp_path / "siglip"))
  # the byte tokenizer's ids and the media placeholders; a sliding-window and a global layer
  gemma = tiny_gemma3(
    vocab_size=264, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"]
  )
  gemma.save_pretrained(str(tmp_path / "gemma"))
  lm = dict(dataclasses.asdict(load_hf_config(str(tmp_path / "gemma"))), max_seq_len=512)
  siglip = f"hf:{tmp_path / 'siglip'}"
  params, mm, task, _, log = train_step0(
    "medgemini.py:tiny3d",
    {
      "init.image": siglip,
      "init.volume": siglip,
      "model.image.posemb": "learn",  # the checkpoint's learned positions
      "model.volume.posemb": "learn",
      "init.lm": f"hf:{tmp_path / 'gemma'}",
      "model.image.input_range": (-1.0, 1.0),
      "model.volume.input_range": (-1.0, 1.0),
      "model.lm": lm,
      "model.image.depth": 1,
      "model.volume.depth": 1,
      "train.batch_size": 8,
    },
  )
  # every slot fully loaded; the SigLIP pooling head is unused by design (the towers do not pool)
  assert sum(" | 0 [] | " in line for line in log.splitlines()) == 3, log[-3000:]
  pixels = np.random.RandomState(0).randint(0, 256, (2, 32, 32), np.uint8)
  images = []
  for i, p in enumerate(pixels):
    Image.fromarray(p, "L").save(tmp_path / f"{i}.png")
    record = {
      "image": media_io.load_image(tmp_path / f"{i}.png", 32, 1),
      "question": "q",
      "answer": "a",
    }
    images.append(media_io.task_example(record, {"image": (32, 32, 1)})["media"]["image"][0])
  images = np.stack(images)
  processor = transformers.SiglipImageProcessor(do_resize=False)
  hf_pixels = processor(list(pixels[..., None]), return_tensors="pt")["pixel_values"][:, :1]
  with torch.no_grad():
    ref = model(pixel_values=hf_pixels)
  tower = jax.jit(ViT(task.mm_cfg.media[0].vit).apply)
  out = tower({"params": params["enc_image"]}, jnp.asarray(images))
  np.testing.assert_allclose(
    np.asarray(out["tokens"]), ref.last_hidden_state.numpy(), atol=1e-4, rtol=0
  )
  # The volume slot: the same 2D tower inflated (init.inflate="central"); a volume of identical
  # slices gives, per time group, the 2D tokens of that slice (zero time embedding, central-frame
  # tubelet kernel), pooled over the config's token_pool x token_pool windows.
  vol_cfg = task.mm_cfg.media[1].vit
  volume = np.repeat(images[:, None], vol_cfg.frames, axis=1)
  out = jax.jit(ViT(vol_cfg).apply)({"params": params["enc_volume"]}, jnp.asarray(volume))["tokens"]
  (h, w), k = vol_cfg.grid[1:], vol_cfg.token_pool
  want = ref.last_hidden_state.numpy().reshape(2, h // k, k, w // k, k, -1).mean((2, 4))
  out = np.asarray(out).reshape(2, -1, *want.shape[1:])
  for t in range(out.shape[1]):
    np.testing.assert_allclose(out[:, t], want, atol=1e-4, rtol=0)
  # Text only (no media items): the logits of the Gemma-3 checkpoint, past its sliding window (4).
  batch = task.dummy_batch(2)
  tokens = np.random.default_rng(0).integers(0, 259, (2, 24))
  logits = jax.jit(mm.apply)(
    {"params": params},
    tokens,
    {m: batch[m] for m in ("image", "volume")},
    {m: batch[f"{m}_mask"] for m in ("image", "volume")},
  )
  with torch.no_grad():
    want_logits = gemma(torch.tensor(tokens)).logits.numpy()
  assert np.abs(want_logits).max() > 1.0  # logits are not trivially small
  np.testing.assert_allclose(np.asarray(logits), want_logits, atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match="init.inflate: expected 'central' or 'mean'"):
    init_lib.load(params, task.init_slots(), {"volume": siglip, "inflate": "x"})
  # Frames in context (`patch_embed="frames"`): the 2D tower as it is, each slice's tokens plus the
  # slice index's sin-cos embedding; here slice t is image t % 2.
  from medjax.nn.patch import sincos_1d

  frames_cfg = dataclasses.replace(vol_cfg, patch_embed="frames", frames=4)
  volume = np.stack([images[t % 2] for t in range(4)])[None]
  fresh = nn.meta.unbox(ViT(frames_cfg).init(jax.random.PRNGKey(0), volume)["params"])
  params, (report,) = init_lib.load(
    {"enc_volume": fresh}, {"volume": (("enc_volume",), frames_cfg)}, {"volume": siglip}
  )
  assert report.loaded == len(jax.tree.leaves(fresh)) and not report.new
  out = ViT(frames_cfg).apply({"params": params["enc_volume"]}, jnp.asarray(volume))["tokens"]
  out = np.asarray(out).reshape(4, -1, want.shape[-1])
  index = sincos_1d(4, want.shape[-1])
  for t in range(4):
    np.testing.assert_allclose(
      out[t], want[t % 2].reshape(-1, want.shape[-1]) + index[t], atol=1e-4
    )
