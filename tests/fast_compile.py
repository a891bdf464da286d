"""XLA:CPU compiler options for the tests' own programs, where compile time is not under test."""

import jax

# Backend optimisation level 0: LLVM skips most of its passes, so the tests' tiny programs compile
# 20-50% faster (gradients most) and run about as fast. Values agree with the default level to
# float rounding, not bitwise: not for an init or a forward compared bitwise with another one.
FAST = {"xla_backend_optimization_level": 0}


def fast_jit(fn, **kw):
  """jax.jit compiled with FAST."""
  return jax.jit(fn, compiler_options=FAST, **kw)
