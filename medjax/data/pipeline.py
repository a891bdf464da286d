"""The one input pipeline: a task's random-access source and `encode` -> per-host batches.

source -> shuffle (every epoch differently, from `seed`) -> repeat -> encode -> global batches ->
this host's share -> threads + prefetch -> a grain IterDataset.
The record order is the same on every host and host i of n takes the i-th per-host slice of each
global batch, so the global batch at every step does not depend on the number of hosts, and every
host yields the same number of batches. All stages before the iterator are lazy and random-access:
a host only encodes its own records. The iterator supports `get_state()` / `set_state()`, so
training can checkpoint and resume it.
"""

import functools
from collections.abc import Callable, Sequence

import grain
import numpy as np

from medjax.data.synthetic import triage


class IndexSource:
  """A lazy random-access sequence of `size` records: record i is `fn(i)`."""

  def __init__(self, size: int, fn: Callable[[int], object]):
    self._size, self._fn = int(size), fn

  def __len__(self):
    return self._size

  def __getitem__(self, i):
    if not 0 <= int(i) < self._size:
      raise IndexError(f"index {i} out of range for {self._size} records")
    return self._fn(int(i))


def _to_str(value):
  if isinstance(value, dict):
    return record_to_example(value)
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  if isinstance(value, (list, tuple)):
    return [_to_str(v) for v in value]
  return value.item() if isinstance(value, np.generic) else value


def record_to_example(record: dict) -> dict:
  """A TFDS record (bytes, arrays of bytes) as python values (str, list[str])."""
  return {k: _to_str(v) for k, v in record.items()}


def triage_format(record: dict, cot: bool = True) -> tuple[str, str]:
  """(prompt, target) of a synthetic triage record, with or without chain of thought."""
  ex = record_to_example(record)
  return triage.format_prompt(ex, cot), triage.format_target(ex, cot)


def encode_lm_example(prompt: str, target: str, tokenizer, seq_len: int) -> dict:
  """Next-token arrays of length `seq_len` for bos + prompt + target + eos, padded.

  tokens: inputs (the sequence minus its last token); targets: the next tokens; loss_mask: 1.0
  where the target is a target-text token or the final eos; input_mask: 1 on real inputs.
  """
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  prompt_ids = bos + tokenizer.encode(prompt)
  target_ids = tokenizer.encode(target) + [tokenizer.eos_id]
  ids = prompt_ids + target_ids
  n = len(ids) - 1
  if n > seq_len:
    raise ValueError(
      f"Example needs seq_len >= {n} tokens but seq_len={seq_len} "
      f"(prompt {len(prompt_ids)}, target {len(target_ids)} tokens)"
    )
  tokens = np.full(seq_len, tokenizer.pad_id, np.int32)
  targets = np.full(seq_len, tokenizer.pad_id, np.int32)
  tokens[:n] = ids[:-1]
  targets[:n] = ids[1:]
  loss_mask = np.zeros(seq_len, np.float32)
  loss_mask[max(len(prompt_ids) - 1, 0) : n] = 1.0
  input_mask = np.zeros(seq_len, np.int32)
  input_mask[:n] = 1
  return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "input_mask": input_mask}


def _encode_lm_record(record, *, format_fn, tokenizer, seq_len: int) -> dict:
  prompt, target = format_fn(record_to_example(record))
  return encode_lm_example(prompt, target, tokenizer, seq_len)


def lm_encoder(
  format_fn: Callable[[dict], tuple[str, str]], tokenizer, seq_len: int
) -> Callable[[dict], dict]:
  """The `encode` of an LM task: record -> (prompt, target) by `format_fn` -> `encode_lm_example`."""
  _check_positive("seq_len", seq_len)
  return functools.partial(
    _encode_lm_record, format_fn=format_fn, tokenizer=tokenizer, seq_len=seq_len
  )


def _check_positive(name: str, value) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def host_batches(
  ds: grain.MapDataset, batch_size: int, shard_index: int, shard_count: int
) -> grain.MapDataset:
  """This host's batches of a globally ordered `ds`: the `shard_index`-th `batch_size` rows of
  each global batch of `batch_size * shard_count` rows (lazy: other hosts' rows are never read).

  Only whole global batches are kept, so every host yields the same number of batches.
  """
  ds = ds.batch(batch_size, drop_remainder=True)
  if shard_count > 1:
    ds = ds[: len(ds) - len(ds) % shard_count][shard_index::shard_count]
  return ds


def dataset(
  source: Sequence,
  encode: Callable[[object], dict],
  *,
  batch_size: int,
  seed: int = 0,
  shuffle: bool = True,
  num_epochs: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
  num_threads: int = 4,
  prefetch_batches: int = 16,
) -> grain.IterDataset:
  """This host's batches (dicts of arrays [batch_size, ...]) of `encode`d records of `source`.

  Global batch k is rows [k * B, (k + 1) * B) of the (shuffled) record stream (B = batch_size *
  shard_count) and this host's batch is its rows [shard_index * batch_size, (shard_index + 1) *
  batch_size), whatever shard_count is; a last partial global batch is dropped. `num_epochs=None`
  repeats forever; every epoch is shuffled differently (deterministically from `seed`). Batches
  are built by `num_threads` threads, up to `prefetch_batches` ahead.
  """
  _check_positive("batch_size", batch_size)
  _check_positive("shard_count", shard_count)
  _check_positive("num_threads", num_threads)
  _check_positive("prefetch_batches", prefetch_batches)
  if num_epochs is not None:
    _check_positive("num_epochs", num_epochs)
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
  ds = grain.MapDataset.source(source)
  if num_epochs is not None and len(ds) * num_epochs < batch_size * shard_count:
    raise ValueError(
      f"batch_size: {batch_size} x {shard_count} host(s) exceeds the {len(ds)} records x "
      f"{num_epochs} epoch(s); no batch would be produced"
    )
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = host_batches(ds.repeat(num_epochs).map(encode), batch_size, shard_index, shard_count)
  if len(ds) == 0:
    raise ValueError(f"Shard {shard_index} of {shard_count} is empty ({len(source)} records)")
  return ds.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
  )
