"""Shared by the OpenTSLM TFDS builders in data/ (TSQA, M4 captions, HAR-CoT, Sleep-CoT, ECG-QA-CoT).

Every builder emits the same record schema (`features()`), plus a few dataset-specific keys:
  id              text
  series          float32 [S, T]  each series as released, zero-padded to the example's longest
  series_mask     bool [S, T]     True on real samples
  series_length   int32 [S]
  series_mean     float32 [S]     z-normalisation statistics of each series (population std,
  series_std      float32 [S]     floored at 1e-6); `normalized()` applies them
  series_text     [S] texts       one description per series, with its mean and std written in
  pre_prompt, post_prompt         texts around the series
  prompt          pre_prompt + "<ts> {series_text}\\n" per series + post_prompt (the placeholder
                  first, its description to the end of the line: medjax.tasks.opentslm lays
                  each line out per model variant)
  rationale       chain-of-thought text ("" when the dataset has none)
  label           the answer that evaluation compares ("" for captions)
  answer          the training target: rationale ending in "Answer: {label}", or the caption
  template_id     int32 (ECG-QA question template; -1 elsewhere)
`format_example()` turns a record read back from a data source into (prompt, normalised series,
target) for the host encoding of medjax.tasks.opentslm. Splits that a release does not ship are drawn
here as the original OpenTSLM loaders draw them (`original_splits`: same rows, same order).
"""

import csv
import math
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

TS = "<ts>"  # placeholder of one series in the prompt (as medjax.data.synthetic.har.TS)
MIN_STD = 1e-6
csv.field_size_limit(1 << 30)  # one CSV cell can hold a long series


def parse_series(text: str, where: str) -> np.ndarray:
  """'[1.0, 2.0, ...]' -> float32 [N]; a malformed or non-finite series raises ValueError naming `where`."""
  body = text.strip()
  if not (body.startswith("[") and body.endswith("]")):
    raise ValueError(f"{where}: expected a list of numbers, got {text[:40]!r}")
  try:
    values = [float(v) for v in body[1:-1].split(",") if v.strip()]
  except ValueError as e:
    raise ValueError(f"{where}: expected a list of numbers, got {text[:40]!r}") from e
  if not values:
    raise ValueError(f"{where}: expected a non-empty list of numbers, got {text[:40]!r}")
  if not all(math.isfinite(v) for v in values):
    raise ValueError(f"{where}: expected finite values, got NaN/inf")
  return np.asarray(values, np.float32)


def parse_series_list(text: str, where: str) -> list[np.ndarray]:
  """'[[...], [...]]' -> one float32 array per inner list."""
  body = text.strip()
  inner = (
    re.findall(r"\[[^\[\]]*\]", body[1:-1]) if body.startswith("[") and body.endswith("]") else []
  )
  if not inner or re.sub(r"\[[^\[\]]*\]", "", body[1:-1]).strip(" ,\n"):
    raise ValueError(f"{where}: expected a list of lists of numbers, got {text[:40]!r}")
  return [parse_series(s, f"{where}[{i}]") for i, s in enumerate(inner)]


def stats(series: np.ndarray) -> tuple[float, float]:
  """(mean, std) of one series; std is the population std, at least MIN_STD."""
  return float(np.mean(series)), max(float(np.std(series)), MIN_STD)


def normalized(record: dict) -> list[np.ndarray]:
  """The z-normalised series of a record (unpadded), with the statistics its prompt states."""
  return [
    ((s[:n] - m) / sd).astype(np.float32)
    for s, n, m, sd in zip(
      record["series"], record["series_length"], record["series_mean"], record["series_std"]
    )
  ]


def format_example(record: dict) -> tuple[str, list[np.ndarray], str]:
  """(prompt, normalised series, " " + answer) of a record read back from a data source: the contract of
  medjax.data.synthetic.har.format_example, ready for the host encoding of medjax.tasks.opentslm."""
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  return text(record["prompt"]), normalized(record), " " + text(record["answer"])


