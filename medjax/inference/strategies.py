"""Prompting strategies for multiple-choice questions: greedy few-shot, chain of thought (CoT),
self-consistency (SC), Med-PaLM 2 ensemble refinement (ER), Medprompt's choice-shuffle ensemble
(`shuffle`) and Medprompt itself (`medprompt`: self-generated CoT exemplars over a training pool,
kNN selection of 5 of them per question, 5 choice shuffles, majority vote).

Every strategy takes a `generator` (`LMGenerator` for a real model, or any callable with its
signature), a prompt `fmt` (`TriageFormat`, `FewShotFormat`) and examples
{question, options, answer_idx}, and returns a `StrategyResult`: per-question records (prompts,
every generation, parsed answers, the vote) and the forward tokens spent (prefill + decoded).
Sampled generations of one prompt are one batched `generate(num_samples=N)` call sharing a prefill.
"""

import collections
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medjax.data.synthetic import triage
from medjax.inference import decode
from medjax.inference.parsing import letters, parse_answer, rationale

# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


class LMGenerator:
  """Texts from a DecoderLM: `__call__(prompts, num_samples, temperature, seed)`.

  Returns (per-prompt lists of `num_samples` texts, forward tokens = prompt tokens prefilled once
  per prompt + tokens decoded). Prompts go through `decode.generate` in chunks of at most
  `max_rows` output rows (prompts x samples), so big ensembles fit in memory.
  """

  def __init__(
    self,
    model,
    params,
    tokenizer,
    *,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    max_rows: int = 256,
    top_k: int = 0,
    top_p: float = 1.0,
    fixed_length: bool = False,
  ):
    if max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens}")
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.max_new_tokens, self.stop, self.max_rows = max_new_tokens, tuple(stop), max_rows
    # fixed_length (benchmarks): no EOS or stop sequence ends a row; every row decodes max_new_tokens.
    self.stop_ids = () if fixed_length else decode.stop_token_ids(tokenizer, self.stop)
    self.eos_id = -1 if fixed_length else tokenizer.eos_id
    self.top_k, self.top_p = top_k, top_p

  def __call__(
    self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0, seed: int = 0
  ) -> tuple[list[list[str]], int]:
    tok = self.tokenizer
    per_call = max(1, self.max_rows // num_samples)
    texts, spent = [], 0
    for c, start in enumerate(range(0, len(prompts), per_call)):
      ids = [tok.encode(p, add_bos=True) for p in prompts[start : start + per_call]]
      toks, lens = decode.pad_prompts(ids, tok.pad_id)
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), c)
      out, n = decode.generate(
        self.model,
        self.params,
        jnp.asarray(toks),
        jnp.asarray(lens),
        rng,
        max_new_tokens=self.max_new_tokens,
        num_samples=num_samples,
        temperature=float(temperature),
        top_k=self.top_k,
        top_p=self.top_p,
        eos_id=self.eos_id,
        pad_id=tok.pad_id,
        vocab_size=tok.vocab_size,
        stop_ids=self.stop_ids,
      )
      out, n = np.asarray(out), np.asarray(n)
      spent += int(lens.sum()) + int(n.sum())
      rows = [decode.cut_at_stop(tok.decode(r[:k].tolist()), self.stop) for r, k in zip(out, n)]
      texts += [rows[i : i + num_samples] for i in range(0, len(rows), num_samples)]
    return texts, spent


# ---------------------------------------------------------------------------------------------
# Prompt formats
# ---------------------------------------------------------------------------------------------


class TriageFormat:
  """The embedded triage task's own format (what the tiny LM is trained on)."""

  def prompt(self, ex: dict, cot: bool) -> str:
    return triage.format_prompt(ex, cot=cot)

  def refine_prompt(self, ex: dict, candidates: Sequence[str]) -> str:
    return triage.format_refinement_prompt(ex, list(candidates))

  def parse(self, text: str, ex: dict, cot: bool) -> str | None:
    del cot
    return parse_answer(text, len(ex["options"]), ex["options"])


def _block(ex: dict) -> str:
  ctx = f"Context: {ex['context']}\n" if ex.get("context") else ""
  opts = "\n".join(f"({l}) {o}" for l, o in zip(letters(len(ex["options"])), ex["options"]))
  return f"{ctx}Question: {ex['question']}\n{opts}\n"


