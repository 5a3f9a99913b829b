#!/usr/bin/env bash
# Table 2: training tokens and time (per epoch, in total) of document SFT vs CCL.
# The same backbone and budget for every recipe, so tokens and seconds compare directly.
#   experiments/table2_efficiency.sh          GPU (Qwen3-4B)
#   experiments/table2_efficiency.sh --cpu    demo world, SmolLM2-135M, CPU settings
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then SETTINGS=("${CPU_SETTINGS[@]}"); else SETTINGS=(backbone=qwen3_4b "${GPU_SETTINGS[@]}"); fi
sweep table2_efficiency "+experiment=ablation_row2,ablation_row3,ablation_row4,ablation_row5" "${SETTINGS[@]}"
