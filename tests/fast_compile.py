"""XLA:CPU compiler options for the tests' programs, where compile time is not under test.

The suite compiles everything with FAST (tests/conftest.py puts it in XLA_FLAGS, tests/scripts.py
in the scripts' environment): most test programs run once, so compiling dominates. The learning
tests' train and eval steps, which run hundreds of times, compile with XLA's defaults instead
(`train.compiler_options=RUN`).
"""

# Backend optimisation level 0, LLVM's expensive passes off and XLA:CPU's older loop emitters: the
# tests' small programs compile 2-3x faster (a tiny Flamingo train step 8.1 -> 2.5 s) and run up to
# 3x slower. Values agree with the default options to float rounding, not bitwise: not for an init
# or a forward compared bitwise with one compiled otherwise.
FAST = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
  "xla_cpu_use_fusion_emitters": False,
}
FAST_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST.items())
# XLA's defaults for the options FAST sets, and the same as a `train.compiler_options` value.
DEFAULT = {
  "xla_backend_optimization_level": 3,
  "xla_llvm_disable_expensive_passes": False,
  "xla_cpu_use_fusion_emitters": True,
}
RUN = " ".join(f"{k}={str(v).lower()}" for k, v in DEFAULT.items())
