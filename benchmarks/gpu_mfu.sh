#!/usr/bin/env bash
# Training-step time and MFU of each family's largest config that fits one GPU (H100/H200, 80+ GiB).
# Usage: bash benchmarks/gpu_mfu.sh [STEPS] [OUT_JSONL]. Each line is one config with its overrides;
# a config that fails (e.g. out of memory) is reported and skipped. Paper-size shapes, random weights and
# inputs; the byte tokenizer only stands in for a tokenizer directory (vocabulary sizes come from the presets).
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-5}
OUT_JSONL=${2:-gpu_mfu.jsonl}
LM="data.tokenizer=byte data.seq_len=2048 train.batch_size=8"
python experiments/benchmark.py --configs= --steps="$STEPS" --data_batches=0 --json_out="$OUT_JSONL" \
  --config="configs/llm.py:llama-3.2-1b $LM model.attention_impl=xla model.remat=full" \
  --config="configs/bora.py:paper train.batch_size=8 model.attention_impl=xla" \
  --config="configs/llm.py:llama-3.2-1b $LM model.attention_impl=cudnn model.remat=none" \
  --config="configs/medgemini.py:paper data.tokenizer=byte train.batch_size=16" \
  --config="configs/opentslm_flamingo.py:paper data.tokenizer=byte train.batch_size=8" \
  --config="configs/anatomy_vlm.py:paper train.batch_size=64" \
  --config="configs/bora.py:paper train.batch_size=8 model.attention_impl=cudnn" \
  --config="configs/llm.py:gemma-3-1b $LM model.attention_impl=xla model.remat=full"
