"""medjax: medical multimodal models in JAX/Flax.

Importing medjax sets the JAX options the library relies on, so a notebook that calls `train()`
directly behaves as the scripts do: `jax_threefry_partitionable` (a sharded init equals the
unsharded one), and, where libtpu is installed (for AOT compilation against TPU topologies) but no
TPU is attached, a platform list without the TPU backend, so that ordinary processes do not start
libtpu (and print its host-bounds and worker-hostname errors). `JAX_PLATFORMS` or
`jax_platforms`, when set, win.
"""

import importlib.metadata
import importlib.util
import os
import pkgutil

import jax

__version__ = "0.1.0"


def _platforms_without_absent_tpu() -> str | None:
  """'cpu' (or 'cuda,cpu' with an NVIDIA GPU and the CUDA plugin) when libtpu is installed, no TPU
  chip is attached and the platforms are not chosen; else None (JAX's own choice stands)."""
  if (
    os.environ.get("JAX_PLATFORMS")
    or jax.config.jax_platforms
    or "JAX_FORCE_TPU_INIT" in os.environ
  ):
    return None
  if importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"):
    return None
  try:
    from jax._src import hardware_utils, xla_bridge
  except ImportError:
    return None
  if (
    xla_bridge.backends_are_initialized()
    or hardware_utils.num_available_tpu_chips_and_device_id()[0]
  ):
    return None
  plugins = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
  if importlib.util.find_spec("jax_plugins") is not None:  # namespace-package plugins
    import jax_plugins

    plugins += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
  if any("cuda" not in p for p in plugins):
    return None  # another accelerator plugin (ROCm, ...): leave the choice to JAX
  cuda = plugins and hardware_utils.has_visible_nvidia_gpu()
  return "cuda,cpu" if cuda else "cpu"


jax.config.update("jax_threefry_partitionable", True)
if _platforms := _platforms_without_absent_tpu():
  jax.config.update("jax_platforms", _platforms)
