"""Caption faithfulness of generated cell videos: a small classifier trained on real synthetic videos.

Inputs are two translation-invariant views of a video [N, T, H, W, 1] in [-1, 1]: the circular
cross-correlation of consecutive frames (its peak sits at the per-frame displacement: direction and
speed) and each frame's brightest pixels, sorted (how much cell there is: count). An MLP reads both
and predicts the captioned direction and count; its penultimate layer is the default FVD feature.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.data.synthetic import cells

TARGETS = {"direction": len(cells.DIRECTIONS), "count": 4}


def motion_features(videos) -> np.ndarray:
  """[N, T, H, W, 1] -> [N, H*W]: cross-correlation of consecutive frames summed over time, normalised
  per video."""
  v = (np.asarray(videos, np.float32)[..., 0] + 1.0) / 2.0
  v = v - v.mean(axis=(2, 3), keepdims=True)
  f = np.fft.rfft2(v)
  xc = np.fft.irfft2(np.conj(f[:, :-1]) * f[:, 1:], s=v.shape[2:]).sum(axis=1)
  xc = xc.reshape(len(v), -1)
  return (xc - xc.mean(1, keepdims=True)) / (xc.std(1, keepdims=True) + 1e-6)


def video_features(videos, top: int = 64) -> np.ndarray:
  """[N, T, H, W, 1] -> [N, H*W + top]: motion features and the `top` brightest pixels per frame (sorted,
  averaged over frames)."""
  v = np.asarray(videos, np.float32)
  if v.ndim != 5 or v.shape[-1] != 1 or v.shape[1] < 2:
    raise ValueError(f"videos: expected [N, T >= 2, H, W, 1], got shape {v.shape}")
  pix = -np.sort(-((v[..., 0] + 1.0) / 2.0).reshape(v.shape[0], v.shape[1], -1), axis=-1)[
    ..., :top
  ].mean(1)
  return np.concatenate([motion_features(v), pix], axis=1)


class _Net(nn.Module):
  width: int = 64

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(nn.Dense(self.width, name="fc1")(x))
    h = nn.gelu(nn.Dense(self.width, name="fc2")(h))
    return h, {k: nn.Dense(n, name=k)(h) for k, n in TARGETS.items()}


class FaithfulnessClassifier:
  """Direction and count of cell videos, fitted on `num_train` real videos from `cells.CellsSource`
  (`data_kw`: its frames, size, speeds, max_count); `heldout_accuracy` on 512 more."""

  def __init__(
    self, data_kw: dict, num_train: int = 1024, steps: int = 300, width: int = 64, seed: int = 1234
  ):
    src = cells.CellsSource(num_train + 512, seed, **data_kw)
    exs = [src[i] for i in range(len(src))]
    feats = video_features(np.stack([e["video"] for e in exs]))
    labels = {
      "direction": np.array([e["direction"] for e in exs]),
      "count": np.array([e["count"] - 1 for e in exs]),
    }
    # The std floor keeps near-constant features (e.g. brightness with one cell) from blowing up.
    self._mean, self._std = feats[:num_train].mean(0), feats[:num_train].std(0) + 0.05
    self._net = _Net(width)
    x = jnp.asarray(self._norm(feats[:num_train]))
    y = {k: jnp.asarray(v[:num_train]) for k, v in labels.items()}
    params = jax.jit(self._net.init)(jax.random.PRNGKey(seed), x[:1])["params"]
    self._apply = jax.jit(lambda p, x: self._net.apply({"params": p}, x))
    tx = optax.adamw(3e-3, weight_decay=1e-4)

    def loss(p):
      _, logits = self._net.apply({"params": p}, x)
      return sum(
        optax.softmax_cross_entropy_with_integer_labels(logits[k], y[k]).mean() for k in TARGETS
      )

    def step(carry, _):
      p, s = carry
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, u), s), None

    # One jitted call runs every full-batch step.
    fit = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps)[0][0])
    self.params = fit(params)
    pred = self._predict_features(feats[num_train:])
    self.heldout_accuracy = {k: float(np.mean(pred[k] == labels[k][num_train:])) for k in TARGETS}

  def _norm(self, feats):
    return (feats - self._mean) / self._std

  def _predict_features(self, feats):
    _, logits = self._apply(self.params, jnp.asarray(self._norm(feats)))
    return {k: np.asarray(jnp.argmax(v, -1)) for k, v in logits.items()}

  def predict(self, videos) -> dict:
    """{"direction": index into cells.DIRECTIONS [N], "count": number of cells - 1 [N]}."""
    return self._predict_features(video_features(videos))

  def embed(self, videos) -> np.ndarray:
    """The penultimate layer [N, width]: the default FVD feature extractor."""
    h, _ = self._apply(self.params, jnp.asarray(self._norm(video_features(videos))))
    return np.asarray(h)
