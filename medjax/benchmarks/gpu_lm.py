"""Decoder-LM speed on one accelerator, as one table (issue 19): training steps, decoding against
the bandwidth roofline, and ensemble refinement against one greedy answer, side by side in one run.

Rows (`ROWS`, run in this order; each is printed as it completes, then the whole table):
  train.*   the real training step (`make_train_step`, AdamW with configs/llm.py's settings for
            the published sizes: bf16 compute, fp32 params) on random tokens: step ms, MFU
            (analytic `train_flops` over the device's dense bf16 peak) and the compiled memory.
            train.llama.base is the previous configuration (benchmarks/gpu_mfu.sh, README table).
  decode.*  `generate` in bf16 (params too) on random prompts of `prompt_len` tokens, greedy,
            `new_tokens` each: tokens/s of the whole call, ms per decode step (the call less a
            separately timed prefill) and the roofline share (`roofline.decode_roofline_s`).
  er.*      ensemble refinement's two batched `generate` calls, as `strategies.ensemble_refinement`
            makes them (stage 1: N samples sharing the prompt's prefill; the N answers come to the
            host; stage 2: M samples of the prompt followed by the N answers), against one greedy
            answer to the same prompt: the wall-time ratio. Token level (no text formatting).
A row NAME@SET runs NAME in a child process with the XLA flags `XLA_FLAG_SETS[SET]` (XLA reads
XLA_FLAGS once, when the backend starts; an unknown flag aborts only that child). The other rows
run in child processes too (a row that takes one down loses only itself); rows not started within
the time budget are reported as skipped.
Random weights at the presets' shapes; nothing is downloaded, and only the JAX stack (jax, flax,
optax, absl, etils, numpy) is imported, so it runs on an offline GPU machine with a stock JAX
install. `Settings.tiny_run()` swaps in the tiny presets and small shapes: every row runs on a
CPU in about a minute.
"""

import dataclasses
import json
import math
import os
import statistics
import subprocess
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medjax import parallel
from medjax.benchmarks import profile_summary, roofline
from medjax.inference.decode import generate, pad_prompts
from medjax.models.llm import DecoderLM, lm_config
from medjax.objectives import lm_loss
from medjax.parallel.sharding import batch_sharding
from medjax.train.metrics import compiled_cost, hbm_bandwidth, peak_flops
from medjax.train.optim import make_optimizer
from medjax.train.state import create_train_state
from medjax.train.step import make_train_step

# Names found in jaxlib 0.10.2's binaries and values its flag parser accepts (the GPU machine's
# jaxlib may differ: each set runs in a child process of its own).
XLA_FLAG_SETS = {
  "lhs": "--xla_gpu_enable_latency_hiding_scheduler=true",
  "no_triton_gemm": "--xla_gpu_enable_triton_gemm=false",
  "while_graphs": "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL",
}

# configs/llm.py for the published sizes (base_config's optim section with lr 3e-4, decay 0.01).
OPTIM = dict(
  name="adamw",
  lr=3e-4,
  warmup_steps=0.05,
  schedule="cosine",
  end_lr_frac=0.1,
  b1=0.9,
  b2=0.95,
  eps=1e-8,
  weight_decay=0.01,
  grad_clip=1.0,
  freeze=(),
  groups=(),
)
TOTAL_STEPS = 10_000
TRAIN_DTYPES = dict(dtype="bfloat16", param_dtype="float32")
DECODE_DTYPES = dict(dtype="bfloat16", param_dtype="bfloat16")
TINY_PRESETS = {"llama-3.2-1b": "tiny", "gemma-3-1b": "tiny-gemma"}
# The tiny presets made smaller still, layers scanned: each program compiles in 1-2 s on a CPU.
TINY_MODEL = dict(embed_dim=32, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64)
TINY_MODEL.update(scan_layers=True)
# XLA:CPU options for the tiny run, whose timings mean nothing: its programs compile several times
# faster.
TINY_CPU_COMPILER_OPTIONS = {
  "xla_backend_optimization_level": 0,
  "xla_cpu_use_fusion_emitters": False,
  "exec_time_optimization_effort": -1.0,
}


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  kind: str  # "train" | "decode" | "er"
  preset: str
  batch: int = 1
  model: tuple = ()  # LMConfig overrides as (field, value) pairs


