"""Anatomy-VLM task: box set prediction, region-phrase InfoNCE, image-label sigmoid, zero-shot evaluation.

L = w_anat (L1 + GIoU + region-identity CE on matched queries) + w_fine InfoNCE(region embedding,
its phrase; negatives: the other regions' phrases in the batch and per-region hard negatives)
+ w_global sigmoid BCE(image embedding, disease-description embeddings of the seen findings).
Stages by step: detection only for `loss.stage_steps[0]` steps, then + global for
`loss.stage_steps[1]`, then all losses. Queries meet regions by Hungarian matching or fixed
query i -> region i (`loss.matching`).

Data (`data.name`): the embedded phantoms (`synthetic_anatomy`, the demo) or the Chest ImaGenome
builder (`chest_imagenome`: 29 regions, the silver scene graphs' boxes, region phrases and
finding attributes; `data.findings` names the dataset's finding labels that the global head and the
zero-shot evaluation use, `data.train_findings` those the global head trains on).
"""

import functools
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl import logging

from medjax import config_lib
from medjax.data import builders, pipeline
from medjax.data.synthetic import anatomy
from medjax.data.tokenizers import load_tokenizer
from medjax.eval.classification import balanced_accuracy, f1_score, roc_auc
from medjax.models.anatomy_vlm import TEXT_ENCODERS, AnatomyVLM, AnatomyVLMConfig, train_flops
from medjax.models.bert import BertConfig
from medjax.objectives import boxes as box_lib
from medjax.objectives.contrastive import info_nce, sigmoid_bce
from medjax.tasks.base import Task

DATASETS = ("synthetic_anatomy", "chest_imagenome")
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
TERMS = ("anat", "fine", "global")  # the order of loss.weights


