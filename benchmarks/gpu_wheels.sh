#!/usr/bin/env bash
# Wheels of the packages medjax imports beyond a stock JAX install (jax, flax, optax, orbax, etils,
# absl, numpy), for a GPU machine without a package registry. Run where pip reaches PyPI and copy
# the folder over; benchmarks/gpu_vision.sh installs what it finds there. Versions: those the tests
# run with.
# Python 3.12, x86-64.
# Usage: bash benchmarks/gpu_wheels.sh [DIR]   (default build/wheels, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build/wheels}
mkdir -p "$DIR"
PLATFORMS=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  PLATFORMS="$PLATFORMS --platform $p"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  $PLATFORMS -d "$DIR" \
  ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 tensorflow-datasets==4.9.10 \
  tensorflow-metadata==1.21.0 immutabledict==4.3.1 toml==0.10.2 portpicker==1.6.0
# promise has a source distribution only: a pure-Python wheel built here.
python3 -m pip wheel -q --no-deps -w "$DIR" promise==2.3
ls "$DIR"