def target(rationale: str, label: str) -> str:
  """The training target: the rationale, ending in "Answer: {label}" (added when missing)."""
  if "Answer:" in rationale or not label:
    return rationale
  return f"{rationale} Answer: {label}".strip()


def make_example(
  key: str,
  series,
  names,
  *,
  pre_prompt: str,
  post_prompt: str,
  rationale: str = "",
  label: str = "",
  answer: str | None = None,
  template_id: int = -1,
  **extra,
) -> dict:
  """A record in the common schema; `names[i]` names series i in its description."""
  if len(series) != len(names) or not series:
    raise ValueError(
      f"{key}: series: expected one name per series (>= 1), got {len(series)} series and "
      f"{len(names)} names"
    )
  length = np.array([len(s) for s in series], np.int32)
  padded = np.zeros((len(series), length.max()), np.float32)
  mask = np.zeros(padded.shape, bool)
  for i, s in enumerate(series):
    padded[i, : len(s)], mask[i, : len(s)] = s, True
  means, stds = np.array([stats(s) for s in series], np.float32).T
  texts = [f"{name}, mean {m:.4f}, std {sd:.4f}" for name, m, sd in zip(names, means, stds)]
  prompt = pre_prompt + "".join(f"{TS} {t}\n" for t in texts) + post_prompt
  return {
    "id": key,
    "series": padded,
    "series_mask": mask,
    "series_length": length,
    "series_mean": means,
    "series_std": stds,
    "series_text": texts,
    "pre_prompt": pre_prompt,
    "post_prompt": post_prompt,
    "prompt": prompt,
    "rationale": rationale,
    "label": label,
    "answer": target(rationale, label) if answer is None else answer,
    "template_id": template_id,
    **extra,
  }


def features(**extra) -> tfds.features.FeaturesDict:
  """The common schema, plus `extra` dataset-specific features."""
  text, tensor = tfds.features.Text, tfds.features.Tensor
  return tfds.features.FeaturesDict(
    {
      "id": text(),
      "series": tensor(shape=(None, None), dtype=np.float32, encoding="zlib"),
      "series_mask": tensor(shape=(None, None), dtype=np.bool_, encoding="zlib"),
      "series_length": tensor(shape=(None,), dtype=np.int32),
      "series_mean": tensor(shape=(None,), dtype=np.float32),
      "series_std": tensor(shape=(None,), dtype=np.float32),
      "series_text": tfds.features.Sequence(text()),
      "pre_prompt": text(),
      "post_prompt": text(),
      "prompt": text(),
      "rationale": text(),
      "label": text(),
      "answer": text(),
      "template_id": tfds.features.Scalar(np.int32),
      **extra,
    }
  )


def find_file(manual_dir, name: str, subdirs=()) -> epath.Path | None:
  """`name` directly in manual_dir or in one of its `subdirs`, else None."""
  for base in ("", *subdirs):
    path = epath.Path(manual_dir) / base / name
    if path.exists():
      return path
  return None


def require_file(manual_dir, name: str, subdirs=()) -> epath.Path:
  """`find_file`, raising a ValueError that names manual_dir when the file is missing."""
  path = find_file(manual_dir, name, subdirs)
  if path is None:
    raise ValueError(f"manual_dir: no {name} under {manual_dir}")
  return path


def read_csv(path, required) -> list[tuple[str, dict]]:
  """[(where, row)] of a CSV file with a header; repeated header rows are skipped.

  `where` is "file:line" for error messages; missing `required` columns raise ValueError.
  """
  path = epath.Path(path)
  with path.open() as f:
    reader = csv.DictReader(f)
    missing = sorted(set(required) - set(reader.fieldnames or ()))
    if missing:
      raise ValueError(f"{path.name}: missing columns {missing}; got {reader.fieldnames}")
    rows = []
    for row in reader:
      if all(row[k] == k for k in required):  # a header repeated inside the file
        continue
      rows.append((f"{path.name}:{reader.line_num}", row))
  return rows