class AnatomyVLMTask(Task):
  """Trains AnatomyVLM on the embedded phantom task; evaluates boxes and zero-shot findings."""

  ablation_keys = ("image",)

  def __init__(self, config):
    super().__init__(config)
    d, lc = config.data, config.loss
    if d.name not in DATASETS:
      raise ValueError(f"data.name: expected one of {DATASETS}, got {d.name!r}")
    if lc.matching not in ("hungarian", "fixed"):
      raise ValueError(f"loss.matching: expected 'hungarian' or 'fixed', got {lc.matching!r}")
    if len(lc.weights) != 3 or len(lc.stage_steps) != 2:
      raise ValueError(
        f"loss.weights / loss.stage_steps: expected 3 / 2 values, got {lc.weights} / {lc.stage_steps}"
      )
    # Which loss terms are configured on: a term with weight 0 is never computed for its gradient.
    self.terms_on = {k: w != 0 for k, w in zip(TERMS, lc.weights)}
    self.model_cfg = anatomy_vlm_config_from(config.model)
    self.regions = anatomy.check_regions(d.regions)
    if self.model_cfg.num_regions != len(self.regions):
      raise ValueError(
        f"model.num_regions: expected {len(self.regions)} (data.regions), got "
        f"{self.model_cfg.num_regions}"
      )
    tokenizer = anatomy.word_tokenizer() if d.tokenizer == "words" else load_tokenizer(d.tokenizer)
    bracket = ()
    if isinstance(self.model_cfg.text, BertConfig):  # BERT reads [CLS] phrase [SEP]
      ids = (getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None))
      if None not in ids:
        bracket = ids
      elif "text" in config_lib.init_sources(config.get("init", {})):
        raise ValueError(
          f"data.tokenizer: a pretrained BERT text encoder (init.text) needs the [CLS] and [SEP] "
          f"ids of its tokenizer, got {ids} from {d.tokenizer!r}"
        )
      else:
        logging.warning("data.tokenizer %r has no [CLS] / [SEP]: phrases go unwrapped", d.tokenizer)
    self.tokenizer = _MemoTokenizer(tokenizer, bracket)
    if self.tokenizer.pad_id != 0:
      raise ValueError(
        f"data.tokenizer: the text encoder expects pad id 0, got {self.tokenizer.pad_id}"
      )
    if self.tokenizer.vocab_size > self.model_cfg.text.vocab_size:
      raise ValueError(
        f"model.text.vocab_size: expected >= {self.tokenizer.vocab_size} (the tokenizer's), got "
        f"{self.model_cfg.text.vocab_size}"
      )
    self.findings = tuple(d.findings)
    self.real = d.name != "synthetic_anatomy"
    if not self.real and self.findings != anatomy.FINDING_NAMES:
      raise ValueError(
        f"data.findings: the phantoms draw {anatomy.FINDING_NAMES}, got {self.findings}"
      )
    if self.real and self.regions != anatomy.CHEST_IMAGENOME_REGIONS:
      raise ValueError(
        f"data.regions: {d.name} has the 29 regions {anatomy.CHEST_IMAGENOME_REGIONS}, got "
        f"{self.regions}"
      )
    if not self.findings or len(set(self.findings)) != len(self.findings):
      raise ValueError(f"data.findings: expected distinct finding names, got {self.findings}")
    self.seen = tuple(d.train_findings)
    unknown = [f for f in self.seen if f not in self.findings]
    if unknown:
      raise ValueError(
        f"data.train_findings: expected names from data.findings {self.findings}, got {unknown}"
      )
    self.label_mask = np.array([f in self.seen for f in self.findings], np.float32)
    # Prompts: a phantom finding by its knowledge description, a dataset finding by its name.
    text = {f: anatomy.FINDINGS[f].description if not self.real else f for f in self.findings}
    self.label_tokens = self._tokenize([text[f] for f in self.findings])
    prompts = anatomy.prompts(self.regions)
    self.region_prompt_tokens = (
      self._tokenize(  # [R, F + 1, T]: each finding in region r, then "r is clear"
        [
          [prompts["region"].get((f, r), f"{text[f]} in the {r}") for f in self.findings]
          + [prompts["normal"][r]]
          for r in self.regions
        ]
      )
    )
    # Where a finding can occur: the phantom's rule; on real data every region.
    self.region_allowed = np.array(
      [[self.real or r in anatomy.FINDINGS[f].regions for f in self.findings] for r in self.regions]
    )

  def _tokenize(self, phrases, name="phrases"):
    return anatomy.encode_phrases(phrases, self.tokenizer, self.model_cfg.text.max_len, name)

  # ---- model and data ------------------------------------------------------------------------------
  def build_model(self):
    return AnatomyVLM(self.model_cfg)

  def init_slots(self):
    return {
      "image": (("vision",), self.model_cfg.vit),
      "text": (("text_encoder",), self.model_cfg.text),
    }

  def dummy_batch(self, batch_size):
    m, t, k = len(self.regions), self.model_cfg.text.max_len, self.config.data.num_negatives
    s, c = self.model_cfg.vit.image_size, self.model_cfg.vit.channels
    f = len(self.findings)
    z = lambda *shape, dt=np.float32: np.zeros((batch_size,) + shape, dt)
    return {
      "image": z(s, s, c),
      "boxes": z(m, 4) + 0.5,
      "box_valid": z(m),
      "phrase_valid": z(m),
      "labels": z(f),
      "region_labels": z(m, f),
      "phrase_tokens": z(m, t, dt=np.int32),
      "neg_tokens": z(m, k, t, dt=np.int32),
      "neg_valid": z(m, k),
    }

  def init_params(self, model, rng, batch):
    return model.init(rng, batch["image"], batch["phrase_tokens"])["params"]

  def flops_per_step(self, model, batch, num_params):
    # The phrases `_terms` encodes: each region's phrase and negatives (with fine alignment on),
    # then the findings' label prompts.
    b, m, k, t = np.shape(batch["neg_tokens"])
    phrases = len(self.label_tokens) + (b * m * (1 + k) if self.terms_on["fine"] else 0)
    return train_flops(self.model_cfg, b, phrases, t)

  def encode(self, ex) -> dict:
    """A generator / dataset example -> the arrays of one batch row."""
    k, c = self.config.data.num_negatives, self.model_cfg.vit.channels
    m, t = len(self.regions), self.model_cfg.text.max_len
    ex = _with_masks(ex, m)
    neg = [[n for n in row][:k] for row in ex["negatives"]]
    neg_valid = np.array([[j < len(row) for j in range(k)] for row in neg], np.float32)
    flat = [p for row in neg for p in row]
    neg_tokens = np.zeros((m, k, t), np.int32)
    fine_on = self.terms_on["fine"]  # without fine alignment no phrase is read: left as padding
    if flat and fine_on:
      neg_tokens[neg_valid.astype(bool)] = self._tokenize(flat, "negatives")
    image = np.asarray(ex["image"], np.float32)
    return {
      "image": np.repeat(image, c, -1) if image.shape[-1] != c else image,
      "boxes": ex["boxes"],
      "box_valid": ex["box_valid"],
      "phrase_valid": ex["phrase_valid"],
      "labels": ex["labels"],
      "region_labels": ex["region_labels"],
      "phrase_tokens": self._tokenize(ex["phrases"]) if fine_on else np.zeros((m, t), np.int32),
      "neg_tokens": neg_tokens,
      "neg_valid": neg_valid,
    }

  def source(self, split):
    """Phantoms: generated examples (seen findings only), record i of a split drawn from (split,
    seed, i). Chest ImaGenome: the builder's records as examples (`imagenome_example`). No
    validation split with `data.eval_loss` False."""
    d = self.config.data
    if split == "validation" and not d.get("eval_loss", True):
      return None
    if self.real:
      return builders.Mapped(self._builder_split(split), self._real_example)
    return pipeline.IndexSource(
      d.train_size if split == "train" else d.eval_size,
      functools.partial(self._generate, split=split),
    )

  def builder_config(self) -> str:
    """`data.builder_config`, or the builder config whose image size is the model's."""
    d, size = self.config.data, self.model_cfg.vit.image_size
    if d.builder_config:
      return d.builder_config
    configs = builders.builder_class(d.name).BUILDER_CONFIGS
    names = [c.name for c in configs if c.image_size == size]
    if len(names) != 1:
      raise ValueError(
        f"data.builder_config: expected one {d.name} config of image size {size} "
        f"(model.vit.image_size), got {names} of {[(c.name, c.image_size) for c in configs]}"
      )
    return names[0]

  def _builder_split(self, split):
    d = self.config.data
    return builders.load_builder(
      d.name, split, data_dir=d.data_dir, manual_dir=d.manual_dir, config=self.builder_config()
    )

  def _real_example(self, record):
    return imagenome_example(
      record, self.findings, self.config.data.num_negatives, self.config.seed
    )

  def _generate(self, index, *, split):
    rng = np.random.default_rng([SPLIT_SEEDS[split], self.config.seed, int(index)])
    return anatomy.make_example(
      rng,
      regions=self.regions,
      findings=self.seen,
      size=self.model_cfg.vit.image_size,
      num_negatives=self.config.data.num_negatives,
    )

  # ---- losses --------------------------------------------------------------------------------------
  def _stage_weights(self, step):
    """Staged training (detection -> + global -> + fine); a stage whose own loss is off is skipped."""
    w_anat, w_fine, w_global = self.config.loss.weights
    det, glob = self.config.loss.stage_steps
    det, glob = (det if w_anat else 0), (glob if w_global else 0)
    return (
      jnp.float32(w_anat),
      w_fine * (step >= det + glob).astype(jnp.float32),
      w_global * (step >= det).astype(jnp.float32),
    )

  def _terms(self, model, params, batch):
    """All loss terms and metrics (unweighted). A term that is off (weight 0) costs nothing it need
    not: without fine alignment the phrases are not encoded and the fine term and its accuracy are
    0; without detection the queries are not matched (box metrics score them in region order)."""
    lc = self.config.loss
    b, m = batch["boxes"].shape[:2]
    k, t = batch["neg_tokens"].shape[2:]
    anat_on, fine_on = self.terms_on["anat"], self.terms_on["fine"]
    phrases = (
      [batch["phrase_tokens"].reshape(-1, t), batch["neg_tokens"].reshape(-1, t)] if fine_on else []
    )
    img, txt, lp = model.apply(
      {"params": params},
      batch["image"],
      jnp.concatenate(phrases + [jnp.asarray(self.label_tokens)]),
      train=True,
    )
    label_emb = txt[-len(self.label_tokens) :]
    valid = batch["box_valid"]
    phrase_valid = valid * batch["phrase_valid"]  # regions with a box and a phrase
    if lc.matching == "hungarian" and anat_on:
      cost = box_lib.match_cost(
        img["boxes"],
        batch["boxes"],
        valid.astype(bool),
        jax.nn.softmax(img["region_logits"], -1)[..., :m],
        l1_weight=lc.l1_weight,
        giou_weight=lc.giou_weight,
        class_weight=lc.class_weight,
      )
      idx = box_lib.hungarian_match(cost)
    else:
      idx = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (b, m))
    pred = box_lib.gather_queries(img["boxes"], idx)
    l1, giou = box_lib.box_loss(pred, batch["boxes"], valid)
    cls_logits = box_lib.gather_queries(img["region_logits"], idx)
    cls = -jnp.take_along_axis(
      jax.nn.log_softmax(cls_logits, -1), jnp.arange(m)[None, :, None], -1
    )[..., 0]
    n_valid = jnp.maximum(jnp.sum(valid), 1.0)
    cls = jnp.sum(cls * valid) / n_valid
    anat = lc.l1_weight * l1 + lc.giou_weight * giou + lc.class_weight * cls
    miou = (
      jnp.sum(
        box_lib.iou(box_lib.cxcywh_to_xyxy(pred), box_lib.cxcywh_to_xyxy(batch["boxes"])) * valid
      )
      / n_valid
    )
    fine = fine_acc = jnp.float32(0.0)
    if fine_on:
      region_emb = box_lib.gather_queries(img["region_emb"], idx).reshape(b * m, -1)
      fine, fine_acc = info_nce(
        region_emb,
        txt[: b * m],
        txt[b * m : b * m * (1 + k)].reshape(b * m, k, -1),
        batch["phrase_tokens"].reshape(b * m, t),
        phrase_valid.reshape(-1),
        batch["neg_valid"].reshape(b * m, k),
        lp["fine_scale"],
      )
    glob_logits = lp["global_scale"] * img["image_emb"] @ label_emb.T + lp["global_bias"]
    glob = sigmoid_bce(glob_logits, batch["labels"], jnp.asarray(self.label_mask))
    return {"anat": anat, "fine": fine, "global": glob}, {
      "box_l1": l1,
      "giou_loss": giou,
      "region_ce": cls,
      "box_miou": miou,
      "fine_acc": fine_acc,
    }

  def loss(self, model, params, batch, rng, step):
    terms, metrics = self._terms(model, params, batch)
    w = dict(zip(TERMS, self._stage_weights(step)))
    # A term that is off is left out rather than multiplied by 0, so it gets no backward pass.
    total = sum((w[k] * terms[k] for k in TERMS if self.terms_on[k]), jnp.float32(0.0))
    return total, {**{f"loss_{k}": v for k, v in terms.items()}, **metrics}

  def eval_metrics(self, model, params, batch):
    terms, metrics = self._terms(model, params, batch)
    w_anat, w_fine, w_global = self.config.loss.weights
    total = w_anat * terms["anat"] + w_fine * terms["fine"] + w_global * terms["global"]
    out = {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}, **metrics}
    return {k: (v, 1.0) for k, v in out.items()}

  # ---- zero-shot interpretation and evaluation ---------------------------------------------------------
  def interpret(self, model, params, images, batch_size: int = 64) -> dict:
    """Zero-shot reading of images [N,H,W,C]. Numpy arrays, regions in `self.regions` order:
    boxes [N,R,4] xyxy; region_scores [N,R,F]: logit of "<description> in the <region>" against
    "the <region> is clear" for the region's embedding; image_probs [N,F]: the global head's
    probabilities (descriptions as prompts); image_region_scores [N,F]: over the regions where each finding
    occurs, the max of log p(finding | region), a softmax over the prompts of the findings that occur in the
    region and its "clear" prompt (CLIP-style zero-shot); image_fused_scores [N,F]: global logit +
    image_region_scores.
    """
    m = len(self.regions)
    fn = _interpret_fn(model)
    outs = []
    for i in range(0, len(images), batch_size):
      outs.append(
        jax.device_get(
          fn(
            params,
            jnp.asarray(images[i : i + batch_size]),
            jnp.asarray(self.label_tokens),
            jnp.asarray(self.region_prompt_tokens),
          )
        )
      )
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    if (
      self.config.loss.matching == "hungarian"
    ):  # each region takes the query most confident it is that region
      idx = np.stack([_query_per_region(-lp[:, :m]) for lp in out["region_logprobs"]])
    else:
      idx = np.broadcast_to(np.arange(m), (len(images), m))
    take = lambda x: np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), 1)
    boxes = np.asarray(box_lib.cxcywh_to_xyxy(take(out["boxes"])))
    region_scores = take(out["region_scores"])[
      :, np.arange(m), np.arange(m)
    ]  # query of region r, prompts of r
    # log p(finding | region) over the findings that occur in the region and "clear" (logit 0 in the margins)
    possible = np.where(self.region_allowed, region_scores, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
      log_p = possible - np.logaddexp(scipy.special.logsumexp(possible, -1, keepdims=True), 0.0)
    image_region = log_p.max(1)
    return {
      "boxes": boxes,
      "region_scores": region_scores,
      "image_probs": out["image_probs"],
      "image_region_scores": image_region,
      "image_fused_scores": out["image_logits"] + image_region,
    }

  def test_examples(self) -> list:
    """The `data.test_size` examples `evaluate` scores: phantoms of seen and held-out findings, or
    the first of the builder's test split (its validation split where it has no test split)."""
    if self.real:
      try:
        src = self._builder_split("test")
      except ValueError:
        src = self._builder_split("validation")
      n = min(len(src), self.config.data.test_size)
      return [self._real_example(src[i]) for i in range(n)]
    rng = np.random.default_rng([SPLIT_SEEDS["test"], self.config.seed])
    return [
      anatomy.make_example(
        rng, regions=self.regions, findings=self.findings, size=self.model_cfg.vit.image_size
      )
      for _ in range(self.config.data.test_size)
    ]

  def evaluate(self, model, params, ablate: bool = False) -> dict:
    """Box mean IoU, and AUC / balanced accuracy / F1 of seen and held-out (zero-shot) findings;
    with `ablate`, each image is read in place of another's (`Task.ablate`)."""
    if not self.config.data.test_size:
      return {}
    exs = self.test_examples()
    c = self.model_cfg.vit.channels
    images = np.stack([np.repeat(e["image"], c, -1) if c != 1 else e["image"] for e in exs])
    if ablate:
      images = self.ablate({"image": images})["image"]
    res = self.interpret(model, params, images)
    return evaluation_metrics(res, exs, self.findings, self.seen, self.region_allowed)


def metric_name(finding: str) -> str:
  """A finding name as a metric-key part: "mass/nodule (not otherwise specified)" ->
  "mass_nodule_not_otherwise_specified"."""
  return re.sub(r"[^0-9a-z]+", "_", finding.lower()).strip("_")


def evaluation_metrics(res: dict, exs: list, findings, seen, allowed=None) -> dict:
  """Metrics from `interpret` outputs against examples (see AnatomyVLMTask.evaluate). Box mean IoU
  over the regions with a box (`box_valid`; all for phantoms). Anatomy-wise AUC ranks (image,
  region) pairs, over the regions where the finding can occur (`allowed` [R,F]; all if None).
  The wrong-description controls auc_wrong (global head) and auc_anatomy_wrong (regions) score each
  finding with the next finding's description in its group (held-out: mass <-> bleb). Per finding
  with both classes among the images: auc/<finding> (global head), auc_region/<finding> (image score
  from the regions) and auc_anatomy/<finding> (per region), and pos/<finding> its positive images."""
  exs = [_with_masks(e, len(e["boxes"])) for e in exs]
  true_boxes = np.asarray(box_lib.cxcywh_to_xyxy(np.stack([e["boxes"] for e in exs])))
  box_valid = np.stack([e["box_valid"] for e in exs]).astype(bool)
  ious = np.asarray(box_lib.iou(res["boxes"], true_boxes))
  out = {"box_miou": float(ious[box_valid].mean()) if box_valid.any() else float("nan")}
  labels = np.stack([e["labels"] for e in exs]).astype(bool)
  region_labels = np.stack([e["region_labels"] for e in exs]).astype(bool)
  groups = {
    "seen": [f for f in findings if f in seen],
    "heldout": [f for f in findings if f not in seen],
  }
  for group, names in groups.items():
    keys = ("auc", "auc_wrong", "auc_region", "auc_fused", "auc_anatomy", "auc_anatomy_wrong")
    rows = {k: [] for k in keys + ("bmac", "f1")}
    for n, f in enumerate(names):
      j, wrong = findings.index(f), findings.index(names[(n + 1) % len(names)])
      if labels[:, j].all() or not labels[:, j].any():
        continue
      pred = res["image_probs"][:, j] > 0.5
      rows["auc"].append(roc_auc(labels[:, j], res["image_probs"][:, j]))
      rows["auc_wrong"].append(roc_auc(labels[:, j], res["image_probs"][:, wrong]))
      rows["auc_region"].append(roc_auc(labels[:, j], res["image_region_scores"][:, j]))
      rows["auc_fused"].append(roc_auc(labels[:, j], res["image_fused_scores"][:, j]))
      where = slice(None) if allowed is None else np.asarray(allowed)[:, j]
      for key, k in (("auc_anatomy", j), ("auc_anatomy_wrong", wrong)):
        rows[key].append(
          roc_auc(region_labels[:, where, j].ravel(), res["region_scores"][:, where, k].ravel())
        )
      rows["bmac"].append(balanced_accuracy(labels[:, j], pred))
      rows["f1"].append(f1_score(labels[:, j], pred))
      name = metric_name(f)
      out[f"pos/{name}"] = float(labels[:, j].sum())
      out[f"auc/{name}"], out[f"auc_region/{name}"] = rows["auc"][-1], rows["auc_region"][-1]
      out[f"auc_anatomy/{name}"] = rows["auc_anatomy"][-1]
    out.update(
      {f"{k}_{group}": float(np.nanmean(v)) if v else float("nan") for k, v in rows.items()}
    )
  return out


def anatomy_vlm_config_from(section) -> AnatomyVLMConfig:
  """The model section -> AnatomyVLMConfig; `text.kind` picks the text encoder's config class."""
  text = section["text"]
  text = text.to_dict() if hasattr(text, "to_dict") else dict(text)
  kind = text.get("kind", "sincos")
  if kind not in TEXT_ENCODERS:
    raise ValueError(f"model.text.kind: expected one of {sorted(TEXT_ENCODERS)}, got {kind!r}")
  text = config_lib.dataclass_from(TEXT_ENCODERS[kind], text, "model.text")
  return config_lib.dataclass_from(AnatomyVLMConfig, section, text=text)


class _MemoTokenizer:
  """A tokenizer whose `encode` remembers its answers (the generator's phrases repeat), and wraps
  each phrase in `bracket` ids (e.g. BERT's [CLS] and [SEP]) when given."""

  def __init__(self, tokenizer, bracket=(), max_entries: int = 200_000):
    self._tok, self._memo, self._max = tokenizer, {}, max_entries
    self._head, self._tail = ([bracket[0]], [bracket[1]]) if bracket else ([], [])

  def __getattr__(self, name):
    return getattr(self._tok, name)

  def encode(self, text: str) -> list[int]:
    ids = self._memo.get(text)
    if ids is None:
      ids = self._head + self._tok.encode(text) + self._tail
      if len(self._memo) < self._max:
        self._memo[text] = ids
    return list(ids)


def _query_per_region(cost):
  """[Q, R] cost -> [R] query assigned to each region."""
  rows, cols = box_lib.linear_sum_assignment(cost)
  out = np.zeros(cost.shape[1], np.int64)
  out[cols] = rows
  return out


@functools.lru_cache(maxsize=8)
def _interpret_fn(model):
  def fn(params, images, label_tokens, region_prompt_tokens):
    img = model.apply({"params": params}, images, method=AnatomyVLM.encode_image)
    lp = model.apply({"params": params}, method=AnatomyVLM.logit_params)
    labels = model.apply({"params": params}, label_tokens, method=AnatomyVLM.encode_text)  # [F,E]
    prompts = model.apply(
      {"params": params}, region_prompt_tokens, method=AnatomyVLM.encode_text
    )  # [R,F+1,E]
    cos = jnp.einsum("bqe,rfe->bqrf", img["region_emb"], prompts)
    logits = lp["global_scale"] * img["image_emb"] @ labels.T + lp["global_bias"]
    return {
      "boxes": img["boxes"],
      "region_logprobs": jax.nn.log_softmax(img["region_logits"], -1),
      "image_probs": jax.nn.sigmoid(logits),
      "image_logits": logits,
      "region_scores": lp["fine_scale"] * (cos[..., :-1] - cos[..., -1:]),
    }

  return jax.jit(fn)


def _with_masks(ex: dict, m: int) -> dict:
  """Phantom examples have every region's box and phrase: all-ones masks where they are absent."""
  ones = np.ones(m, np.float32)
  return {"box_valid": ones, "phrase_valid": ones, **ex}


def imagenome_example(record: dict, findings, num_negatives: int, seed: int) -> dict:
  """A Chest ImaGenome builder record -> an example in the phantoms' schema (`make_example`), plus
  box_valid / phrase_valid [29] masks.

  labels [F] / region_labels [29, F]: `findings` (attribute names) affirmed ("yes") in the image /
  the region. The positive phrase of a region is one of its report phrases, chosen per image from
  `seed`; its hard negatives are "<finding> in the <region>" for the findings the report denies
  there and, where it affirms one, "the <region> is clear". Invalid boxes are set to a centred
  placeholder (masked out of every loss and metric).
  """
  dec = lambda v: bytes(v).decode() if isinstance(v, (bytes, np.bytes_)) else str(v)
  regions, f_index = anatomy.CHEST_IMAGENOME_REGIONS, {f: j for j, f in enumerate(findings)}
  m = len(regions)
  box_valid = np.asarray(record["box_valid"], bool)
  boxes = np.where(box_valid[:, None], np.asarray(record["boxes"], np.float32), 0.5)
  anatomy.check_boxes(boxes[box_valid], "boxes")
  region_labels = np.zeros((m, len(findings)), np.float32)
  denied = [[] for _ in range(m)]
  a = record["attributes"]
  for r, name, positive in zip(np.asarray(a["region"]), a["name"], np.asarray(a["positive"])):
    j = f_index.get(dec(name))
    if j is None:
      continue
    if positive:
      region_labels[r, j] = 1
    elif findings[j] not in denied[r]:
      denied[r].append(findings[j])
  texts = [[] for _ in range(m)]
  for r, t in zip(np.asarray(record["phrases"]["region"]), record["phrases"]["text"]):
    texts[r].append(dec(t))
  rng = np.random.default_rng([seed, zlib.crc32(dec(record["image_id"]).encode())])
  phrases = [t[int(rng.integers(len(t)))] if t else r for t, r in zip(texts, regions)]
  negatives = []
  for r, region in enumerate(regions):
    negs = [f"{f} in the {region}" for f in denied[r]]
    if region_labels[r].any():
      negs.insert(0, f"the {region} is clear")
    negatives.append(negs[:num_negatives])
  return {
    "image": np.asarray(record["image"], np.float32) / 255.0,
    "boxes": boxes,
    "box_valid": box_valid.astype(np.float32),
    "labels": region_labels.max(0),
    "region_labels": region_labels,
    "phrases": phrases,
    "phrase_valid": np.array([bool(t) for t in texts], np.float32),
    "negatives": negatives,
  }
