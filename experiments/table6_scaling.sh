#!/usr/bin/env bash
# Table 6 and the scaling-law plot: the CCL recipe (row 4) across backbone sizes per family.
#   experiments/table6_scaling.sh          GPU: Qwen2.5 0.5B/1.5B/7B and Llama 3.2 1B/3B, 3.1 8B
#   experiments/table6_scaling.sh --cpu    the tiny family (tiny_s, tiny_m, tiny_l) on the demo world
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then
  SETTINGS=("${CPU_SETTINGS[@]}" "backbone=${BACKBONES:-tiny_s,tiny_m,tiny_l}")
else
  SETTINGS=("${GPU_SETTINGS[@]}"
    "backbone=${BACKBONES:-qwen25_0_5b,qwen25_1_5b,qwen25_7b,llama32_1b,llama32_3b,llama31_8b}")
fi
sweep table6_scaling +experiment=ablation_row4 "${SETTINGS[@]}"
