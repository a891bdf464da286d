"""OpenTSLM task: text + time series -> rationale and answer; loss on answer tokens (+EOS) only.

Host side (numpy), this module turns (prompt with `<ts>` placeholders, series, target) into fixed
shape arrays, checking the data at this boundary (NaN, too long, placeholder/series mismatch).
Evaluation generates greedily, parses the text after the last "Answer:" (`medjax.inference.parsing`)
and reports accuracy and macro-F1 (a prediction outside the label set counts as a false negative
only), per question template when the source has several (ECG-QA); `predict` gives the per-example records for a JSONL file.
`data.name` is an embedded synthetic task or a public dataset's TFDS builder (medjax.data.builders.TIMESERIES,
prepared from `data.manual_dir` into `data.data_dir`).
"""

import functools

import jax
import numpy as np

from medjax import config_lib
from medjax.data import builders, pipeline
from medjax.data.synthetic import ecg, har
from medjax.data.tokenizers import load_tokenizer
from medjax.eval.classification import template_metrics
from medjax.inference import generate, pad_prompts
from medjax.inference.parsing import answer_text
from medjax.models import opentslm
from medjax.objectives import masked_cross_entropy
from medjax.tasks.base import Task

# synthetic generator modules; None: a public dataset's TFDS builder (data/<name>, timeseries_io schema)
DATASETS = {"synthetic_har": har, "synthetic_ecg": ecg, **dict.fromkeys(builders.TIMESERIES)}


def label_sets(source, records=()) -> dict:
  """{template: answer set} of a synthetic source (one template, "default", when it has no templates), or
  for a public dataset (source None) the labels of `records`."""
  if source is None:
    sets = {}
    for r in records:
      sets.setdefault(r["template"], set()).add(r["label"])
    return {k: sorted(v) for k, v in sets.items()}
  return getattr(source, "LABEL_SETS", None) or {"default": source.LABELS}


def template_and_label(ex) -> tuple[str, str]:
  """(template, label) of a synthetic example or a builder record ("template_<id>" by ECG-QA template_id;
  "default" for -1; labels lowercased as `answer_text` does)."""
  if "template_id" not in ex:
    return ex.get("template", "default"), ex["label"]
  label = ex["label"].decode() if isinstance(ex["label"], bytes) else str(ex["label"])
  tid = int(ex["template_id"])
  return (f"template_{tid}" if tid >= 0 else "default"), label.lower()


def tslm_config_from(model_cfg) -> opentslm.TSLMConfig:
  """TSLMConfig from the config's `model` section (`model.lm` holds the LMConfig fields)."""
  return config_lib.dataclass_from(opentslm.TSLMConfig, model_cfg)


