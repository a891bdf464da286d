"""Every path medjax reads or writes, local or a cloud URI (gs://bucket/...), through etils epath.

Without TensorFlow, epath reaches gs:// through fsspec (gcsfs); orbax writes array data through
tensorstore. Each client takes its endpoint and credentials from its own documented settings
(gcsfs: STORAGE_EMULATOR_HOST; tensorstore: TENSORSTORE_GCS_HTTP_URL; application default
credentials), none of which medjax sets.
"""

import contextlib
import os
import shutil
import socket
import tempfile

from etils import epath


def is_remote(path) -> bool:
  """True for a URI with a scheme (gs://...), False for a local path."""
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """`path` as an epath.Path: a local one made absolute (as orbax needs), a URI as it is."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(path))


def _describe(e: BaseException) -> str:
  text = str(e).splitlines()[0][:300] if str(e) else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def check_writable(path, field: str = "workdir") -> epath.Path:
  """Creates `path` if needed and writes then deletes a small marker in it, so that a bad bucket,
  missing credentials or an unreachable endpoint fail here, naming `field` and the path, before any
  work is done; nothing else under `path` is touched. Returns the resolved path."""
  where = resolve(path)
  marker = where / f".write-probe-{socket.gethostname()}-{os.getpid()}"
  expected = "a directory that can be created"
  try:
    where.mkdir(parents=True, exist_ok=True)
    expected = "a writable directory"
    marker.write_text("medjax write probe\n")
    marker.unlink()
  except ImportError as e:  # e.g. gcsfs missing for gs://
    raise ValueError(
      f"{field}: expected a path this installation can write, got {os.fspath(path)!r} "
      f"({_describe(e)}; gs:// needs the gcsfs package)"
    ) from e
  except Exception as e:  # noqa: BLE001 - any failure to write means the path is unusable
    raise ValueError(
      f"{field}: expected {expected}, got {os.fspath(path)!r} ({_describe(e)})"
    ) from e
  return where


@contextlib.contextmanager
def local_dir(path, field: str):
  """Yields a local directory holding the files of directory `path`: `path` itself when local, or
  a temporary copy (removed on exit) of a cloud directory's files, for readers that need local files
  (safetensors, tokenizers, numpy memory maps)."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  tmp = tempfile.mkdtemp(prefix="medjax-")
  try:
    try:
      copied = copy_tree(path, tmp)
    except Exception as e:  # noqa: BLE001
      raise ValueError(
        f"{field}: expected a readable directory, got {os.fspath(path)!r} ({_describe(e)})"
      ) from e
    if not copied:
      raise ValueError(f"{field}: expected a directory with files, got {os.fspath(path)!r}")
    yield tmp
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def copy_tree(source, destination) -> int:
  """Copies every file under directory `source` to the same relative path under `destination`
  (either may be local or a cloud path); returns the number of files copied."""
  source, destination = resolve(source), resolve(destination)
  count = 0
  for src in _files(source):
    dst = destination / os.path.relpath(os.fspath(src), os.fspath(source))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as r, dst.open("wb") as w:
      shutil.copyfileobj(r, w, 64 << 20)
    count += 1
  return count


def _files(directory: epath.Path):
  """Every file under `directory` (epath's walk drops the gs:// of the folders it yields)."""
  if not directory.is_dir():
    return
  for p in directory.iterdir():
    if p.is_dir():
      yield from _files(p)
    else:
      yield p
