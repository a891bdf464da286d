"""Every family's batches come from the one pipeline: the global batch is the same for 1 and 2 hosts
(host i of n takes the i-th slice of each global batch), eval gives every host the same number of
batches, and a restored iterator continues where the saved one stopped."""

import itertools
import os

import numpy as np
import pytest

from medjax import config_lib
from medjax.data import latent_cache
from medjax.tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, STEPS = 4, 3


def _config(name, variant, **overrides):
  config = config_lib.load_module(f"configs/{name}.py").get_config(variant)
  config.update_from_flattened_dict(overrides)
  return config


def _cache(root):
  """A tiny latent cache (8 train, 5 validation records) in Bora's tiny shapes: x [8, 16, 16, 1],
  y [8, 32]."""
  for split, n in (("train", 8), ("validation", 5)):
    rng = np.random.default_rng(len(split))
    records = [
      {"video": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32), "text": f"clip {i}"}
      for i in range(n)
    ]
    latent_cache.write_split(
      os.path.join(root, split),
      records,
      encode_videos=lambda v: v,
      encode_captions=lambda texts: (
        np.stack([np.full((8, 32), float(len(t) + i)) for i, t in enumerate(texts)]),
        np.ones((len(texts), 8), np.int32),
      ),
      batch_size=3,
    )
  return root


FAMILIES = {
  "lm": lambda tmp, data_dir: _config("llm", "tiny", **{"data.data_dir": data_dir}),
  "medgemini_vqa": lambda tmp, _: _config("medgemini", "tiny", **{"data.eval_size": 10}),
  "medgemini_report": lambda tmp, _: _config("medgemini", "tiny_report", **{"data.eval_size": 10}),
  "medgemini_3d": lambda tmp, _: _config("medgemini", "tiny3d", **{"data.eval_size": 10}),
  "siglip": lambda tmp, _: _config("medgemini", "tiny_siglip", **{"data.eval_size": 10}),
  "opentslm": lambda tmp, _: _config(
    "opentslm_flamingo", "tiny", **{"data.train_size": 40, "data.eval_size": 10}
  ),
  "anatomy_vlm": lambda tmp, _: _config(
    "anatomy_vlm", "tiny", **{"data.train_size": 40, "data.eval_size": 10}
  ),
  "bora_cells": lambda tmp, _: _config("bora", "tiny", **{"train.eval_batch_size": 3}),
  "bora_latent_cache": lambda tmp, _: _config(
    "bora",
    "tiny",
    **{"data.cache_dir": _cache(str(tmp)), "model.text_vocab_size": 0, "data.tokenizer": ""},
  ),
}


def _global(per_host):
  """Per-host lists of batches -> global batches (hosts concatenated along the batch axis)."""
  assert len({len(b) for b in per_host}) == 1  # every host runs the same number of steps
  return [
    {k: np.concatenate([b[step][k] for b in per_host]) for k in per_host[0][step]}
    for step in range(len(per_host[0]))
  ]


def _assert_equal(got, want):
  assert len(got) == len(want) > 0
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for k in w:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_global_batches_do_not_depend_on_host_count_and_resume(family, tmp_path, request):
  data_dir = request.getfixturevalue("triage_data_dir") if family == "lm" else None
  task = get_task(FAMILIES[family](tmp_path, data_dir))

  def train(n, steps=STEPS):
    return [
      list(
        itertools.islice(
          task.train_data(batch_size=B // n, seed=7, shard_index=i, shard_count=n), steps
        )
      )
      for i in range(n)
    ]

  one, two = _global(train(1)), _global(train(2))
  _assert_equal(two, one)
  assert one[0][next(iter(one[0]))].shape[0] == B
  # Consecutive global batches differ (the stream moves on), and host 1 of 2 holds rows B/2..B.
  assert any(not np.array_equal(one[0][k], one[1][k]) for k in one[0])
  _assert_equal([{k: v[B // 2 :] for k, v in one[0].items()}], train(2)[1][:1])

  # Eval: one finite pass in order, the same number of batches on every host.
  def evaluate(n):
    return [
      list(itertools.islice(task.eval_data(batch_size=B // n, shard_index=i, shard_count=n), 3))
      for i in range(n)
    ]

  _assert_equal(_global(evaluate(2)), _global(evaluate(1)))

  # Resume: the state after 2 batches, set on a fresh iterator, gives the same next batches.
  it = iter(task.train_data(batch_size=B // 2, seed=7, shard_index=1, shard_count=2))
  for _ in range(2):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(2)]
  fresh = iter(task.train_data(batch_size=B // 2, seed=7, shard_index=1, shard_count=2))
  fresh.set_state(state)
  _assert_equal([next(fresh) for _ in range(2)], want)


def test_eval_is_one_pass_with_equal_batch_counts_per_host(tmp_path):
  """10 validation records, global batch 4: 2 batches on 1 host and 2 on each of 2 hosts (the
  last partial global batch is dropped), in the source's order."""
  task = get_task(FAMILIES["opentslm"](tmp_path, None))
  counts = {
    n: [
      len(list(task.eval_data(batch_size=B // n, shard_index=i, shard_count=n))) for i in range(n)
    ]
    for n in (1, 2)
  }
  assert counts == {1: [2], 2: [2, 2]}
  first = next(iter(task.eval_data(batch_size=B, shard_index=0, shard_count=1)))
  want = np.stack([task.encode(task.source("validation")[i])["tokens"] for i in range(B)])
  np.testing.assert_array_equal(first["tokens"], want)