class FewShotFormat:
  """Few-shot prompts for any MCQ dataset and any (base or instruction-tuned) LM.

  `shots`: solved examples (with an optional 'explanation' used by CoT prompts), or a function
  ex -> shots (e.g. `KNNFewShot`). Direct prompts end with 'Answer: (', CoT ones with 'Explanation:'.
  """

  def __init__(
    self,
    shots: Sequence[dict] | Callable[[dict], Sequence[dict]] = (),
    instruction: str = "The following are multiple choice questions about medical knowledge.",
  ):
    self.shots, self.instruction = shots, instruction

  def with_shots(self, shots) -> "FewShotFormat":
    """The same format with other exemplars (a list, or a function ex -> list)."""
    return FewShotFormat(shots, self.instruction)

  def _shots(self, ex: dict, cot: bool) -> str:
    shots = self.shots(ex) if callable(self.shots) else self.shots
    parts = []
    for s in shots:
      why = f"Explanation: {s['explanation'].strip()} " if cot and s.get("explanation") else ""
      parts.append(f"{_block(s)}{why}Answer: ({s['answer_idx']})\n\n")
    return "".join(parts)

  def _head(self, ex: dict, cot: bool) -> str:
    return f"{self.instruction}\n\n{self._shots(ex, cot)}{_block(ex)}"

  def prompt(self, ex: dict, cot: bool) -> str:
    return self._head(ex, cot) + ("Explanation:" if cot else "Answer: (")

  def refine_prompt(self, ex: dict, candidates: Sequence[str]) -> str:
    cands = "".join(f"Candidate {i + 1}: {c.strip()}\n" for i, c in enumerate(candidates))
    return (
      f"{self._head(ex, True)}Candidate explanations and answers (some may be wrong):\n{cands}"
      "Considering the candidates, give a refined explanation and answer.\nExplanation:"
    )

  def parse(self, text: str, ex: dict, cot: bool) -> str | None:
    text = text if cot else "Answer: (" + text
    return parse_answer(text, len(ex["options"]), ex["options"])


def _knn_text(ex: dict) -> str:
  """What kNN compares: the context and question (not the options, so shuffles share neighbours)."""
  return f"{ex.get('context') or ''}\n{ex['question']}".strip()


class KNNFewShot:
  """Medprompt's dynamic few-shot: the `k` pool examples nearest (cosine) to the question.

  `embed_fn(list[str]) -> [n, d]` embeds texts (e.g. mean-pooled LM hidden states); the pool is
  embedded once, each question once. Use as `FewShotFormat(shots=KNNFewShot(pool, embed_fn))`.
  """

  def __init__(self, pool: Sequence[dict], embed_fn: Callable[[list[str]], np.ndarray], k: int = 5):
    if not 0 < k <= len(pool):
      raise ValueError(f"k: expected 1..{len(pool)} (the pool size), got {k}")
    self.pool, self.embed_fn, self.k = list(pool), embed_fn, k
    self._emb = self._unit(embed_fn([_knn_text(ex) for ex in self.pool]))
    self._query = {}

  @staticmethod
  def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

  def __call__(self, ex: dict) -> list[dict]:
    text = _knn_text(ex)
    if text not in self._query:
      self._query[text] = self._unit(self.embed_fn([text]))[0]
    sims = self._emb @ self._query[text]
    return [self.pool[i] for i in np.argsort(-sims, kind="stable")[: self.k]]


def lm_embed_fn(model, params, tokenizer, max_len: int = 512) -> Callable[[list[str]], np.ndarray]:
  """texts -> [n, d] mean-pooled final hidden states of the LM (an embedding for `KNNFewShot`)."""

  @jax.jit
  def pooled(params, toks, mask):
    h, _ = model.apply({"params": params}, toks, input_mask=mask, return_hidden=True)
    m = mask[..., None].astype(h.dtype)
    return (h * m).sum(1) / m.sum(1)

  def embed(texts):
    toks, lens = decode.pad_prompts(
      [tokenizer.encode(t, add_bos=True)[:max_len] for t in texts], tokenizer.pad_id, multiple=64
    )
    mask = (np.arange(toks.shape[1])[None] < lens[:, None]).astype(np.int32)
    return np.asarray(pooled(params, jnp.asarray(toks), jnp.asarray(mask)), np.float32)

  return embed


# ---------------------------------------------------------------------------------------------
# Voting and results
# ---------------------------------------------------------------------------------------------


