"""FLOP and byte accounting of decoder LMs: training MFU and the decode bandwidth roofline.

A decode step reads every weight once (the output projection included, the input embedding only for
its B rows, left out) and each row's keys and values for the positions it attends to (sliding-window
layers: at most the window). Its lower bound on time is those bytes over the HBM bandwidth.
"""

from medjax.models.llm import LMConfig, train_flops


def decode_param_count(cfg: LMConfig) -> int:
  """Weights one decode step reads: `cfg.num_params()` (norm scales left out) less an untied input
  embedding table."""
  return cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.embed_dim)


def kv_positions(cfg: LMConfig, length: int) -> int:
  """Key positions one query at `length` keys attends to, summed over layers."""
  local = int(cfg.layer_is_local().sum())
  window = min(cfg.sliding_window or length, length)
  return (cfg.num_layers - local) * length + local * window


def decode_step_bytes(
  cfg: LMConfig, batch: int, length: int, weight_bytes: int = 2, kv_bytes: int = 2
) -> int:
  """HBM bytes of one decode step of `batch` rows attending to `length` keys each."""
  kv = batch * kv_positions(cfg, length) * 2 * cfg.num_kv_heads * cfg.head_dim * kv_bytes
  return decode_param_count(cfg) * weight_bytes + kv


def decode_roofline_s(
  cfg: LMConfig,
  batch: int,
  prompt_len: int,
  new_tokens: int,
  bandwidth: float,
  weight_bytes: int = 2,
  kv_bytes: int = 2,
) -> float:
  """Least time of `new_tokens` decode steps after a `prompt_len` prompt: step i (from 0) writes
  position prompt_len + i and attends to prompt_len + i + 1 keys."""
  total = sum(
    decode_step_bytes(cfg, batch, prompt_len + i + 1, weight_bytes, kv_bytes)
    for i in range(new_tokens)
  )
  return total / bandwidth


def mfu(cfg: LMConfig, num_params: int, batch: int, seq_len: int, step_s: float, peak: float):
  """Model FLOP utilisation of a training step: `train_flops` / step_s / peak FLOP/s."""
  return train_flops(cfg, num_params, batch, seq_len) / step_s / peak
