"""SD-VAE and T5 encoder imports equal `diffusers` / `transformers` on tiny random models; latent caching."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scripts import run_script

torch = pytest.importorskip(
  "torch", reason="parity tests run the reference diffusers/transformers models on torch"
)

from torch_reference import randomize  # noqa: E402

from medjax import config_lib
from medjax.checkpoints.diffusers_vae import load_vae, load_vae_config  # noqa: E402
from medjax.models.vae import decode_video, encode_video  # noqa: E402
from medjax.train.state import INIT_CPU_COMPILER_OPTIONS  # noqa: E402

torch.set_num_threads(1)  # tiny models: more threads only contend with JAX on a small machine


# ------------------------------------------------------------------------------------------- VAE
@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
  """(directory, torch AutoencoderKL): 3 levels (4x down), 1 ResNet per level, GroupNorm(4)."""
  diffusers = pytest.importorskip(
    "diffusers", reason="VAE parity needs the reference diffusers AutoencoderKL"
  )
  torch.manual_seed(0)
  model = diffusers.AutoencoderKL(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
  )
  model = randomize(model, only_1d=True)
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
  bf16, params16 = load_vae(path, dtype="bfloat16")  # bf16 compute, fp32 params and outputs
  m16, _ = jax.jit(lambda p, x: bf16.apply({"params": p}, x, method=bf16.encode))(params16, x)
  assert m16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(m16), mean, atol=0.03 * np.abs(mean).max(), rtol=0)


def test_video_is_encoded_and_decoded_frame_by_frame(vae_dir):
  vae, params = load_vae(vae_dir[0])
  encode = jax.jit(functools.partial(encode_video, vae), static_argnames="batch_size")
  video = jnp.asarray(np.random.RandomState(1).uniform(-1, 1, (2, 3, 8, 8, 3)), jnp.float32)
  z = encode(params, video, batch_size=4)  # 6 frames, 4 at a time (the last chunk padded)
  assert z.shape == (2, 3, 2, 2, 4)
  np.testing.assert_allclose(
    np.asarray(z), np.asarray(encode(params, video)), atol=1e-5
  )  # all frames at once
  assert jax.eval_shape(functools.partial(decode_video, vae), params, z).shape == video.shape
  sample = encode(params, video, jax.random.PRNGKey(0))
  assert float(jnp.abs(sample - z).mean()) > 1e-3  # a posterior sample, not the mean
  with pytest.raises(ValueError, match=r"x: expected \[N, H, W, 3\].*multiples of 4"):
    encode_video(vae, params, video[:, :, :6])
  with pytest.raises(ValueError, match=r"video: expected a video batch"):
    encode_video(vae, params, video[0])


def test_pre_014_attention_names_load_the_same(vae_dir, tmp_path):
  """Older diffusers checkpoints name the mid-block attention query/key/value/proj_attn."""
  import shutil

  from safetensors.numpy import load_file, save_file

  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  tensors = load_file(os.path.join(vae_dir[0], "diffusion_pytorch_model.safetensors"))
  renamed = {}
  for name, w in tensors.items():
    for new_name, old_name in old.items():
      name = name.replace(f".attentions.0.{new_name}.", f".attentions.0.{old_name}.")
    renamed[name] = w
  assert sum(".proj_attn." in n for n in renamed) == 4  # weight + bias, encoder + decoder
  save_file(renamed, str(tmp_path / "diffusion_pytorch_model.safetensors"))
  shutil.copy(os.path.join(vae_dir[0], "config.json"), tmp_path)
  want, got = load_vae(vae_dir[0])[1], load_vae(str(tmp_path))[1]
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_vae_config_errors_name_the_field(vae_dir, tmp_path):
  hf = json.load(open(os.path.join(vae_dir[0], "config.json")))
  for change, field in [
    ({"act_fn": "relu"}, "act_fn"),
    ({"_class_name": "VQModel"}, "_class_name"),
    ({"up_block_types": ["AttnUpDecoderBlock2D"] * 3}, "up_block_types"),
  ]:
    (tmp_path / "config.json").write_text(json.dumps({**hf, **change}))
    with pytest.raises(ValueError, match=f"'{field}'"):
      load_vae_config(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({**hf, "norm_num_groups": 2}))
  with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
    load_vae(str(tmp_path))


# -------------------------------------------------------------------------------------------- T5
T5_VOCAB = 64


def _save_t5_tokenizer(path):
  """A word-level tokenizer.json laid out like T5's: <pad>=0, </s>=1, <unk>=2, eos appended by the post-processor."""
  import tokenizers

  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, T5_VOCAB)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single="$A </s>", special_tokens=[("</s>", 1)]
  )
  tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
  tok.save(os.path.join(path, "tokenizer.json"))
  json.dump(
    {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    open(os.path.join(path, "special_tokens_map.json"), "w"),
  )


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
  """{"full": T5ForConditionalGeneration dir, "encoder": T5EncoderModel dir} -> (path, torch encoder)."""
  transformers = pytest.importorskip(
    "transformers", reason="T5 parity needs the reference transformers model"
  )
  torch.manual_seed(0)
  cfg = transformers.T5Config(
    vocab_size=T5_VOCAB,
    d_model=32,
    d_kv=8,
    num_heads=4,
    d_ff=48,
    num_layers=2,
    num_decoder_layers=1,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=16,
    relative_attention_max_distance=20,
    initializer_factor=1.0,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
  )
  full = randomize(transformers.T5ForConditionalGeneration(cfg), only_1d=True)
  encoder = transformers.T5EncoderModel(cfg)
  encoder.load_state_dict(full.state_dict(), strict=False)
  out = {}
  for name, model in (("full", full), ("encoder", encoder.eval())):
    path = str(tmp_path_factory.mktemp(f"t5_{name}"))
    model.save_pretrained(path)
    _save_t5_tokenizer(path)
    out[name] = (path, model.get_encoder() if name == "full" else model)
  return out


@pytest.mark.parametrize("layout", ["full", "encoder"])
def test_t5_encoder_matches_transformers(t5_dirs, layout):
  from medjax.checkpoints.hf_t5 import load_t5_config, load_t5_params
  from medjax.models.t5 import T5Encoder

  path, ref = t5_dirs[layout]
  cfg = load_t5_config(path)
  assert (cfg.num_layers, cfg.d_ff, cfg.activation) == (2, 48, "gelu_tanh")
  rs = np.random.RandomState(0)
  ids = rs.randint(0, T5_VOCAB, (2, 40))  # 40 tokens span every bucket (max_distance 20)
  mask = np.ones_like(ids)
  mask[1, 25:] = 0
  with torch.no_grad():
    want = ref(
      input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
    ).last_hidden_state.numpy()
  got = jax.jit(T5Encoder(cfg).apply)({"params": load_t5_params(path, cfg)}, ids, mask)
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_relative_position_buckets_match_transformers():
  from transformers.models.t5.modeling_t5 import T5Attention

  from medjax.models.t5 import relative_position_buckets

  rel = (
    torch.arange(300)[None, :] - torch.arange(300)[:, None]
  )  # float32 log boundaries at 16, 32, 64
  want = T5Attention._relative_position_bucket(
    rel, bidirectional=True, num_buckets=32, max_distance=128
  )
  np.testing.assert_array_equal(relative_position_buckets(300, 32, 128), want.numpy())


def test_t5_caption_encoder_tokenizes_like_transformers(t5_dirs):
  import transformers

  from medjax.checkpoints.hf_t5 import load_t5_encoder

  path, ref = t5_dirs["encoder"]
  enc = load_t5_encoder(path, max_len=6)
  captions = ["w5 w9 w17", "w3 w4 w5 w6 w7 w8 w9 w10", "w60 unknown w61"]
  hf_tok = transformers.PreTrainedTokenizerFast(
    tokenizer_file=os.path.join(path, "tokenizer.json"),
    pad_token="<pad>",
    eos_token="</s>",
    unk_token="<unk>",
  )
  want = hf_tok(captions, max_length=6, padding="max_length", truncation=True, return_tensors="np")
  emb, mask = enc(captions)
  ids, _ = enc.tokenize(captions)
  np.testing.assert_array_equal(ids, want["input_ids"])
  np.testing.assert_array_equal(mask, want["attention_mask"])
  assert (
    ids[1, -1] == 1 and ids[2, 1] == 2
  )  # truncated captions end with eos; unknown words map to <unk>
  with torch.no_grad():
    ref_emb = ref(
      input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)
    ).last_hidden_state.numpy()
  assert emb.shape == (3, 6, 32)
  np.testing.assert_allclose(emb, ref_emb, atol=1e-4, rtol=0)
  emb16, _ = load_t5_encoder(path, max_len=6, dtype="bfloat16")(captions)
  np.testing.assert_allclose(emb16, ref_emb, atol=0.03 * np.abs(ref_emb).max(), rtol=0)
  with pytest.raises(ValueError, match="captions: expected a non-empty list"):
    enc([])
  # Captions are cleaned as Open-Sora's before T5 (lower-cased, tags dropped); clean=False keeps them.
  from medjax.checkpoints.hf_t5 import T5TextEncoder

  raw = ["W5 <b>W9</b>  W17"]
  np.testing.assert_array_equal(enc.tokenize(raw)[0], ids[:1])
  kept = T5TextEncoder(enc.model, enc.params, enc.tokenizer, 6, clean=False).tokenize(raw)[0]
  assert (kept[0, :3] == 2).all()  # unknown words


