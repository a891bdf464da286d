"""Med-Gemini-style tasks on the embedded phantoms: interleaved VQA / report generation and SigLIP.

"medgemini_vqa": MultimodalLM (ViT encoders + projector + DecoderLM, prefix-LM) fine-tuned end to
end; loss on answer tokens (+ EOS). Eval: teacher-forced exact match of the whole answer, which is
exactly greedy-decoding accuracy (greedy reproduces the answer iff every answer token, EOS
included, is the argmax given the answer so far), split into closed (yes/no) and open questions
(and, with a volume, into the questions only the volume answers and the rest); the host-side
`evaluate` adds the baselines on the same examples (the majority answer per question, from the
train split, and chance: a uniform guess among each question's answers) and scores greedy
generations of `data.test_size` validation examples (default 64; 0 skips): VQA accuracy of the
generated text (closed: the yes/no it names; open: normalised exact match), or BLEU-1/4 and ROUGE-L
of reports. The input-ablation control (`train.eval_ablation`) rolls `data.ablation_keys` (default:
all media) across the batch, and with several media each alone (`eval_ablated_<medium>/...`).
"siglip": TwoTower image / report-text contrastive pretraining; eval: retrieval recall@K (ablation:
the images rolled).
`data.name` "phantoms" or a public dataset's TFDS builder (medjax.data.builders.MEDIA, prepared from
`data.manual_dir` into `data.data_dir`; records through media_io.task_example).
"""

import collections
import re
import zlib

import jax.numpy as jnp
import numpy as np

from medjax import config_lib
from medjax.data import builders, pipeline
from medjax.data.synthetic import phantoms
from medjax.data.tokenizers import load_tokenizer
from medjax.eval import report_metrics, vqa_accuracy
from medjax.inference.decode import greedy_decode
from medjax.models import multimodal
from medjax.models.llm import LMConfig
from medjax.models.multimodal import MediaSpec, MultimodalConfig, MultimodalLM, check_media_counts
from medjax.models.text_tower import TextConfig, TwoTower
from medjax.models.vit import ViTConfig
from medjax.objectives import masked_cross_entropy
from medjax.objectives.contrastive import retrieval_recall, sigmoid_loss, softmax_loss
from medjax.tasks.base import Task

DATASETS = {"phantoms", *builders.MEDIA}  # builders: the public datasets in data/
PLACEHOLDERS = {"image": "<image>", "volume": "<volume>"}


def multimodal_config_from(model_cfg) -> MultimodalConfig:
  """MultimodalConfig from the config's `model` section."""
  specs = [
    MediaSpec(
      name,
      int(model_cfg[f"{name}_token"]),
      config_lib.dataclass_from(ViTConfig, model_cfg[name], f"model.{name}"),
      int(model_cfg.max_items[name]),
    )
    for name in model_cfg.media
  ]
  lm = config_lib.dataclass_from(LMConfig, model_cfg.lm, "model.lm")
  return MultimodalConfig(lm, tuple(specs), model_cfg.projector)


class PlaceholderTokenizer:
  """Wraps a tokenizer so that "<image>" / "<volume>" in text encode to single placeholder ids."""

  def __init__(self, tokenizer, ids: dict):
    self._tok, self.ids = tokenizer, {PLACEHOLDERS[k]: v for k, v in ids.items()}
    self._split = re.compile("(" + "|".join(map(re.escape, self.ids)) + ")") if self.ids else None
    self.pad_id, self.bos_id, self.eos_id, self.vocab_size = (
      tokenizer.pad_id,
      tokenizer.bos_id,
      tokenizer.eos_id,
      tokenizer.vocab_size,
    )

  def encode(self, text, add_bos=False, add_eos=False):
    parts = self._split.split(text) if self._split else [text]
    ids = [i for p in parts if p for i in ([self.ids[p]] if p in self.ids else self._tok.encode(p))]
    return (
      ([self.bos_id] if add_bos and self.bos_id is not None else [])
      + ids
      + ([self.eos_id] if add_eos else [])
    )

  def decode(self, ids):
    return self._tok.decode([i for i in ids if i not in self.ids.values()])


