#!/usr/bin/env bash
# Figure 3: F1 on seen vs unseen test codes as span tiers are added one at a time
# (none -> gold -> gold + silver -> all three), and the gain each tier brings on the unseen
# codes it introduced (per-code table in <sweep dir>/report/unseen_codes.csv).
#   experiments/figure3_unseen_codes.sh          GPU (Qwen3-4B)
#   experiments/figure3_unseen_codes.sh --cpu    demo world, SmolLM2-135M, CPU settings
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then SETTINGS=("${CPU_SETTINGS[@]}"); else SETTINGS=(backbone=qwen3_4b "${GPU_SETTINGS[@]}"); fi
sweep figure3_unseen_codes +experiment=ablation_row4 name=unseen_codes \
  "spans=choice([],[gold],[gold,silver],[gold,silver,synthetic])" "${SETTINGS[@]}"
