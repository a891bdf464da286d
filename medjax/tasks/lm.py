"""Decoder-LM task: next-token loss on answer tokens, generation accuracy on held-out MCQs."""

import os
import zlib

import numpy as np

from medjax import config_lib
from medjax.data import pipeline
from medjax.data.synthetic import tfds_builder, triage
from medjax.data.tokenizers import load_tokenizer
from medjax.inference import generate_text
from medjax.inference.parsing import parse_answer
from medjax.models import llm
from medjax.models.llm import DecoderLM, LMConfig
from medjax.objectives import lm_loss
from medjax.tasks.base import Task

DATASETS = {"synthetic_triage"}


def lm_config_from(model_cfg) -> LMConfig:
  """LMConfig from the config's `model` section."""
  return config_lib.dataclass_from(LMConfig, model_cfg)


def wrong_explanation(ex: dict, rng: np.random.Generator) -> str:
  """A plausible wrong CoT + answer for a triage example, with the error kinds a weak model makes:
  a misjudged vital sign, a miscount, or the wrong letter for the right level (then followed through)."""
  words = ex["cot"].split(";")[0].split()
  judged = list(zip(words[::2], words[1::2]))
  kind = int(
    rng.choice(3, p=(0.4, 0.4, 0.2))
  )  # a right level with the wrong letter is the rarest slip
  if kind == 0:
    i = int(rng.integers(len(judged)))
    name, label = judged[i]
    judged[i] = (name, "ok" if label != "ok" else ("lo", "hi")[int(rng.integers(2))])
  num = sum(label != "ok" for _, label in judged)
  if kind == 1:
    num = num + 1 if num == 0 or (num < len(judged) and rng.random() < 0.5) else num - 1
  answer = triage.LEVELS[min(num, len(triage.LEVELS) - 1)]
  index = ex["options"].index(answer)
  if kind == 2:
    index = (index + int(rng.integers(1, len(ex["options"])))) % len(ex["options"])
  return f"{' '.join(f'{n} {l}' for n, l in judged)}; {num} abnormal: {answer}. Answer: {triage.LETTERS[index]}"


def refinement_example(ex: dict, rng: np.random.Generator, max_candidates: int) -> tuple[str, str]:
  """(prompt, target) teaching ensemble refinement: 2..max_candidates candidate explanations, each
  wrong with a per-question probability in [0, 0.5) (like a fair model's own samples, so the candidates
  carry evidence worth reading); the target is the correct explanation."""
  k = int(rng.integers(2, max_candidates + 1))
  p_wrong = 0.5 * rng.random()
  cands = [
    wrong_explanation(ex, rng) if rng.random() < p_wrong else triage.format_target(ex).strip()
    for _ in range(k)
  ]
  return triage.format_refinement_prompt(ex, cands), triage.format_target(ex)


class LMTask(Task):
  """Trains DecoderLM on prompt -> target text (loss on target tokens and EOS only)."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.name not in DATASETS:
      raise ValueError(f"data.name: expected one of {sorted(DATASETS)}, got {d.name!r}")
    self.tokenizer = load_tokenizer(d.tokenizer)
    self.data_dir = os.path.expanduser(d.data_dir) if d.data_dir else None
    if d.refine_frac and not d.cot:
      raise ValueError(
        f"data.refine_frac: refinement examples need data.cot=True, got refine_frac={d.refine_frac}"
      )
    direct = d.get("direct_frac", 0.0)
    for name, frac in (("refine_frac", d.refine_frac), ("direct_frac", direct)):
      if not 0.0 <= frac <= 1.0:
        raise ValueError(f"data.{name}: expected a fraction in [0, 1], got {frac}")
    if d.refine_frac + direct > 1.0:
      raise ValueError(
        f"data.refine_frac + data.direct_frac: expected at most 1, got {d.refine_frac} + {direct}"
      )
    if direct and not d.cot:
      raise ValueError(
        f"data.direct_frac: mixes direct answers into CoT data (data.cot=True), got cot={d.cot}"
      )
    mixed = d.refine_frac or direct
    self._format = self._mixed_format if mixed else (lambda r: pipeline.triage_format(r, cot=d.cot))
    self._encoder = pipeline.lm_encoder(self._format, self.tokenizer, d.seq_len)

  def _mixed_format(self, record) -> tuple[str, str]:
    """A CoT example, or (by shares fixed per question) a refinement example (`refine_frac`) or a direct
    answer (`direct_frac`)."""
    d = self.config.data
    ex = pipeline.record_to_example(record)
    rng = np.random.default_rng(zlib.crc32(ex["question"].encode()))
    u = rng.random()
    if u < d.refine_frac:
      return refinement_example(ex, rng, d.refine_candidates)
    cot = u >= d.refine_frac + d.get("direct_frac", 0.0)
    return triage.format_prompt(ex, cot), triage.format_target(ex, cot)

  def build_model(self):
    cfg = lm_config_from(self.config.model)
    if cfg.vocab_size < self.tokenizer.vocab_size:
      raise ValueError(
        f"model.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's "
        f"{self.tokenizer.vocab_size}"
      )
    return DecoderLM(cfg)

  def init_slots(self):
    return {"lm": ((), lm_config_from(self.config.model))}

  def dummy_batch(self, batch_size):
    t = self.config.data.seq_len
    z = np.zeros((batch_size, t), np.int32)
    return {"tokens": z, "targets": z, "loss_mask": z.astype(np.float32), "input_mask": z}

  def init_params(self, model, rng, batch):
    return model.init(rng, batch["tokens"])["params"]

  def loss(self, model, params, batch, rng, step):
    loss, acc, _ = lm_loss(model, params, batch)  # chunked when model.logits_chunk > 0
    return loss, {"token_accuracy": acc}

  def eval_metrics(self, model, params, batch):
    loss, acc, n = lm_loss(model, params, batch)
    return {"loss": (loss * n, n), "token_accuracy": (acc * n, n)}

  def source(self, split):
    return tfds_builder.load_source(split, self.data_dir)

  def encode(self, record):
    return self._encoder(record)

  def count_tokens(self, batch):
    return int(np.sum(batch["input_mask"]))

  def flops_per_step(self, model, batch, num_params):
    return llm.train_flops(model.cfg, num_params, *np.shape(batch["tokens"]))

  def evaluate(self, model, params, ablate: bool = False):
    """Greedy answers to held-out questions: accuracy against chance, and the unparseable rate."""
    n = self.config.data.test_size
    if not n:
      return {}
    source = tfds_builder.load_source("test", self.data_dir)
    examples = [pipeline.record_to_example(source[i]) for i in range(min(n, len(source)))]
    prompts = [triage.format_prompt(ex, cot=self.config.data.cot) for ex in examples]
    outs = generate_text(
      model, params, self.tokenizer, prompts, max_new_tokens=self.config.data.max_new_tokens
    )
    parsed = [parse_answer(o, len(ex["options"]), ex["options"]) for o, ex in zip(outs, examples)]
    correct = [p == ex["answer_idx"] for p, ex in zip(parsed, examples)]
    return {
      "answer_accuracy": float(np.mean(correct)),
      "unparseable": float(np.mean([p is None for p in parsed])),
      "chance": 1.0 / triage.NUM_OPTIONS,
    }