class MedGeminiVQATask(Task):
  """Interleaved image / volume + text -> answer (or report) through MultimodalLM."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.name not in DATASETS:
      raise ValueError(f"data.name: expected one of {sorted(DATASETS)}, got {d.name!r}")
    self.mm_cfg = multimodal_config_from(config.model)
    self.tokenizer = PlaceholderTokenizer(
      load_tokenizer(d.tokenizer), {m.name: m.token_id for m in self.mm_cfg.media}
    )
    names = tuple(m.name for m in self.mm_cfg.media)
    self.ablation_keys = tuple(d.ablation_keys) or names
    if not set(self.ablation_keys) <= set(names):
      raise ValueError(
        f"data.ablation_keys: expected media of the model {list(names)}, got {d.ablation_keys}"
      )
    self._baselines = None

  def ablation_groups(self):
    """All ablated media together, and with several, each medium alone (e.g. `eval_ablated_volume/`:
    only the CT volume rolled, the scout image kept)."""
    keys = tuple(self.ablation_keys)
    return {"": keys, **({k: (k,) for k in keys} if len(keys) > 1 else {})}

  def init_slots(self):
    slots = {m.name: ((f"enc_{m.name}",), m.vit) for m in self.mm_cfg.media}
    return {"lm": (("lm",), self.mm_cfg.lm), **slots}

  def build_model(self):
    if self.mm_cfg.lm.vocab_size < self.tokenizer.vocab_size:
      raise ValueError(
        f"model.lm.vocab_size: {self.mm_cfg.lm.vocab_size} is smaller than the tokenizer's "
        f"{self.tokenizer.vocab_size}"
      )
    return MultimodalLM(self.mm_cfg)

  def source(self, split, size=None):
    d = self.config.data
    if d.name in builders.MEDIA:  # the whole split, unless `size` is given
      return builders.media_source(
        d, split, {m.name: m.vit.input_shape for m in self.mm_cfg.media}, size
      )
    size = size or (d.train_size if split == "train" else d.eval_size)
    return phantoms.PhantomSource(
      split, size, d.modality, d.mode, seed=d.seed, scout_dropout=d.get("scout_dropout", 0.0)
    )

  def encode(self, ex) -> dict:
    """A phantom example -> arrays (text in text coordinates; media padded to max_items)."""
    seq_len = self.config.data.seq_len
    out = pipeline.encode_lm_example(ex["prompt"], ex["target"], self.tokenizer, seq_len)
    first = int(np.argmax(out["loss_mask"] > 0))
    out["prefix_mask"] = (np.arange(seq_len) <= first).astype(np.int32)
    out["qtype"] = np.int32(ex["qtype"])
    out["volume_only"] = np.int32(ex.get("volume_only", False))
    for m in self.mm_cfg.media:
      items = ex["media"].get(m.name, [])
      if len(items) > m.max_items:
        raise ValueError(
          f"media[{m.name!r}]: {len(items)} items exceed model.max_items.{m.name}={m.max_items}"
        )
      arr = np.zeros((m.max_items,) + m.vit.input_shape, np.float32)
      for i, item in enumerate(items):
        arr[i] = item
      out[m.name] = arr
      out[f"{m.name}_mask"] = (np.arange(m.max_items) < len(items)).astype(np.int32)
    check_media_counts(
      out["tokens"][None],
      {m.name: out[f"{m.name}_mask"][None] for m in self.mm_cfg.media},
      self.mm_cfg,
    )
    return out

  def dummy_batch(self, batch_size):
    b, t = batch_size, self.config.data.seq_len
    out = {
      k: np.zeros((b, t), np.int32) for k in ("tokens", "targets", "input_mask", "prefix_mask")
    }
    out.update(
      loss_mask=np.zeros((b, t), np.float32),
      qtype=np.zeros((b,), np.int32),
      volume_only=np.zeros((b,), np.int32),
    )
    for m in self.mm_cfg.media:
      out[m.name] = np.zeros((b, m.max_items) + m.vit.input_shape, np.float32)
      out[f"{m.name}_mask"] = np.zeros((b, m.max_items), np.int32)
    return out

  def model_inputs(self, batch):
    names = [m.name for m in self.mm_cfg.media]
    return dict(
      tokens=batch["tokens"],
      media={n: batch[n] for n in names},
      media_mask={n: batch[f"{n}_mask"] for n in names},
      input_mask=batch["input_mask"],
      prefix_mask=batch["prefix_mask"],
    )

  def init_params(self, model, rng, batch):
    return model.init(rng, **self.model_inputs(batch))["params"]

  def _forward(self, model, params, batch):
    logits = model.apply({"params": params}, **self.model_inputs(batch))
    return logits

  def loss(self, model, params, batch, rng, step):
    logits = self._forward(model, params, batch)
    loss, acc, _ = masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    return loss, {"token_accuracy": acc}

  def eval_metrics(self, model, params, batch):
    logits = self._forward(model, params, batch)
    loss, acc, n = masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    mask = batch["loss_mask"] > 0
    wrong = jnp.any(mask & (jnp.argmax(logits, -1) != batch["targets"]), axis=1)
    exact = (~wrong).astype(jnp.float32)
    out = {
      "loss": (loss * n, n),
      "token_accuracy": (acc * n, n),
      "answer_accuracy": (exact.sum(), exact.size),
    }
    for name, sel in self._subsets(batch).items():
      sel = sel.astype(jnp.float32)
      out[f"{name}_accuracy"] = ((exact * sel).sum(), sel.sum())
    return out

  def _subsets(self, batch) -> dict:
    """{name: [B] bool}: closed / open questions; with a volume, volume(-only) / image questions."""
    out = {"closed": batch["qtype"] == phantoms.CLOSED, "open": batch["qtype"] == phantoms.OPEN}
    if any(m.name == "volume" for m in self.mm_cfg.media):
      out.update(
        volume_question=batch["volume_only"] == 1, image_question=batch["volume_only"] == 0
      )
    return out

  def count_tokens(self, batch):
    return int(np.sum(batch["input_mask"]))

  def flops_per_step(self, model, batch, num_params):
    return multimodal.train_flops(self.mm_cfg, *np.shape(batch["tokens"]))

  def generate(
    self, model, params, examples, max_new_tokens: int | None = None, ablate=False
  ) -> list[str]:
    """Greedy answers (or reports) to phantom examples, decoded up to EOS; with `ablate` (True or
    media names), each example is given its predecessor's media (`Task.ablate`)."""
    batch = [self.encode(ex) for ex in examples]
    lengths = np.array([int(b["prefix_mask"].sum()) for b in batch], np.int32)  # bos + prompt
    arrays = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
    arrays = self.ablate(arrays, ablate) if ablate else arrays
    arrays["tokens"] = np.where(
      np.arange(arrays["tokens"].shape[1]) < lengths[:, None],
      arrays["tokens"],
      self.tokenizer.pad_id,
    )
    inputs = {
      k: v for k, v in self.model_inputs(arrays).items() if k not in ("input_mask", "prefix_mask")
    }
    tokens, end = greedy_decode(
      model,
      params,
      inputs,
      lengths,
      eos_id=self.tokenizer.eos_id,
      max_new_tokens=max_new_tokens or self.config.data.seq_len,
      vocab_size=self.tokenizer.vocab_size,
    )
    tokens, end = np.asarray(tokens), np.asarray(end)
    texts = []
    for row, start, stop in zip(tokens, lengths, end):
      out = row[start:stop].tolist()
      texts.append(
        self.tokenizer.decode(
          out[: out.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in out else out
        )
      )
    return texts

  def _generation_metrics(self, model, params, ablate):
    n = min(int(self.config.data.test_size), self.config.data.eval_size)
    if n <= 0:
      return {}
    val = self.source("validation")
    examples = [val[i] for i in range(min(n, len(val)))]
    preds = self.generate(model, params, examples, ablate=ablate)
    targets = [ex["target"] for ex in examples]
    if self.config.data.mode == "report":
      return report_metrics(preds, targets)
    m = vqa_accuracy(preds, targets, [ex["qtype"] == phantoms.CLOSED for ex in examples])
    return {f"generated_{k}": v for k, v in m.items()}

  def evaluate(self, model, params, ablate=False):
    """Generation metrics and, for VQA, the baselines (not under `ablate`: they read no input)."""
    out = self._generation_metrics(model, params, ablate)
    if self.config.data.mode != "vqa" or ablate:
      return out
    if self._baselines is None:
      self._baselines = self._vqa_baselines()
    return {**out, **self._baselines}

  def _vqa_baselines(self) -> dict:
    """Majority answer per question (from <= 2000 train examples) and chance (a uniform guess among
    a question's train answers) on the validation examples the eval step scores, overall and per
    subset: `majority_baseline`, `majority_baseline_<subset>`, `chance_baseline`."""
    c, t = self.config.data, self.config.train
    counts = collections.defaultdict(collections.Counter)
    train = self.source("train", min(c.train_size, 2000))
    for i in range(len(train)):
      ex = train[i]
      counts[ex["prompt"]][ex["target"]] += 1
    val = self.source("validation")
    n = len(val) // t.eval_batch_size * t.eval_batch_size  # the eval drops a last partial batch
    n = min(n, t.eval_batches * t.eval_batch_size) if t.eval_batches > 0 else n
    examples = [val[i] for i in range(n or len(val))]  # n = 0: called outside the loop
    majority = lambda ex: counts[ex["prompt"]] and counts[ex["prompt"]].most_common(1)[0][0]
    hits = np.array([majority(ex) == ex["target"] for ex in examples])
    # a question never seen in training has no answer to guess from: chance 0, not 1
    chance = [1.0 / len(counts[ex["prompt"]]) if counts[ex["prompt"]] else 0.0 for ex in examples]
    fields = {k: np.array([ex.get(k, 0) for ex in examples]) for k in ("qtype", "volume_only")}
    out = {"majority_baseline": float(hits.mean()), "chance_baseline": float(np.mean(chance))}
    for name, sel in self._subsets(fields).items():
      out[f"majority_baseline_{name}"] = float(hits[sel].mean()) if sel.any() else 0.0
    return out


class SigLIPTask(Task):
  """Contrastive image (or volume) / report pretraining with the sigmoid (or softmax) loss."""

  ablation_keys = ("images",)

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.name not in DATASETS:
      raise ValueError(f"data.name: expected one of {sorted(DATASETS)}, got {d.name!r}")
    if config.model.loss not in ("sigmoid", "softmax"):
      raise ValueError(f"model.loss: expected 'sigmoid' or 'softmax', got {config.model.loss!r}")
    self.tokenizer = load_tokenizer(d.tokenizer)
    self.vision = config_lib.dataclass_from(ViTConfig, config.model.vision, "model.vision")
    self.text = config_lib.dataclass_from(TextConfig, config.model.text, "model.text")
    self.media = "volume" if self.vision.takes_frames else "image"

  def build_model(self):
    return TwoTower(self.vision, self.text, self.config.model.embed_dim)

  def source(self, split):
    d = self.config.data
    if d.name in builders.MEDIA:
      return builders.media_source(d, split, {self.media: self.vision.input_shape}, reports=True)
    return phantoms.PhantomSource(
      split, d.train_size if split == "train" else d.eval_size, d.modality, "report", seed=d.seed
    )

  def encode(self, ex):
    seq_len = self.config.data.seq_len
    ids = self.tokenizer.encode(ex["report"])[:seq_len]
    tokens = np.full(seq_len, self.tokenizer.pad_id, np.int32)
    tokens[: len(ids)] = ids
    # A stable id of the report text: identical reports are equally correct retrievals.
    label = np.int32(zlib.crc32(ex["report"].encode()) & 0x7FFFFFFF)
    return {
      "images": ex["media"][self.media][0],
      "tokens": tokens,
      "input_mask": (np.arange(seq_len) < len(ids)).astype(np.int32),
      "label": label,
    }

  def dummy_batch(self, batch_size):
    return {
      k: np.zeros((batch_size,) + np.shape(v), np.asarray(v).dtype)
      for k, v in self.encode(self.source("validation")[0]).items()
    }

  def init_params(self, model, rng, batch):
    return model.init(rng, batch["images"], batch["tokens"], batch["input_mask"])["params"]

  def _forward(self, model, params, batch):
    out = model.apply({"params": params}, batch["images"], batch["tokens"], batch["input_mask"])
    if self.config.model.loss == "sigmoid":
      loss = sigmoid_loss(out["zimg"], out["ztxt"], out["t_prime"], out["bias"])
    else:
      loss = softmax_loss(out["zimg"], out["ztxt"], out["t_prime"])
    return loss, out

  def loss(self, model, params, batch, rng, step):
    loss, out = self._forward(model, params, batch)
    return loss, {"temperature": jnp.exp(out["t_prime"]), "bias": out["bias"]}

  def eval_metrics(self, model, params, batch):
    loss, out = self._forward(model, params, batch)
    rec = retrieval_recall(out["zimg"], out["ztxt"], (1, 5), batch["label"])
    return {"loss": (loss, 1.0), **{k: (v, 1.0) for k, v in rec.items()}}