def test_t5_config_errors_name_the_field(t5_dirs, tmp_path):
  from medjax.checkpoints.hf_t5 import load_t5_config, load_t5_params

  hf = json.load(open(os.path.join(t5_dirs["encoder"][0], "config.json")))
  for change, field in [
    ({"feed_forward_proj": "relu"}, "feed_forward_proj"),
    ({"model_type": "umt5"}, "model_type"),
  ]:
    (tmp_path / "config.json").write_text(json.dumps({**hf, **change}))
    with pytest.raises(ValueError, match=f"'{field}'"):
      load_t5_config(str(tmp_path))
  path = t5_dirs["full"][0]
  cfg = load_t5_config(path, num_layers=3)
  with pytest.raises(ValueError, match="encoder.block.2.layer.0.layer_norm.weight"):
    load_t5_params(path, cfg)
  with pytest.raises(ValueError, match="no place in the config"):
    load_t5_params(path, load_t5_config(path, num_layers=1))


SD_VAE_FT_EMA = {  # stabilityai/sd-vae-ft-ema config.json (Open-Sora v1.0 / Bora)
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D"] * 4,
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 256,
  "up_block_types": ["UpDecoderBlock2D"] * 4,
}
T5_V1_1_XXL = {  # google/t5-v1_1-xxl config.json (its encoder is Open-Sora / Bora's text encoder)
  "architectures": ["T5ForConditionalGeneration"],
  "d_ff": 10240,
  "d_kv": 64,
  "d_model": 4096,
  "dropout_rate": 0.1,
  "feed_forward_proj": "gated-gelu",
  "layer_norm_epsilon": 1e-06,
  "model_type": "t5",
  "num_decoder_layers": 24,
  "num_heads": 64,
  "num_layers": 24,
  "relative_attention_num_buckets": 32,
  "tie_word_embeddings": False,
  "vocab_size": 32128,
}