def _row(name, kind, preset, batch=1, **model):
  return Row(name, kind, preset, batch, tuple(sorted(model.items())))


LLAMA, GEMMA = "llama-3.2-1b", "gemma-3-1b"
CE = "LOGITS_CHUNK"  # placeholder for the run's `logits_chunk`
ROWS = (
  _row("train.llama.base", "train", LLAMA, 8, attention_impl="cudnn", remat="none"),
  _row("train.llama.ce", "train", LLAMA, 8, attention_impl="cudnn", remat="none", logits_chunk=CE),
  _row(
    "train.llama.ce_b16", "train", LLAMA, 16, attention_impl="cudnn", remat="none", logits_chunk=CE
  ),
  _row("decode.llama.b1", "decode", LLAMA, 1),
  _row("decode.llama.b44", "decode", LLAMA, 44),
  _row("er.llama", "er", LLAMA, 1),
  _row("train.gemma.opt", "train", GEMMA, 8, attention_impl="cudnn", remat="none", logits_chunk=CE),
  _row("decode.gemma.b1", "decode", GEMMA, 1),
  _row("decode.gemma.b44", "decode", GEMMA, 44),
  _row("train.gemma.base", "train", GEMMA, 8, attention_impl="xla", remat="full"),
  _row(
    "train.llama.ce_b16_dots",
    "train",
    LLAMA,
    16,
    attention_impl="cudnn",
    remat="dots_no_batch",
    logits_chunk=CE,
  ),
)
ROW_NAMES = tuple(r.name for r in ROWS)
DEFAULT_FLAG_ROWS = ("train.llama.ce_b16@lhs", "decode.llama.b1@while_graphs")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Shapes and repetitions of one run (`tiny_run()` for the CPU smoke run)."""

  seq_len: int = 2048
  steps: int = 5
  logits_chunk: int = 512
  prompt_len: int = 300  # a MedQA question with its options, in Llama-3 tokens
  new_tokens: int = 256
  num_samples: int = 11
  num_refinements: int = 33
  repeats: int = 3
  tiny: bool = False

  @classmethod
  def tiny_run(cls, **kw):
    base = dict(seq_len=32, steps=1, logits_chunk=12, prompt_len=20, new_tokens=8, repeats=1)
    return cls(**{**base, **kw, "tiny": True})


class _Section(dict):
  """A dict read by attribute, as `make_optimizer` reads a config section."""

  __getattr__ = dict.__getitem__


class _LMTraining:
  """What `create_train_state` / `make_train_step` need of a task: the LM task's loss
  (`objectives.lm_loss`, as `tasks.lm.LMTask` uses it) on a fixed-length batch."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len

  def dummy_batch(self, batch_size):
    z = np.zeros((batch_size, self.seq_len), np.int32)
    return {"tokens": z, "targets": z, "loss_mask": z.astype(np.float32), "input_mask": z}

  def init_params(self, model, rng, batch):
    return model.init(rng, batch["tokens"])["params"]

  def loss(self, model, params, batch, rng, step):
    loss, acc, _ = lm_loss(model, params, batch)
    return loss, {"token_accuracy": acc}


def _preset(row: Row, settings: Settings) -> str:
  return TINY_PRESETS[row.preset] if settings.tiny else row.preset


def row_config(row: Row, settings: Settings, dtypes: dict):
  """The LMConfig a row runs: its preset (tiny: the tiny counterpart) with the row's overrides;
  cuDNN attention falls back to XLA's off GPU."""
  preset = _preset(row, settings)
  over = dict(TINY_MODEL) if settings.tiny else {}
  over.update((k, settings.logits_chunk if v == CE else v) for k, v in row.model)
  if jax.default_backend() != "gpu" and over.get("attention_impl") == "cudnn":
    over["attention_impl"] = "xla"
  return lm_config(preset, **dtypes, **over)


