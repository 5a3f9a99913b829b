#!/usr/bin/env bash
# Table 4: evidence precision / recall / F1 on test sets with gold evidence, for the recipes
# that write evidence; infer.also_human_evidence adds the upper bound (gold evidence given),
# scored from each run's own model (human_evidence/ in the run folder, a results row of its own).
#   experiments/table4_evidence.sh          GPU, MDACE (needs MIMIC-III notes) and CodiEsp
#   experiments/table4_evidence.sh --cpu    demo world, SmolLM2-135M, CPU settings
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then
  SETTINGS=("${CPU_SETTINGS[@]}" "docs=${TEST_SETS:-demo}")
else
  SETTINGS=(backbone=qwen3_4b "${GPU_SETTINGS[@]}" "docs=${TEST_SETS:-mdace,codiesp}")
fi
sweep table4_evidence "+experiment=ablation_row3,ablation_row4,ablation_row5" infer.also_human_evidence=true \
  "${SETTINGS[@]}"