def field(row: dict, name: str, where: str) -> str:
  """A required non-empty text cell, stripped."""
  value = (row.get(name) or "").strip()
  if not value:
    raise ValueError(f"{where}: {name}: expected a non-empty value, got {row.get(name)!r}")
  return value


TEST_FRAC = VAL_FRAC = 0.1  # the original's fractions: test first, then validation from the rest


def hf_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) positions of Hugging Face `datasets.Dataset.train_test_split(test_size, seed=seed)`
  on `n` rows: ceil(test_size * n) test rows, the first of a PCG64 permutation, in that order."""
  n_test = math.ceil(test_size * n)
  perm = np.random.default_rng(seed).permutation(n)
  return perm[n_test:], perm[:n_test]


def _approximate_mode(counts: np.ndarray, draws: int, rng) -> np.ndarray:
  """scikit-learn's per-class sample counts: floors of the proportional share, the rest given to the
  largest remainders (ties broken with `rng`)."""
  continuous = counts / counts.sum() * draws
  floored = np.floor(continuous)
  need = int(draws - floored.sum())
  if need > 0:
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
      (inds,) = np.where(remainder == value)
      add = min(len(inds), need)
      floored[rng.choice(inds, size=add, replace=False)] += 1
      need -= add
      if need == 0:
        break
  return floored.astype(int)


def sklearn_stratified_split(labels, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) positions of scikit-learn's `train_test_split(rows, test_size=test_size,
  random_state=seed, stratify=labels)`, in its order."""
  labels = np.asarray([str(v) for v in labels])
  n = len(labels)
  n_test = math.ceil(test_size * n)
  n_train = n - n_test
  classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
  if counts.min() < 2 or min(n_train, n_test) < len(classes):
    raise ValueError(
      f"labels: a stratified split of {n} rows needs >= 2 rows per class and >= {len(classes)} "
      f"(classes) rows in each part, got class counts {dict(zip(classes.tolist(), counts.tolist()))}"
    )
  by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
  rng = np.random.RandomState(seed)
  n_i = _approximate_mode(counts, n_train, rng)
  t_i = _approximate_mode(counts - n_i, n_test, rng)
  train, test = [], []
  for i in range(len(classes)):
    members = by_class[i].take(rng.permutation(counts[i]), mode="clip")
    train.extend(members[: n_i[i]])
    test.extend(members[n_i[i] : n_i[i] + t_i[i]])
  return rng.permutation(train), rng.permutation(test)


def original_splits(rows: list, kind: str, strata_field: str | None = None) -> dict[str, list]:
  """{train, validation, test} of builder rows [(key, example)], the same rows (and order) as the
  original OpenTSLM loaders draw from the release read in file order: 10% test, then 10% of all
  rows (0.1 / 0.9 of the rest) as validation.

  kind "hf": `datasets` train_test_split with seeds (42, 42) (TSQA); "hf_m4": seeds (42, 43)
  (M4 captions); "sklearn": scikit-learn's, stratified by `example[strata_field]`, random_state
  (42, 43) (Sleep-CoT).
  """
  seeds = {"hf": (42, 42), "hf_m4": (42, 43), "sklearn": (42, 43)}
  if kind not in seeds:
    raise ValueError(f"kind: expected one of {sorted(seeds)}, got {kind!r}")
  first, second = seeds[kind]
  val_frac = VAL_FRAC / (1.0 - TEST_FRAC)
  idx = np.arange(len(rows))
  if kind == "sklearn":
    strata = np.asarray([str(ex[strata_field]) for _, ex in rows])
    rest, test = sklearn_stratified_split(strata, TEST_FRAC, first)
    train, val = sklearn_stratified_split(strata[rest], val_frac, second)
  else:
    rest, test = hf_split(len(rows), TEST_FRAC, first)
    train, val = hf_split(len(rest), val_frac, second)
  rest = idx[rest]
  return {
    "train": [rows[i] for i in rest[train]],
    "validation": [rows[i] for i in rest[val]],
    "test": [rows[i] for i in idx[test]],
  }