def plurality_vote(answers: Sequence[str | None]) -> str | None:
  """Most frequent parsed answer; ties go to the answer that appeared first; None if none parsed."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  best = max(counts.values())
  return next(a for a in answers if a is not None and counts[a] == best)


@dataclasses.dataclass
class StrategyResult:
  name: str
  records: list[dict]
  forward_tokens: int

  @property
  def accuracy(self) -> float:
    return float(np.mean([r["correct"] for r in self.records])) if self.records else 0.0

  @property
  def unparseable(self) -> float:
    """Fraction of the generations that voted (final stage) with no parseable answer."""
    answers = [a for r in self.records for a in r["answers"]]
    return float(np.mean([a is None for a in answers])) if answers else 0.0

  def summary(self) -> dict:
    return {
      "strategy": self.name,
      "accuracy": self.accuracy,
      "unparseable": self.unparseable,
      "forward_tokens": self.forward_tokens,
      "questions": len(self.records),
    }


def _record(ex: dict, prompt: str, generations: list[str], answers: list, **extra) -> dict:
  vote = plurality_vote(answers)
  return {
    "question": ex["question"],
    "options": list(ex["options"]),
    "answer_idx": ex["answer_idx"],
    "prompt": prompt,
    "generations": generations,
    "answers": answers,
    "vote": vote,
    "correct": vote == ex["answer_idx"],
    **extra,
  }


def _sampled(
  generator, fmt, examples, *, cot, num_samples, temperature, seed, name
) -> StrategyResult:
  prompts = [fmt.prompt(ex, cot) for ex in examples]
  gens, spent = generator(prompts, num_samples=num_samples, temperature=temperature, seed=seed)
  records = [
    _record(ex, p, g, [fmt.parse(t, ex, cot) for t in g])
    for ex, p, g in zip(examples, prompts, gens)
  ]
  return StrategyResult(name, records, spent)


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------


def greedy(generator, fmt, examples) -> StrategyResult:
  """Few-shot direct answer, greedy decoding."""
  return _sampled(
    generator, fmt, examples, cot=False, num_samples=1, temperature=0.0, seed=0, name="greedy"
  )


def chain_of_thought(generator, fmt, examples) -> StrategyResult:
  """Few-shot chain of thought, greedy decoding."""
  return _sampled(
    generator, fmt, examples, cot=True, num_samples=1, temperature=0.0, seed=0, name="cot"
  )


def self_consistency(
  generator, fmt, examples, *, num_samples: int = 11, temperature: float = 0.7, seed: int = 0
) -> StrategyResult:
  """CoT sampled `num_samples` times per question (one shared prefill), plurality vote."""
  _check_samples("num_samples", num_samples, temperature)
  return _sampled(
    generator,
    fmt,
    examples,
    cot=True,
    num_samples=num_samples,
    temperature=temperature,
    seed=seed,
    name="sc",
  )


def ensemble_refinement(
  generator,
  fmt,
  examples,
  *,
  num_samples: int = 11,
  num_refinements: int = 33,
  temperature: float = 0.7,
  seed: int = 0,
) -> StrategyResult:
  """Med-PaLM 2 ensemble refinement.

  Stage 1: `num_samples` sampled CoT generations per question. Stage 2: `num_refinements` sampled
  generations conditioned on the prompt, the question and all stage-1 generations; plurality vote
  over the refined answers. Each stage is one batched generator call.
  """
  _check_samples("num_samples", num_samples, temperature)
  _check_samples("num_refinements", num_refinements, temperature)
  stage1 = _sampled(
    generator,
    fmt,
    examples,
    cot=True,
    num_samples=num_samples,
    temperature=temperature,
    seed=seed,
    name="er-stage1",
  )
  prompts = [fmt.refine_prompt(ex, r["generations"]) for ex, r in zip(examples, stage1.records)]
  gens, spent = generator(
    prompts, num_samples=num_refinements, temperature=temperature, seed=seed + 1
  )
  records = []
  for ex, p, g, r1 in zip(examples, prompts, gens, stage1.records):
    records.append(
      _record(
        ex,
        p,
        g,
        [fmt.parse(t, ex, True) for t in g],
        stage1_prompt=r1["prompt"],
        stage1_generations=r1["generations"],
        stage1_answers=r1["answers"],
        stage1_vote=r1["vote"],
      )
    )
  return StrategyResult("er", records, stage1.forward_tokens + spent)


def shuffle_options(ex: dict, perm: Sequence[int]) -> dict:
  """`ex` with options reordered: new option j is old option perm[j]; answer_idx follows."""
  perm = [int(p) for p in perm]
  n = len(ex["options"])
  if sorted(perm) != list(range(n)):
    raise ValueError(f"perm: expected a permutation of range({n}), got {perm}")
  valid = letters(n)
  return {
    **ex,
    "options": [ex["options"][p] for p in perm],
    "answer_idx": valid[perm.index(valid.index(ex["answer_idx"]))],
  }


def unshuffle_answer(letter: str | None, perm: Sequence[int]) -> str | None:
  """Maps an answer to the shuffled question back to the original option letter."""
  return None if letter is None else letters(len(perm))[int(perm[letters(len(perm)).index(letter)])]


def choice_shuffle(
  generator,
  fmt,
  examples,
  *,
  num_shuffles: int = 5,
  temperature: float = 0.0,
  cot: bool = True,
  seed: int = 0,
) -> StrategyResult:
  """Medprompt's choice-shuffle ensemble: answer `num_shuffles` option orders, map back, vote.

  The first order is the original one; the rest are distinct random permutations where possible.
  """
  if num_shuffles < 1:
    raise ValueError(f"num_shuffles: expected >= 1, got {num_shuffles}")
  rng = np.random.default_rng(seed)
  perms = []
  for ex in examples:
    n = len(ex["options"])
    ps, tries = [tuple(range(n))], 0
    while len(ps) < num_shuffles:
      p = tuple(int(i) for i in rng.permutation(n))
      tries += 1
      if p not in ps or tries > 100:
        ps.append(p)
    perms.append(ps)
  shuffled = [shuffle_options(ex, p) for ex, ps in zip(examples, perms) for p in ps]
  prompts = [fmt.prompt(ex, cot) for ex in shuffled]
  gens, spent = generator(prompts, num_samples=1, temperature=temperature, seed=seed)
  records = []
  for i, (ex, ps) in enumerate(zip(examples, perms)):
    sl = slice(i * num_shuffles, (i + 1) * num_shuffles)
    texts = [g[0] for g in gens[sl]]
    raw = [fmt.parse(t, s, cot) for t, s in zip(texts, shuffled[sl])]
    answers = [unshuffle_answer(a, p) for a, p in zip(raw, ps)]
    records.append(
      _record(
        ex,
        prompts[sl][0],
        texts,
        answers,
        prompts=prompts[sl],
        permutations=[list(p) for p in ps],
        shuffled_answers=raw,
      )
    )
  return StrategyResult("shuffle", records, spent)


def self_generated_cot(generator, fmt, pool: Sequence[dict]) -> tuple[list[dict], int]:
  """Medprompt's self-generated CoT: explain each pool example (greedy CoT with `fmt`), keep those
  whose parsed answer is right.

  Returns (pool examples with the generated 'explanation', forward tokens) for use as exemplars.
  """
  res = chain_of_thought(generator, fmt, pool)
  kept = [
    {**ex, "explanation": rationale(r["generations"][0])}
    for ex, r in zip(pool, res.records)
    if r["correct"] and rationale(r["generations"][0])
  ]
  return kept, res.forward_tokens


def medprompt(
  generator,
  fmt,
  examples,
  *,
  pool: Sequence[dict],
  embed_fn: Callable[[list[str]], np.ndarray],
  k: int = 5,
  num_shuffles: int = 5,
  seed: int = 0,
) -> StrategyResult:
  """Medprompt (Nori et al. 2023): self-generated CoT over `pool` (the training split, prompted with
  `fmt`), the `k` kept exemplars nearest each question by `embed_fn`, `num_shuffles` CoT answers
  with shuffled options, majority vote. With fewer than `k` kept, all of them are shown (none: zero-shot
  CoT); each record says how many were kept (`sgcot_kept`)."""
  if not hasattr(fmt, "with_shots"):
    raise ValueError(f"medprompt: expected a few-shot prompt format (FewShotFormat), got {fmt!r}")
  if not pool:
    raise ValueError("pool: medprompt needs training examples to explain, got none")
  kept, spent = self_generated_cot(generator, fmt, pool)
  shots = KNNFewShot(kept, embed_fn, k=min(k, len(kept))) if kept else ()
  res = choice_shuffle(
    generator, fmt.with_shots(shots), examples, num_shuffles=num_shuffles, cot=True, seed=seed
  )
  records = [{**r, "sgcot_kept": len(kept), "sgcot_pool": len(pool)} for r in res.records]
  return StrategyResult("medprompt", records, spent + res.forward_tokens)


def _check_samples(name: str, n: int, temperature: float) -> None:
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"{name}: expected a positive int, got {n!r}")
  if n > 1 and temperature <= 0:
    raise ValueError(f"temperature: expected > 0 when sampling {name}={n} times, got {temperature}")


STRATEGIES = {
  "greedy": greedy,
  "cot": chain_of_thought,
  "sc": self_consistency,
  "er": ensemble_refinement,
  "shuffle": choice_shuffle,
  "medprompt": medprompt,
}