def test_hub_configs_map_to_presets_with_published_sizes(tmp_path):
  from medjax.checkpoints.hf_t5 import load_t5_config
  from medjax.models import t5, vae
  from medjax.parallel.sharding import strip_boxes

  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(strip_boxes(tree)))
  (tmp_path / "config.json").write_text(json.dumps(SD_VAE_FT_EMA))
  assert load_vae_config(str(tmp_path)) == vae.PRESETS["sd-vae"]
  (tmp_path / "config.json").write_text(json.dumps(T5_V1_1_XXL))
  assert load_t5_config(str(tmp_path)) == t5.PRESETS["t5-v1_1-xxl"]
  sd = jax.eval_shape(
    lambda: vae.AutoencoderKL(vae.PRESETS["sd-vae"]).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))
    )
  )
  xxl = jax.eval_shape(
    lambda: t5.T5Encoder(t5.PRESETS["t5-v1_1-xxl"]).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4))
    )
  )
  assert (count(sd), count(xxl)) == (
    83_653_863,
    4_762_310_656,
  )  # as diffusers / transformers count them


# ---------------------------------------------------------------------------------------- caching
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cached_config(cache_dir):
  c = config_lib.load_module("configs/bora.py").get_config("tiny").unlock()
  c.data.update(
    name="bora_csv",
    latent="vae",
    tokenizer="",
    frames=4,
    size=8,
    channels=4,
    max_text_len=16,
    test_size=0,
    latent_scale=0.18215,
    cache_dir=cache_dir,
  )
  c.model.update(
    in_channels=4,
    patch_size=(1, 2, 2),
    text_vocab_size=0,
    caption_channels=32,
    max_text_len=16,
    depth=1,  # one block compiles faster; the test asks only that the cached batches train STDiT
  )
  return c


