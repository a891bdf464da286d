"""The public datasets' TFDS builders (data/<name>/<name>.py, loaded by path: data/ is not a package).

`load_builder` prepares a builder from the raw files in `manual_dir` the first time (later calls read
the array_record files already in `data_dir`) and returns one split as a random-access data source.
`media_source` / `timeseries_source` give the medgemini / OpenTSLM tasks their splits. Preparation
writes into `data_dir`: on a multi-host job, prepare once (one host, or ahead of time) before training.
Both directories may be cloud paths (gs://...; see `prepare`).
"""

import contextlib
import functools
import os
import tempfile

from medjax import config_lib, paths

DATA = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data"
)
MEDIA = ("vqa_rad", "slake", "mimic_cxr", "volumes_3d")  # medjax.tasks.medgemini
TIMESERIES = (
  "tsqa",
  "m4_captions",
  "opentslm_har_cot",
  "sleep_cot",
  "ecg_qa_cot",
)  # medjax.tasks.opentslm
MCQ = ("medqa", "medmcqa", "pubmedqa", "mmlu_clinical")  # experiments/evaluate_mcq.py


@functools.lru_cache(maxsize=None)
def builder_class(name: str):
  """The builder class of data/<name>/<name>.py, imported once and not registered with TFDS (a test or
  script may have imported the same file under another module name)."""
  import tensorflow_datasets as tfds  # imported here: the tasks import this module for its names

  path = os.path.join(DATA, name, f"{name}.py")
  if not os.path.exists(path):
    raise ValueError(f"data.name: expected a builder in data/{name}/{name}.py, found none")
  with tfds.core.registered.skip_registration():
    module = config_lib.load_module(path, f"medjax_data_{name}")
  found = [
    v
    for v in vars(module).values()
    if isinstance(v, type)
    and issubclass(v, tfds.core.DatasetBuilder)
    and v.__module__ == module.__name__
  ]
  if len(found) != 1:
    raise ValueError(
      f"data/{name}/{name}.py: expected one dataset builder class, got {[c.__name__ for c in found]}"
    )
  return found[0]


def prepare(builder_cls, data_dir=None, manual_dir=None, config=None):
  """A `builder_cls` builder over `data_dir`, prepared as array_record from `manual_dir` if it was
  not already. Either directory may be a cloud path (gs://...): array_record files are written to
  local files only, so a cloud `data_dir` is prepared in a local temporary directory and uploaded
  (and read from the bucket afterwards); a cloud `manual_dir` is copied locally to prepare from."""
  import tensorflow_datasets as tfds

  builder = builder_cls(data_dir=data_dir or None, config=config or None)
  if builder.is_prepared():
    return builder
  manual = (
    paths.local_dir(manual_dir, "data.manual_dir") if manual_dir else contextlib.nullcontext()
  )
  with manual as local_manual:
    download = tfds.download.DownloadConfig(manual_dir=local_manual)
    if not (data_dir and paths.is_remote(data_dir)):
      builder.download_and_prepare(file_format="array_record", download_config=download)
      return builder
    with tempfile.TemporaryDirectory(prefix="medjax-tfds-") as local:
      builder_cls(data_dir=local, config=config or None).download_and_prepare(
        file_format="array_record", download_config=download
      )
      paths.copy_tree(local, data_dir)
  return builder_cls(data_dir=data_dir, config=config or None)


@functools.lru_cache(maxsize=None)
def _sources(name: str, data_dir, manual_dir, config) -> dict:
  return prepare(builder_class(name), data_dir, manual_dir, config).as_data_source()


def load_builder(name: str, split: str, *, data_dir=None, manual_dir=None, config=None):
  """Split `split` of builder `name` (config: a builder config name; None: its first).

  "validation" falls back to "test" where a release ships none (VQA-RAD: the test split is what
  papers report), so early stopping and evaluation still have a held-out split.
  """
  sources = _sources(name, data_dir or None, manual_dir or None, config or None)
  if split == "validation" and split not in sources and "test" in sources:
    split = "test"
  if split not in sources:
    raise ValueError(f"split: {name} has splits {sorted(sources)}, got {split!r}")
  return sources[split]


class Mapped:
  """A random-access source whose items are `fn(source[i])`, the first `limit` of them (None: all)."""

  def __init__(self, source, fn, limit=None):
    self.source, self.fn = source, fn
    self.size = len(source) if limit is None else min(len(source), limit)

  def __len__(self):
    return self.size

  def __getitem__(self, index):
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for {self.size} examples")
    return self.fn(self.source[int(index)])


def _config_shape(cfg):
  """(media name, array shape) that a media_io Image/VolumeConfig writes."""
  if hasattr(cfg, "frames"):
    return "volume", (cfg.frames, cfg.image_size, cfg.image_size, 1)
  return "image", (cfg.image_size, cfg.image_size, cfg.channels)


def media_config(name: str, shapes: dict) -> str:
  """The one config of media builder `name` that writes the model's input shape (grey fits RGB too)."""
  configs = builder_class(name).BUILDER_CONFIGS
  matches = []
  for c in configs:
    media, got = _config_shape(c)
    want = shapes.get(media)
    if want is not None and (
      got == tuple(want) or got[:-1] == tuple(want[:-1]) and (got[-1], want[-1]) == (1, 3)
    ):
      matches.append(c.name)
  if len(matches) != 1:
    found = "several configs" if matches else "no config"
    raise ValueError(
      f"data.builder_config: {name} has {found} for the model's inputs {shapes}: "
      f"{matches or [c.name for c in configs]}; name one"
    )
  return matches[0]


def media_source(data, split: str, shapes: dict, size=None, reports: bool = False):
  """medgemini examples (media_io.task_example) of split `split` of builder `data.name`.

  `shapes`: the model's input shape per media name; data.builder_config "" picks the config that
  writes them. `reports`: every record must be an image-report pair (SigLIP pretraining).
  """
  from medjax.data import media_io

  config = data.builder_config or media_config(data.name, shapes)

  def example(record):
    ex = media_io.task_example(record, shapes)
    if reports and "report" not in ex:
      raise ValueError(
        f"data.name: {data.name} ({config}) holds questions; image-report pretraining needs "
        "reports (mimic_cxr, volumes_3d m3d_cap / ct_rate)"
      )
    return ex

  src = load_builder(
    data.name, split, data_dir=data.data_dir, manual_dir=data.manual_dir, config=config
  )
  return Mapped(src, example, size)


def timeseries_source(data, split: str):
  """Records (the timeseries_io schema) of split `split` of builder `data.name`."""
  return load_builder(
    data.name,
    split,
    data_dir=data.data_dir,
    manual_dir=data.manual_dir,
    config=data.builder_config or None,
  )