def encode_prompt(
  prompt: str,
  series,
  tokenizer,
  *,
  ts_token_id: int,
  num_series: int,
  series_len: int,
  max_samples: int,
  patch: int | None = None,
  layout: str = "series_first",
  eoc_token_id: int = -1,
):
  """-> (ids, series [num_series, series_len], series_mask, series_pos [num_series]).

  The prompt holds one line per series, `<ts> description`: the placeholder, then the text that
  describes that series up to the end of its line. `layout` orders each such line in the ids:
  "series_first" keeps the ts token(s) before the description (Flamingo: the description then sees
  its series) and closes it with `eoc_token_id` (>= 0; the original's `<|endofchunk|>`);
  "text_first" puts the description before its ts token(s) (the original SoftPrompt). Each placeholder
  becomes one ts token (Flamingo, patch=None) or one per `patch` samples of its series (SoftPrompt);
  series_pos is the index of a series' first ts token in `ids` (-1: none).
  """
  if layout not in opentslm.LAYOUTS:
    raise ValueError(f"model.layout: expected one of {opentslm.LAYOUTS}, got {layout!r}")
  pieces = prompt.split(har.TS)
  if len(pieces) - 1 != len(series):
    raise ValueError(
      f"prompt: expected one {har.TS} placeholder per series ({len(series)}), got {len(pieces) - 1}"
    )
  if len(series) > num_series:
    raise ValueError(f"series: expected at most {num_series} series per example, got {len(series)}")
  arr = np.zeros((num_series, series_len), np.float32)
  mask = np.zeros((num_series, series_len), np.int32)
  pos = np.full((num_series,), -1, np.int32)
  ids = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  ids += tokenizer.encode(pieces[0])
  for i, (s, piece) in enumerate(zip(series, pieces[1:])):
    s = np.asarray(s, np.float32)
    if s.ndim != 1 or not 0 < len(s) <= min(series_len, max_samples):
      raise ValueError(
        f"series[{i}]: expected a 1-D series of 1..{min(series_len, max_samples)} samples, "
        f"got shape {s.shape}"
      )
    if not np.all(np.isfinite(s)):
      raise ValueError(
        f"series[{i}]: expected finite values, got {int(np.sum(~np.isfinite(s)))} NaN/inf"
      )
    arr[i, : len(s)], mask[i, : len(s)] = s, 1
    description, newline, rest = piece.partition("\n")
    ts = [ts_token_id] * (1 if patch is None else -(-len(s) // patch))
    if layout == "series_first":
      pos[i] = len(ids)
      ids += ts + tokenizer.encode(description) + ([eoc_token_id] if eoc_token_id >= 0 else [])
    else:
      ids += tokenizer.encode(description.lstrip(" ") + " ")
      pos[i] = len(ids)
      ids += ts
    ids += tokenizer.encode(newline + rest)
  return ids, arr, mask, pos


def encode_example(prompt: str, series, target: str, tokenizer, *, seq_len: int, **kw) -> dict:
  """Next-token arrays for prompt + target + eos (loss on target and eos), plus the series arrays."""
  prompt_ids, arr, mask, pos = encode_prompt(prompt, series, tokenizer, **kw)
  ids = prompt_ids + tokenizer.encode(target) + [tokenizer.eos_id]
  n = len(ids) - 1
  if n > seq_len:
    raise ValueError(f"data.seq_len: example needs {n} tokens, got seq_len={seq_len}")
  tokens = np.full(seq_len, tokenizer.pad_id, np.int32)
  targets = np.full(seq_len, tokenizer.pad_id, np.int32)
  tokens[:n], targets[:n] = ids[:-1], ids[1:]
  loss_mask = np.zeros(seq_len, np.float32)
  loss_mask[len(prompt_ids) - 1 : n] = 1.0
  input_mask = (np.arange(seq_len) < n).astype(np.int32)
  return {
    "tokens": tokens,
    "targets": targets,
    "loss_mask": loss_mask,
    "input_mask": input_mask,
    "series": arr,
    "series_mask": mask,
    "series_pos": pos,
  }


class OpenTSLMTask(Task):
  """Trains an OpenTSLM model (Flamingo or SoftPrompt) on series + text -> rationale + answer."""

  ablation_keys = ("series", "series_mask")  # the placeholders' positions belong to the text

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.name not in DATASETS:
      raise ValueError(f"data.name: expected one of {sorted(DATASETS)}, got {d.name!r}")
    self.generator = DATASETS[d.name]  # None: read the public builder `data.name`
    self.tokenizer = load_tokenizer(d.tokenizer)
    self.cfg = tslm_config_from(config.model)

  def _encode_kw(self):
    d, cfg = self.config.data, self.cfg
    return dict(
      ts_token_id=cfg.ts_token_id,
      num_series=d.num_series,
      series_len=d.series_len,
      max_samples=cfg.max_samples,
      patch=cfg.patch if cfg.variant == "softprompt" else None,
      layout=cfg.text_layout,
      eoc_token_id=cfg.eoc_token_id,
    )

  def init_slots(self):
    return {"lm": (("lm",), self.cfg.lm)}

  def build_model(self):
    if self.cfg.lm.vocab_size < self.tokenizer.vocab_size:
      raise ValueError(
        f"model.lm.vocab_size: {self.cfg.lm.vocab_size} is smaller than the tokenizer's "
        f"{self.tokenizer.vocab_size}"
      )
    return opentslm.build(self.cfg)

  def dummy_batch(self, batch_size):
    d = self.config.data
    z = np.zeros((batch_size, d.seq_len), np.int32)
    s = np.zeros((batch_size, d.num_series, d.series_len), np.float32)
    return {
      "tokens": z,
      "targets": z,
      "loss_mask": z.astype(np.float32),
      "input_mask": z,
      "series": s,
      "series_mask": s.astype(np.int32),
      "series_pos": np.zeros((batch_size, d.num_series), np.int32),
    }

  def model_inputs(self, batch):
    return {k: batch[k] for k in ("tokens", "series", "series_mask", "series_pos", "input_mask")}

  def init_params(self, model, rng, batch):
    return model.init(rng, **self.model_inputs(batch))["params"]

  def _forward(self, model, params, batch):
    inputs = self.model_inputs(batch)
    logits, _ = model.apply({"params": params}, inputs.pop("tokens"), **inputs)
    return masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])

  def loss(self, model, params, batch, rng, step):
    loss, acc, _ = self._forward(model, params, batch)
    return loss, {"token_accuracy": acc}

  def eval_metrics(self, model, params, batch):
    loss, acc, n = self._forward(model, params, batch)
    return {"loss": (loss * n, n), "token_accuracy": (acc * n, n)}

  def examples(self, split, seed) -> tuple[int, callable]:
    """(size, index -> example) of a split: the synthetic generator's draws with `seed` (train_size /
    eval_size of them), or the public builder's records (`seed` unused)."""
    d = self.config.data
    if self.generator is None:
      src = builders.timeseries_source(d, split)
      return len(src), lambda i: src[int(i)]
    return (d.train_size if split == "train" else d.eval_size), functools.partial(
      self.generator.example, seed
    )

  def format_example(self, ex):
    """(prompt, series, target) of an example."""
    if self.generator is None:
      from medjax.data import timeseries_io  # imports TFDS

      return timeseries_io.format_example(ex)
    return self.generator.format_example(ex)

  def source(self, split):
    """The split's examples: synthetic draws from `seed` (train) or `data.eval_seed`."""
    seed = self.config.seed if split == "train" else self.config.data.eval_seed
    return pipeline.IndexSource(*self.examples(split, seed))

  def encode(self, ex):
    prompt, series, target = self.format_example(ex)
    return encode_example(
      prompt, series, target, self.tokenizer, seq_len=self.config.data.seq_len, **self._encode_kw()
    )

  def count_tokens(self, batch):
    return int(np.sum(batch["input_mask"]))

  def flops_per_step(self, model, batch, num_params):
    b, t = np.shape(batch["tokens"])
    return opentslm.train_flops(self.cfg, b, t, *np.shape(batch["series"])[1:])

  def generate(
    self, model, params, prompts, series, max_new_tokens: int, ablate: bool = False
  ) -> list[str]:
    """Greedy completions of (prompt, list of series) pairs; with `ablate`, each prompt is given
    the series of the previous pair (`Task.ablate`)."""
    if ablate and len(prompts) < 2:
      raise ValueError(
        f"ablate: expected at least 2 prompts to roll series across, got {len(prompts)}"
      )
    enc = [
      encode_prompt(p, s, self.tokenizer, **self._encode_kw()) for p, s in zip(prompts, series)
    ]
    tokens, lens = pad_prompts([e[0] for e in enc], self.tokenizer.pad_id)
    inputs = {
      k: np.stack([e[i] for e in enc])
      for i, k in ((1, "series"), (2, "series_mask"), (3, "series_pos"))
    }
    inputs = self.ablate(inputs) if ablate else inputs
    out, n = generate(
      opentslm.SeriesConditioned(model),
      {"model": params, "inputs": inputs},
      tokens,
      lens,
      jax.random.PRNGKey(0),
      max_new_tokens=max_new_tokens,
      eos_id=self.tokenizer.eos_id,
      pad_id=self.tokenizer.pad_id,
    )
    out, n = np.asarray(out), np.asarray(n)
    return [self.tokenizer.decode(row[:k].tolist()) for row, k in zip(out, n)]

  def predict(self, model, params, ablate: bool = False) -> list[dict]:
    """Greedy generations on `data.test_size` held-out (a builder's test split) examples: one record
    each; with `ablate`, each generation batch's series rolled by one example (`generate`)."""
    d = self.config.data
    size, example = self.examples("test", d.eval_seed)
    examples = [example(i) for i in range(min(size, d.test_size))]
    formatted = [self.format_example(ex) for ex in examples]
    texts = []
    for i in range(0, len(formatted), d.eval_gen_batch):
      chunk = formatted[i : i + d.eval_gen_batch]
      texts += self.generate(
        model, params, [f[0] for f in chunk], [f[1] for f in chunk], d.max_new_tokens, ablate
      )
    meta = [template_and_label(ex) for ex in examples]
    return [
      {
        "index": i,
        "template": m[0],
        "question": f[0].rsplit("\n", 1)[-1],
        "label": m[1],
        "prediction": answer_text(t),
        "correct": answer_text(t) == m[1],
        "generation": t,
      }
      for i, (m, f, t) in enumerate(zip(meta, formatted, texts))
    ]

  def summarize(self, records) -> dict:
    records = [r for r in records if r["label"]]  # captions (M4) have no answer to score
    return template_metrics(records, label_sets(self.generator, records)) if records else {}

  def evaluate(self, model, params, ablate: bool = False):
    """Held-out generation: accuracy and macro-F1 of the parsed answers (per template if several);
    with `ablate`, of the generations from other examples' series."""
    if not self.config.data.test_size:
      return {}
    return self.summarize(self.predict(model, params, ablate))