@pytest.fixture(scope="module")
def bora_cache(vae_dir, t5_dirs, tmp_path_factory):
  """The dummy Bora CSVs (tiny builder: clips of >= 4 frames at 32x32) cached as VAE latents and T5
  embeddings -> (cache root, TFDS data_dir, meta)."""
  pytest.importorskip("av")
  from medjax.checkpoints import cache_latents as cli

  root = tmp_path_factory.mktemp("bora_cache")
  cache, data_dir = str(root / "cache"), str(root / "tfds")
  meta = cli.cache_latents(
    out=cache,
    manual_dir=os.path.join(ROOT, "data", "bora_csv", "dummy_data"),
    vae=vae_dir[0],
    text_encoder=t5_dirs["encoder"][0],
    builder_config="tiny",
    data_dir=data_dir,
    max_text_len=16,
    batch_size=2,
    sample_posterior=False,
  )
  return cache, data_dir, meta


def test_bora_trains_on_cached_latents_and_text(vae_dir, t5_dirs, bora_cache):
  from medjax.checkpoints import cache_latents as cli
  from medjax.checkpoints.diffusers_vae import load_vae
  from medjax.checkpoints.hf_t5 import load_t5_encoder
  from medjax.data import latent_cache
  from medjax.tasks import get_task

  cache, data_dir, meta = bora_cache
  # Whole clips, padded to the split's longest (12 and 9 frames); their lengths beside the cache.
  assert {s: (m["count"], m["x_shape"], m["y_shape"]) for s, m in meta.items()} == {
    "train": (3, [12, 8, 8, 4], [16, 32]),
    "validation": (1, [9, 8, 8, 4], [16, 32]),
  }
  assert meta["train"]["scaling_factor"] == 0.18215 and meta["train"]["clean_captions"]
  # The cache holds the VAE posterior means of every frame of the clips the TFDS builder decoded,
  # and the T5 embeddings of their cleaned captions.
  clips = cli.load_builder("tiny", data_dir).as_data_source()["train"]
  lengths = np.load(os.path.join(cache, "train", cli.LENGTHS))
  assert sorted(lengths.tolist()) == [5, 10, 12]
  rec, cached = clips[1], latent_cache.CacheSource(os.path.join(cache, "train"))[1]
  n = len(rec["video"])
  assert lengths[1] == n
  vae, params = load_vae(vae_dir[0])
  z = jax.jit(functools.partial(encode_video, vae))(
    params, latent_cache.to_pixels(rec["video"])[None]
  )
  np.testing.assert_allclose(cached["x"][:n], np.asarray(z[0]), atol=1e-5)
  emb, mask = load_t5_encoder(t5_dirs["encoder"][0], max_len=16)([rec["text"].decode()])
  np.testing.assert_allclose(cached["y"], emb[0], atol=1e-5)
  np.testing.assert_array_equal(cached["y_mask"], mask[0])
  # data.cache_dir switches the Bora task to the cache: its batches (4-frame random crops) train
  # STDiT (loss falls on a fixed draw).
  task = get_task(_cached_config(cache))
  batch = next(iter(task.train_data(batch_size=8, seed=0, shard_index=0, shard_count=1)))
  assert batch["x"].shape == (8, 4, 8, 8, 4) and batch["y"].shape == (8, 16, 32)
  model, tx = task.build_model(), optax.adam(3e-3)
  # The trainer's init options: bitwise the default level's params, so the fixed draw is kept.
  init = jax.jit(
    lambda rng: nn.unbox(task.init_params(model, rng, batch)),
    compiler_options=INIT_CPU_COMPILER_OPTIONS,
  )
  params = init(jax.random.PRNGKey(0))
  loss_fn = lambda p: task.loss(model, p, batch, jax.random.PRNGKey(1), 0)[0]

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state, losses = tx.init(params), []
  for _ in range(4):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert (
    len(list(task.eval_data(batch_size=1, shard_index=0, shard_count=1))) == 1
  )  # the validation split
  with pytest.raises(ValueError, match="batch_size: 8 x 1 host.*1 records x 1 epoch"):
    task.eval_data(batch_size=8, shard_index=0, shard_count=1)
  # A cache that does not fit the config is rejected, naming the config fields.
  c = _cached_config(cache)
  c.data.frames = 6
  with pytest.raises(ValueError, match=r"data.frames: expected cached clips of at least 6 .* 5 to"):
    get_task(c).train_data(batch_size=8, seed=0, shard_index=0, shard_count=1)
  c = _cached_config(cache)
  c.data.size = 4
  with pytest.raises(ValueError, match=r"data.size/channels: .*\(8, 8, 4\).*\(4, 4, 4\)"):
    get_task(c).train_data(batch_size=8, seed=0, shard_index=0, shard_count=1)
  with pytest.raises(ValueError, match="already exists"):
    latent_cache.write_split(
      os.path.join(cache, "train"), [rec], encode_videos=None, encode_captions=None
    )


