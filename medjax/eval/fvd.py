"""Fréchet distance between Gaussians fitted to features, and FVD with a pluggable feature extractor.

FVD (Unterthiner et al. 2018) is this distance over features of an I3D network; here any callable
`videos -> [N, D]` serves (by default the faithfulness classifier's penultimate layer).
"""

from typing import Callable

import numpy as np


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """[N, D] -> (mean [D], covariance [D, D]) in float64 (unbiased covariance, N >= 2)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features: expected [N, D] with N >= 2, got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((m + m.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), with tr (C1 C2)^1/2 = tr (C1^1/2 C2 C1^1/2)^1/2 (PSD)."""
  mu1, mu2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mu1, mu2, cov1, cov2))
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
    raise ValueError(
      f"stats: expected means [D] and covariances [D, D] of equal D, got {mu1.shape}, "
      f"{cov1.shape}, {mu2.shape}, {cov2.shape}"
    )
  s1 = _psd_sqrt(cov1)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def fvd(videos_a, videos_b, feature_fn: Callable) -> float:
  """Fréchet distance between `feature_fn(videos_a)` and `feature_fn(videos_b)` ([N, D] each)."""
  return frechet_distance(
    *gaussian_stats(feature_fn(videos_a)), *gaussian_stats(feature_fn(videos_b))
  )