def _random_tokens(rng, shape, vocab):
  return rng.integers(3, vocab, shape).astype(np.int32)


def _nan_row(**kw):
  out = dict(step_ms=math.nan, mfu=math.nan, mem_gib=math.nan, tok_s=math.nan)
  out.update(ms_per_token=math.nan, roofline=math.nan, ratio=math.nan, compile_s=math.nan)
  out.update(kw)
  return out


class Runner:
  """Runs rows, keeping the training state of the last preset for the next row of that preset."""

  def __init__(self, settings: Settings, profile_dir: str = "", profile_rows=()):
    self.s = settings
    self.profile_dir, self.profile_rows = profile_dir, tuple(profile_rows)
    self.device = jax.devices()[0]
    self.mesh = parallel.make_mesh({"data": 1, "fsdp": -1}, [self.device])
    self.rules = parallel.logical_rules("fsdp_tp")
    self._train = None  # (key, state, shardings, tx, schedule)
    self._decode = None  # (key, model, params)
    self._generate = {}  # compiled `generate` by shapes and static arguments
    tiny_cpu = settings.tiny and jax.default_backend() == "cpu"
    self.options = TINY_CPU_COMPILER_OPTIONS if tiny_cpu else None

  def _compile(self, jitted, *args, **kw):
    """(compiled, seconds to lower and compile)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kw).compile(self.options)
    return compiled, time.perf_counter() - t0

  def run(self, row: Row) -> dict:
    return {"train": self.train, "decode": self.decode, "er": self.er}[row.kind](row)

  # -- training ----------------------------------------------------------------------------------

  def _state(self, row, cfg, task):
    key = (row.preset, cfg.param_dtype)  # the rows of a preset differ in nothing the state holds
    if self._train is not None:
      old_key, state = self._train[0], self._train[1]
      if old_key == key and not any(x.is_deleted() for x in jax.tree.leaves(state)):
        return self._train[1:]
      jax.tree.map(lambda x: x.delete() if not x.is_deleted() else None, state)
      self._train = None
    self._decode, self._generate = None, {}
    holder = {}

    def make_tx(abstract_params):
      tx, holder["schedule"] = make_optimizer(_Section(OPTIM), abstract_params, TOTAL_STEPS)
      return tx

    state, shardings, tx = create_train_state(
      task,
      DecoderLM(cfg),
      make_tx,
      jax.random.PRNGKey(0),
      task.dummy_batch(1),
      self.mesh,
      self.rules,
    )
    self._train = (key, state, shardings, tx, holder["schedule"])
    return self._train[1:]

  def train(self, row: Row) -> dict:
    s = self.s
    cfg = row_config(row, s, TRAIN_DTYPES)
    batch_size = max(1, row.batch // 4) if s.tiny else row.batch
    task, model = _LMTraining(s.seq_len), DecoderLM(cfg)
    state, shardings, tx, schedule = self._state(row, cfg, task)
    rng = np.random.default_rng(0)
    tokens = _random_tokens(rng, (batch_size, s.seq_len + 1), cfg.vocab_size)
    ones = np.ones((batch_size, s.seq_len), np.int32)
    host = dict(tokens=tokens[:, :-1], targets=tokens[:, 1:], loss_mask=ones.astype(np.float32))
    host["input_mask"] = ones
    b_shard = jax.tree.map(lambda x: batch_sharding(self.mesh, np.ndim(x)), host)
    batch = jax.device_put(host, b_shard)
    step = make_train_step(task, model, tx, schedule)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      jitted = jax.jit(
        step,
        in_shardings=(shardings, b_shard),
        out_shardings=(shardings, NamedSharding(self.mesh, P())),
        donate_argnums=(0,),
      )
      compiled, compile_s = self._compile(jitted, state, batch)
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(s.steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / s.steps
    if row.name in self.profile_rows and self.profile_dir:
      state = self._profile(row, compiled, state, batch)
    self._train = (self._train[0], state, shardings, tx, schedule)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    peak = peak_flops(self.device)
    mfu = roofline.mfu(cfg, params, batch_size, s.seq_len, dt, peak) if peak else math.nan
    what = (
      f"{_preset(row, s)} {batch_size}x{s.seq_len} {cfg.dtype} compute, {cfg.param_dtype} params, "
      f"attention {cfg.attention_impl}, remat {cfg.remat}, logits_chunk {cfg.logits_chunk}"
    )
    return _nan_row(
      what=what,
      step_ms=dt * 1e3,
      mfu=mfu,
      mem_gib=compiled_cost(compiled).get("total_bytes", math.nan) / 2**30,
      tok_s=batch_size * s.seq_len / dt,
      compile_s=compile_s,
      loss=float(m["train/loss"]),
    )

  def _profile(self, row, compiled, state, batch):
    path = os.path.join(self.profile_dir, row.name)
    state = profile_summary.trace_steps(compiled, state, batch, path)
    profile_summary.report_top_ops(path)
    return state

  # -- decoding ----------------------------------------------------------------------------------

  def _decode_model(self, row: Row):
    cfg = row_config(row, self.s, DECODE_DTYPES)
    if self._decode is None or self._decode[0] != cfg:
      if self._train is not None:  # free the training state before the bf16 weights
        jax.tree.map(lambda x: x.delete() if not x.is_deleted() else None, self._train[1])
        self._train = None
      self._decode, self._generate = None, {}
      model = DecoderLM(cfg)
      init = jax.jit(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"])
      self._decode = (
        cfg,
        model,
        self._compile(init, jax.random.PRNGKey(0))[0](jax.random.PRNGKey(0)),
      )
    return self._decode

  def _prompts(self, cfg, rows: int):
    rng = np.random.default_rng(1)
    lists = [list(_random_tokens(rng, (self.s.prompt_len,), cfg.vocab_size)) for _ in range(rows)]
    tokens, lengths = pad_prompts(lists, pad_id=0)
    return lists, jnp.asarray(tokens), jnp.asarray(lengths)

  def _generate_fn(self, model, tokens, **static):
    """`generate` compiled for these shapes and static arguments -> (fn(params, tokens, lengths,
    rng) -> (tokens, counts), compile seconds: 0 where compiled before)."""
    key = (model.cfg, tokens.shape, tuple(sorted(static.items())))
    if key in self._generate:
      return self._generate[key], 0.0
    params = self._decode[2]
    lengths, rng = jnp.zeros(tokens.shape[:1], jnp.int32), jax.random.PRNGKey(0)
    fn, secs = self._compile(generate, model, params, tokens, lengths, rng, **static)
    self._generate[key] = fn
    return fn, secs

  def _median(self, fn) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(self.s.repeats):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    return statistics.median(times)

  def decode(self, row: Row) -> dict:
    s = self.s
    cfg, model, params = self._decode_model(row)
    _, tokens, lengths = self._prompts(cfg, row.batch)
    rng = jax.random.PRNGKey(0)

    def prefill(params, tokens):  # generate's first stage alone
      b, t = tokens.shape
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      logits, cache = model.apply(
        {"params": params}, tokens, positions=positions, cache=model.init_cache(b, t)
      )
      return logits[:, -1], cache

    gen, gen_s = self._generate_fn(model, tokens, max_new_tokens=s.new_tokens)
    pre, pre_s = self._compile(jax.jit(prefill), params, tokens)
    t_gen = self._median(lambda: jax.block_until_ready(gen(params, tokens, lengths, rng)))
    t_pre = self._median(lambda: jax.block_until_ready(pre(params, tokens)))
    decode_s = max(t_gen - t_pre, 1e-9)
    bw = hbm_bandwidth(self.device)
    ideal = roofline.decode_roofline_s(cfg, row.batch, s.prompt_len, s.new_tokens, bw) if bw else 0
    return _nan_row(
      what=f"{_preset(row, s)} bf16 batch {row.batch}, prompt {s.prompt_len} (padded "
      f"{tokens.shape[1]}), {s.new_tokens} new; prefill {t_pre * 1e3:.1f} ms",
      tok_s=row.batch * s.new_tokens / t_gen,
      ms_per_token=decode_s / s.new_tokens * 1e3,
      roofline=ideal / decode_s if bw else math.nan,
      compile_s=gen_s + pre_s,
      prefill_ms=t_pre * 1e3,
      generate_ms=t_gen * 1e3,
    )

  def er(self, row: Row) -> dict:
    s = self.s
    cfg, model, params = self._decode_model(row)
    lists, tokens, lengths = self._prompts(cfg, 1)
    rng = jax.random.PRNGKey(0)
    greedy_fn, c1 = self._generate_fn(model, tokens, max_new_tokens=s.new_tokens)
    sample = dict(max_new_tokens=s.new_tokens, temperature=0.7)
    stage1_fn, c2 = self._generate_fn(model, tokens, num_samples=s.num_samples, **sample)
    refine_len = s.prompt_len + s.num_samples * s.new_tokens
    width = pad_prompts([[1] * refine_len], 0)[0].shape[1]
    stage2_fn, c3 = self._generate_fn(
      model, jnp.zeros((1, width), jnp.int32), num_samples=s.num_refinements, **sample
    )

    def greedy():
      return np.asarray(greedy_fn(params, tokens, lengths, rng)[0])

    def refinement():
      stage1 = np.asarray(stage1_fn(params, tokens, lengths, rng)[0])  # to the host, as texts are
      refine = lists[0] + [int(t) for answer in stage1 for t in answer]
      t2, l2 = pad_prompts([refine], pad_id=0)
      return np.asarray(stage2_fn(params, jnp.asarray(t2), jnp.asarray(l2), rng)[0])

    t_greedy, t_er = self._median(greedy), self._median(refinement)
    return _nan_row(
      what=f"{_preset(row, s)} bf16 ER {s.num_samples}+{s.num_refinements} x {s.new_tokens} "
      f"tokens, prompt {s.prompt_len}, stage-2 prompt {refine_len} (padded {width}); greedy "
      f"{t_greedy * 1e3:.1f} ms, ER {t_er * 1e3:.1f} ms",
      ratio=t_er / t_greedy,
      compile_s=c1 + c2 + c3,
      greedy_ms=t_greedy * 1e3,
      er_ms=t_er * 1e3,
    )


COLUMNS = (  # (key, header, width, format)
  ("step_ms", "step ms", 9, ".1f"),
  ("mfu", "MFU", 7, ".1%"),
  ("mem_gib", "mem GiB", 8, ".1f"),
  ("tok_s", "tok/s", 10, ".0f"),
  ("ms_per_token", "ms/step", 8, ".3f"),
  ("roofline", "roofline", 9, ".1%"),
  ("ratio", "x greedy", 9, ".2f"),
  ("compile_s", "compile s", 10, ".1f"),
)
NAME_WIDTH = 32


def header() -> str:
  cols = "".join(f"{h:>{w}}" for _, h, w, _ in COLUMNS)
  return f"{'row':<{NAME_WIDTH}}{cols}  what"


def format_row(r: dict) -> str:
  cells = []
  for key, _, w, fmt in COLUMNS:
    v = r.get(key, math.nan)
    cells.append(f"{'-':>{w}}" if v is None or not math.isfinite(v) else f"{v:>{w}{fmt}}")
  tail = r.get("what", "") if "error" not in r else f"FAILED {r['error']}"
  return f"{r['row']:<{NAME_WIDTH}}{''.join(cells)}  {tail}"


def summary(results: list[dict]) -> list[str]:
  """The issue's three targets, read off the rows that ran."""
  by = {r["row"]: r for r in results if "error" not in r}
  get = lambda name, key: by.get(name, {}).get(key, math.nan)
  pct = lambda v: f"{v:.1%}" if math.isfinite(v) else "-"
  out = []
  llama = [(get(n, "mfu"), n) for n in by if n.startswith("train.llama")]
  llama = [(v, n) for v, n in llama if math.isfinite(v)]
  if llama:
    best, name = max(llama)
    base = pct(get("train.llama.base", "mfu"))
    out.append(f"llama training MFU: best {best:.1%} ({name}), baseline {base}; target >= 50%")
  decode = [n for n in ("decode.llama.b1", "decode.gemma.b1") if n in by]
  if decode:
    got = ", ".join(f"{n} {pct(get(n, 'roofline'))}" for n in decode)
    out.append(f"batch-1 greedy decoding, share of the bandwidth roofline: {got}; target >= 70%")
  if math.isfinite(get("er.llama", "ratio")):
    out.append(f"ER (11 + 33) / one greedy answer: {get('er.llama', 'ratio'):.2f}x; target <= 4x")
  return out