def _script(name, *args):
  return run_script(name, *args).stdout


@pytest.mark.slow
def test_bora_paper_path_from_csv_to_mp4(vae_dir, t5_dirs, bora_cache, tmp_path):
  """Fixture videos + CSV -> latent cache -> experiments/train.py on the paper config (STDiT with
  IDDPM, learned variance, v1.0 positions, null buffer, 3 guided channels; tiny width) ->
  experiments/sample.py (T5 -> 100 respaced IDDPM steps, guidance 7 -> VAE decode) -> one MP4 and
  GIF per caption that read back with the config's frames at the VAE's resolution."""
  from PIL import Image

  from medjax.data import media_io

  cache, _, _ = bora_cache
  workdir, out = str(tmp_path / "run"), str(tmp_path / "samples")
  overrides = {
    "model.hidden": 32,
    "model.depth": 1,
    "model.num_heads": 2,
    "model.caption_channels": 32,
    "model.max_text_len": 16,
    "model.dtype": "float32",
    "model.remat": False,
    "data.frames": 4,
    "data.size": 8,
    "data.max_text_len": 16,
    "data.frame_interval": 2,
    "data.cache_dir": cache,
    "train.steps": 2,
    "train.batch_size": 2,
    "train.log_every": 1,
    "train.async_checkpoints": False,
    "parallel.num_devices": 1,
  }
  config = ["--config", os.path.join(ROOT, "configs", "bora.py") + ":paper"]
  config += [f"--config.{k}={v}" for k, v in overrides.items()]
  _script("train.py", *config, f"--workdir={workdir}")
  captions = ["An endoscopic view of the colon.", "A cardiac ultrasound, the left ventricle."]
  printed = _script(
    "sample.py",
    *config,
    f"--workdir={workdir}",
    f"--text_encoder={t5_dirs['encoder'][0]}",
    f"--vae={vae_dir[0]}",
    f"--out={out}",
    *[f"--prompt={c}" for c in captions],
  )
  assert "step 2, cfg 7.0, 2 videos of shape (4, 32, 32, 3)" in printed, printed
  for i, caption in enumerate(captions):
    assert caption in printed
    video = media_io.read_video(os.path.join(out, f"{i:03d}.mp4"))
    assert video.shape == (4, 32, 32, 3)  # data.frames, latents 8x8 x the VAE's 4x
    with Image.open(os.path.join(out, f"{i:03d}.gif")) as gif:
      frames = []
      for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB"), np.float32))
    # The MP4 holds the GIF's frames in order: closer to them than to the same frames reversed.
    err = np.abs(video - np.stack(frames)).mean()
    assert err < 0.5 * np.abs(video - np.stack(frames[::-1])).mean(), err
  grid = np.asarray(Image.open(os.path.join(out, "grid.png")))
  assert grid.shape[0] > 2 * 32 and grid.shape[1] > 4 * 32
