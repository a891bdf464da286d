#!/usr/bin/env bash
# The vision GPU table in one run (issue 20; rows: medjax.benchmarks.vision). Installs the wheels
# that benchmarks/gpu_wheels.sh put in build/wheels (when that folder is here: carry it to the GPU
# machine), traces the baseline and cuDNN STDiT steps into build/profile (their top ops are
# printed), and writes the log and JSON lines to $LOG_DIR (default build/).
# Usage: bash benchmarks/gpu_vision.sh [gpu_vision.py flags, e.g. --budget_s=300 --rows=...]
set -uo pipefail
cd "$(dirname "$0")/.."
if ls build/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target build/site build/wheels/*.whl || exit 1
  export PYTHONPATH="build/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Let one step take most of the 139 GiB (XLA's client takes 75% of it by default).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
LOG_DIR=${LOG_DIR:-build}
mkdir -p "$LOG_DIR" build/profile
python3 benchmarks/gpu_vision.py --profile_dir=build/profile --budget_s=360 \
  --json_out="$LOG_DIR/gpu_vision.jsonl" "$@" 2>&1 | tee "$LOG_DIR/gpu_vision.log"
