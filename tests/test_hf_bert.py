"""BERT checkpoint import: hidden states equal `transformers.BertModel` on tiny random models, and the
Anatomy-VLM text slot starts from such a checkpoint through experiments/train.py."""

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

from medjax.checkpoints import load_bert_config, load_bert_params  # noqa: E402
from medjax.models.bert import Bert  # noqa: E402

torch.set_num_threads(1)
BERT = dict(
  vocab_size=60,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=48,
  max_position_embeddings=24,
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """name -> (directory, torch BertModel): a BertModel (with its pooler) and a BertForMaskedLM."""
  root = tmp_path_factory.mktemp("bert")
  torch.manual_seed(0)
  config = transformers.BertConfig(**BERT)
  out = {}
  for name, cls in (("model", transformers.BertModel), ("mlm", transformers.BertForMaskedLM)):
    model = randomize(cls(config))
    model.save_pretrained(str(root / name))
    out[name] = (str(root / name), model if name == "model" else model.bert)
  return out


def _tokens(batch=3, length=9, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, BERT["vocab_size"], (batch, length)).astype(np.int32)
  tokens[1, 5:] = 0  # padded rows: pad id 0 is masked as a key
  tokens[2, 2:] = 0
  return tokens


def _reference(model, tokens):
  with torch.no_grad():
    ids = torch.tensor(tokens, dtype=torch.long)
    return model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state.numpy()


@pytest.mark.parametrize("name", ["model", "mlm"])
def test_hidden_states_and_mean_pool_equal_transformers(checkpoints, name):
  path, ref_model = checkpoints[name]
  cfg = load_bert_config(path)
  params, heads = load_bert_params(path, cfg)
  assert heads and all(h.startswith(("pooler.", "cls.")) for h in heads)  # unused by design
  tokens = _tokens()
  out = jax.jit(Bert(cfg).apply)({"params": params}, jnp.asarray(tokens))
  ref, valid = _reference(ref_model, tokens), tokens != 0
  np.testing.assert_allclose(np.asarray(out["tokens"])[valid], ref[valid], atol=1e-4, rtol=0)
  mean = (ref * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out["pooled"]), mean, atol=1e-4, rtol=0)


def test_shorter_max_len_keeps_the_first_positions(checkpoints):
  path, ref_model = checkpoints["model"]
  cfg = load_bert_config(path, max_len=9)
  params, _ = load_bert_params(path, cfg)
  assert params["pos_embedding"].shape == (9, BERT["hidden_size"])
  tokens = _tokens()
  out = Bert(cfg).apply({"params": params}, jnp.asarray(tokens))["tokens"]
  valid = tokens != 0
  np.testing.assert_allclose(
    np.asarray(out)[valid], _reference(ref_model, tokens)[valid], atol=1e-4, rtol=0
  )
  with pytest.raises(ValueError, match=r"position_embeddings.weight.*at least 30 positions"):
    load_bert_params(path, load_bert_config(path, max_len=30))


def _word_piece_dir(path, words):
  """A BERT-style tokenizer directory ([PAD] = 0, [UNK], [CLS], [SEP], then `words`)."""
  import tokenizers

  vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  path.mkdir()
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
  return len(vocab)


def test_anatomy_text_slot_starts_from_a_bert_checkpoint(checkpoints, tmp_path, train_step0):
  """experiments/train.py on configs/anatomy_vlm.py:tiny with a BERT text encoder and
  `init.text=hf:DIR`, one step at which nothing moves: the saved text tower gives transformers'
  hidden states on the task's phrase tokens ([CLS] phrase [SEP]); a wrong architecture or a
  non-BERT checkpoint is refused by name."""
  from medjax.checkpoints import init as init_lib
  from medjax.data.synthetic import anatomy
  from medjax.tasks import get_task

  path, ref_model = checkpoints["model"]
  words = sorted({w for p in anatomy.prompts(anatomy.REGIONS) for w in p.replace(".", "").split()})
  words = words[: BERT["vocab_size"] - 4]
  _word_piece_dir(tmp_path / "tok", words)
  text = dict(kind="bert", **{k: v for k, v in vars(load_bert_config(path)).items() if k != "kind"})
  params, _, task, config, log = train_step0(
    "anatomy_vlm.py:tiny",
    {
      "init.text": f"hf:{path}",
      "data.tokenizer": tmp_path / "tok",
      "model.text": dict(text, max_len=16),
      "model.vit.depth": 1,  # the image side only costs compile time here
      "model.decoder_depth": 1,
      "train.batch_size": 8,
    },
  )
  # the text slot: every tensor but the pooler loaded, the pooler unused by design
  assert "| 0 [] | 2 ['pooler.dense.bias', 'pooler.dense.weight']" in log
  tokens = np.asarray(task.region_prompt_tokens).reshape(-1, 16)[:4]
  cls, sep = task.tokenizer.bos_id, task.tokenizer.eos_id
  assert (tokens[:, 0] == cls).all() and all(sep in row for row in tokens)
  out = jax.jit(Bert(task.model_cfg.text).apply)(
    {"params": params["text_encoder"]}, jnp.asarray(tokens)
  )
  valid = tokens != 0
  np.testing.assert_allclose(
    np.asarray(out["tokens"])[valid], _reference(ref_model, tokens)[valid], atol=1e-4, rtol=0
  )
  with config.unlocked():
    config.model.text = dict(text, max_len=16, heads=2)
  with pytest.raises(
    ValueError, match=r"init.text: the checkpoint's heads is 4, the config's is 2"
  ):
    init_lib.read("text", "hf", path, get_task(config).model_cfg.text)
  (tmp_path / "llama").mkdir()
  (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(ValueError, match=r"init.text: the slot holds a BERT-family text encoder"):
    init_lib.read("text", "hf", str(tmp_path / "llama"), task.model_cfg.text)
