#!/usr/bin/env bash
# Table 3 (ablation, rows 1-5) and Figure 3 (seen vs unseen codes; rows 3 -> 4 -> 5 give
# the gain of the gold tier and of silver + synthetic).
#   experiments/table3_ablation.sh          paper scale on a GPU (Qwen3-4B, vLLM)
#   experiments/table3_ablation.sh --cpu    demo world, SmolLM2-135M, default CPU settings
# Extra Hydra overrides pass through, e.g. `--cpu backbone=tiny train.max_steps=3` (smoke run).
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then SETTINGS=("${CPU_SETTINGS[@]}"); else SETTINGS=(backbone=qwen3_4b "${GPU_SETTINGS[@]}"); fi
sweep table3_ablation "+experiment=ablation_row1,ablation_row2,ablation_row3,ablation_row4,ablation_row5" \
  "${SETTINGS[@]}"
