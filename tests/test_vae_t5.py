"""SD-VAE and T5 encoder imports equal `diffusers` / `transformers` on tiny random models; latent caching."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests run the reference diffusers/transformers models on torch")

from medjax.checkpoints.diffusers_vae import load_vae, load_vae_config  # noqa: E402
from medjax.models.vae import decode_video, encode_video  # noqa: E402

torch.set_num_threads(1)  # tiny models: more threads only contend with JAX on a small machine


def _randomize_1d(model, seed=1):
  """Norm scales/biases start at identity; random values make a wrong mapping observable."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 1:
        p.add_(0.2 * torch.randn(p.shape, generator=gen))
  return model.eval()


# ------------------------------------------------------------------------------------------- VAE
@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
  """(directory, torch AutoencoderKL): 3 levels (4x down), 1 ResNet per level, GroupNorm(4)."""
  diffusers = pytest.importorskip("diffusers", reason="VAE parity needs the reference diffusers AutoencoderKL")
  torch.manual_seed(0)
  model = diffusers.AutoencoderKL(
      in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
      up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
      latent_channels=4, norm_num_groups=4, sample_size=16)
  model = _randomize_1d(model)
  path = str(tmp_path_factory.mktemp("vae"))
  model.save_pretrained(path)
  return path, model


def test_vae_encode_decode_match_diffusers(vae_dir):
  path, ref = vae_dir
  vae, params = load_vae(path)
  assert vae.config.block_out_channels == (8, 16, 16) and vae.config.downsample_factor == 4
  x = np.random.RandomState(0).uniform(-1, 1, (2, 16, 12, 3)).astype(np.float32)
  with torch.no_grad():
    post = ref.encode(torch.tensor(x).permute(0, 3, 1, 2)).latent_dist
    mean, logvar = post.mean.permute(0, 2, 3, 1).numpy(), post.logvar.permute(0, 2, 3, 1).numpy()
    out = ref.decode(post.mean).sample.permute(0, 2, 3, 1).numpy()
  m, lv = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))(params, x)
  assert m.shape == (2, 4, 3, 4) and np.abs(mean).max() > 0.1
  np.testing.assert_allclose(np.asarray(m), mean, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(lv), logvar, atol=1e-4, rtol=0)
  y = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))(params, mean)
  np.testing.assert_allclose(np.asarray(y), out, atol=1e-4, rtol=0)


def test_video_is_encoded_and_decoded_frame_by_frame(vae_dir):
  vae, params = load_vae(vae_dir[0])
  encode = jax.jit(functools.partial(encode_video, vae), static_argnames="batch_size")
  video = jnp.asarray(np.random.RandomState(1).uniform(-1, 1, (2, 3, 8, 8, 3)), jnp.float32)
  z = encode(params, video, batch_size=4)  # 6 frames, 4 at a time (the last chunk padded)
  assert z.shape == (2, 3, 2, 2, 4)
  np.testing.assert_allclose(np.asarray(z), np.asarray(encode(params, video)), atol=1e-5)  # all frames at once
  assert jax.jit(functools.partial(decode_video, vae))(params, z).shape == video.shape
  sample = encode(params, video, jax.random.PRNGKey(0))
  assert float(jnp.abs(sample - z).mean()) > 1e-3  # a posterior sample, not the mean
  with pytest.raises(ValueError, match=r"x: expected \[N, H, W, 3\].*multiples of 4"):
    encode_video(vae, params, video[:, :, :6])
  with pytest.raises(ValueError, match=r"video: expected a video batch"):
    encode_video(vae, params, video[0])


def test_vae_config_errors_name_the_field(vae_dir, tmp_path):
  hf = json.load(open(os.path.join(vae_dir[0], "config.json")))
  for change, field in [({"act_fn": "relu"}, "act_fn"), ({"_class_name": "VQModel"}, "_class_name"),
                        ({"up_block_types": ["AttnUpDecoderBlock2D"] * 3}, "up_block_types")]:
    (tmp_path / "config.json").write_text(json.dumps({**hf, **change}))
    with pytest.raises(ValueError, match=f"'{field}'"):
      load_vae_config(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({**hf, "norm_num_groups": 2}))
  with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
    load_vae(str(tmp_path))
