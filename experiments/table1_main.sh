#!/usr/bin/env bash
# Table 1: methods (zero-shot CoT, document SFT, CCL gold, CCL all tiers) x backbones x test sets.
#   experiments/table1_main.sh          GPU; BACKBONES and TEST_SETS choose the grid
#   experiments/table1_main.sh --cpu    demo world, SmolLM2-135M and tiny, CPU settings
# MDACE needs your MIMIC-III notes (docs.notes_path=...); CodiEsp is public (see conf/docs/).
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then
  SETTINGS=("${CPU_SETTINGS[@]}" "backbone=${BACKBONES:-smollm2_135m,tiny}" "docs=${TEST_SETS:-demo}")
else
  SETTINGS=("${GPU_SETTINGS[@]}" "backbone=${BACKBONES:-qwen3_4b,llama31_8b}" "docs=${TEST_SETS:-mdace,codiesp}")
fi
sweep table1_main "+experiment=ablation_row1,ablation_row3,ablation_row4,ablation_row5" "${SETTINGS[@]}"