def set_xla_env(mem_fraction: str, xla_flags: str = "") -> None:
  """Before the backend starts (XLA reads these once; child processes inherit them): the share of
  device memory XLA's client takes where unset (JAX's default, 0.75, leaves 35 GB of an H200 idle),
  and `xla_flags` (a name of XLA_FLAG_SETS or raw flags) added to XLA_FLAGS."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", mem_fraction)
  if xla_flags:
    extra = XLA_FLAG_SETS.get(xla_flags, xla_flags)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + extra).strip()


def settings_flags(s: Settings) -> list[str]:
  """Command-line flags that reproduce `s` in a child process (benchmarks/gpu_lm.py's names)."""
  out = [f"--{f.name}={getattr(s, f.name)}" for f in dataclasses.fields(s) if f.name != "tiny"]
  return out + (["--tiny"] if s.tiny else [])


def _run_child(cmd, env, deadline_s: float, on_row) -> tuple[int, str]:
  """Runs a child, echoing its output and passing each ROW_JSON row to `on_row`; killed after
  `deadline_s`. -> (exit code, why it ended when it did not end by itself)."""
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
  killed = []
  timer = threading.Timer(max(deadline_s, 1.0), lambda: (killed.append(1), proc.kill()))
  timer.start()
  try:
    for line in proc.stdout:
      if line.startswith("ROW_JSON "):
        on_row(json.loads(line[len("ROW_JSON ") :]))
      else:
        print(line, end="", flush=True)
    code = proc.wait()
  finally:
    timer.cancel()
  return code, (f"killed at its {deadline_s:.0f} s deadline" if killed else f"exit code {code}")


def _orchestrate(settings, rows, flag_rows, budget_s, grace_s, argv0, extra, emit) -> None:
  """The rows in child processes: one for `rows` (another for the rest if one dies mid-row), one
  per flag row. Each child exits before the next starts, so each has the whole device to itself."""
  start = time.perf_counter()
  left = lambda: budget_s - (time.perf_counter() - start)
  common = ["--in_process", "--json_rows", "--flag_rows=", *settings_flags(settings)]
  pending = list(rows)
  while pending and left() > 0:
    done = []
    on_row = lambda r: (done.append(r["row"]), emit(r))
    cmd = list(argv0) + common + extra + [f"--rows={','.join(pending)}", f"--budget_s={left()}"]
    code, why = _run_child(cmd, dict(os.environ), left() + grace_s, on_row)
    pending = [n for n in pending if n not in done]
    if pending and not done:  # it did not get through one row: it would fail again
      for name in pending:
        emit({"row": name, "error": f"the child process ended without a row ({why})"})
      pending = []
    elif pending:  # it ended during pending[0]; a new child runs the rest
      emit({"row": pending.pop(0), "error": f"the child process ended in this row ({why})"})
  for name in pending:
    emit({"row": name, "error": f"skipped: the {budget_s:.0f} s budget is spent"})
  for label in flag_rows:
    name, flag_set = label.split("@")
    if left() <= 0:
      emit({"row": label, "error": f"skipped: the {budget_s:.0f} s budget is spent"})
      continue
    flags = XLA_FLAG_SETS[flag_set]
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    got = []

    def on_flag_row(r, label=label, flags=flags):
      got.append(r)
      emit({**r, "row": label, "what": f"{r.get('what', '')}; XLA_FLAGS+={flags}"})

    cmd = list(argv0) + common + [f"--rows={name}", f"--budget_s={left()}"]
    code, why = _run_child(cmd, env, left() + grace_s, on_flag_row)
    if not got:
      emit({"row": label, "error": f"the child process ended in this row ({why})"})


def run(
  settings: Settings,
  rows=ROW_NAMES,
  flag_rows=(),
  budget_s: float = 330.0,
  grace_s: float = 60.0,
  argv0=(),
  in_process: bool = False,
  profile_dir: str = "",
  profile_rows=("train.llama.base",),
  json_rows: bool = False,
  json_out: str = "",
) -> list[dict]:
  """Runs `rows` (names from ROW_NAMES), then `flag_rows` (NAME@SET), printing each row as it
  completes and then the whole table with the issue's targets; -> the rows' results.

  By default every row runs in a child process started with `argv0` (the script), so that no
  process holds device memory another needs, and a row that takes its process down loses only
  itself. `in_process`: the rows run here (flag rows are then not allowed: XLA_FLAGS is read once).
  A row not started within `budget_s` seconds is reported as skipped; a row that fails is reported
  with its error and the run goes on. `json_rows` prints ROW_JSON lines instead of the table (the
  child's side of the protocol)."""
  start = time.perf_counter()
  unknown = [n for n in rows if n not in ROW_NAMES]
  unknown += [
    n
    for n in flag_rows
    if n.count("@") != 1 or n.split("@")[0] not in ROW_NAMES or n.split("@")[1] not in XLA_FLAG_SETS
  ]
  if unknown:
    raise ValueError(
      f"rows: expected names from {ROW_NAMES}, flag rows as NAME@SET with SET from "
      f"{sorted(XLA_FLAG_SETS)}; got {unknown}"
    )
  if in_process and flag_rows:
    raise ValueError(f"flag_rows: run in child processes, so not with in_process; got {flag_rows}")
  results = []

  def emit(r):
    r["wall_s"] = time.perf_counter() - start  # since this process started
    results.append(r)
    if json_rows:
      print("ROW_JSON " + json.dumps(r), flush=True)
    else:
      print(format_row(r), flush=True)
    if json_out:
      with open(json_out, "a") as f:
        f.write(json.dumps(r) + "\n")

  if not json_rows:
    print(header(), flush=True)
  if in_process:
    _run_rows(settings, rows, budget_s, profile_dir, profile_rows, emit)
  else:
    extra = [f"--profile_dir={profile_dir}", f"--profile_rows={','.join(profile_rows)}"]
    _orchestrate(settings, rows, flag_rows, budget_s, grace_s, argv0, extra, emit)
  if not json_rows:
    print(f"\n{header()}\n" + "\n".join(format_row(r) for r in results), flush=True)
    for line in summary(results):
      print(line, flush=True)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
  return results


def _run_rows(settings, rows, budget_s, profile_dir, profile_rows, emit) -> None:
  start = time.perf_counter()
  dev = jax.devices()[0]
  print(
    f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; peak {peak_flops(dev) or 0:.3g} FLOP/s, "
    f"HBM {hbm_bandwidth(dev) or 0:.3g} B/s; {settings}",
    flush=True,
  )
  runner = Runner(settings, profile_dir, profile_rows)
  by_name = {r.name: r for r in ROWS}
  for name in rows:
    elapsed = time.perf_counter() - start
    if elapsed > budget_s:
      emit({"row": name, "error": f"skipped: the {budget_s:.0f} s budget is spent"})
      continue
    try:
      r = dict(row=name, **runner.run(by_name[name]))
    except Exception as e:  # one row out of memory must not lose the others' figures
      r = {"row": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    emit(r)
