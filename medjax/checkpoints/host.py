"""A checkpoint tensor known by shape before it is read: loaders check a whole checkpoint against
the model from metadata, then read each tensor only when it is placed, so the host holds one tensor
at a time instead of a second copy of the model."""

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class LazyTensor:
  shape: tuple
  read: Callable[[], np.ndarray]  # -> the array in the model's layout

  def __array__(self, dtype=None, copy=None):
    out = self.read()
    return out if dtype is None else out.astype(dtype, copy=False)


def materialize(value) -> np.ndarray:
  """A host array from an array or a LazyTensor."""
  return value.read() if isinstance(value, LazyTensor) else np.asarray(value)
