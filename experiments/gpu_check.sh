#!/usr/bin/env bash
# The paper-scale GPU path, end to end, on one H100/H200 in at most about 8 minutes, offline:
#   python -m ccl.bench.gpu (Qwen3-4B + LoRA, packed vs padded, MFU), a local random-init
#   Qwen3-architecture backbone, a short train=lora_gpu run of it through ccl.run with
#   prediction on the GPU (vLLM where it can run, else HF generate), peak memory, and packed
#   vs unpacked bf16 losses (ccl/bench/gpu_check.py).
# Writes one JSON: $OUT/gpu_check_<date>.json when $OUT is set, else benchmarks/.
#   bash experiments/gpu_check.sh          # on a GPU node
#   bash experiments/gpu_check.sh --cpu    # the same path on the CPU, in minutes: through vLLM's CPU
#                                          # build when installed (CI's vLLM venv), else HF generate
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
stamp=$(date -u +%Y-%m-%d)
mode=gpu
for a in "$@"; do [[ "$a" == "--cpu" ]] && mode=cpu; done
dest=${OUT:-benchmarks}
mkdir -p "$dest"
out="$dest/gpu_check_${mode}_${stamp}.json"
work=${GPU_CHECK_WORK:-$(mktemp -d)}
timeout 480 python -m ccl.bench.gpu_check --work "$work" --out "$out" "$@"
echo "wrote $out"
