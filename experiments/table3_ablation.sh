#!/usr/bin/env bash
# Table 3 (ablation, rows 1-5) and Figure 3 (seen vs unseen codes; rows 3 -> 4 -> 5 give
# the gain of the gold tier and of silver + synthetic; Figure 3(c): unseen codes by the tier
# that covers their wording).
#   experiments/table3_ablation.sh          paper scale on a GPU (Qwen3-4B, vLLM), seed 0
#   experiments/table3_ablation.sh --cpu    demo world, SmolLM2-135M, the default recipe:
#                                           trained rows 2-5 over seeds 0,1,2 (seed-major, so a
#                                           stopped sweep leaves whole seeds), row 1 once
#                                           (zero-shot greedy decoding has no training seed)
#   SEEDS=0,1,2,3,4 experiments/table3_ablation.sh --cpu   more seeds
# `seed` changes training randomness only; the demo world is `docs.seed` (the same in every
# run). The report shows mean ± std per row over the seeds (table3_ablation_seeds).
# Extra Hydra overrides pass through, e.g. `--cpu backbone=tiny train.max_steps=3` (smoke run).
source "$(dirname "$0")/_sweep.sh"
if ((CPU)); then
  SETTINGS=("${CPU_SETTINGS[@]}")
  SEEDS=${SEEDS:-0,1,2}
else
  SETTINGS=(backbone=qwen3_4b "${GPU_SETTINGS[@]}")
  SEEDS=${SEEDS:-0}
fi
# One sweep folder for both multiruns, so that the second one's report covers all rows.
export SWEEP_DIR=${SWEEP_DIR:-multirun/table3_ablation/$(date +%Y-%m-%d_%H-%M-%S)}
sweep table3_ablation_row1 "+experiment=ablation_row1" "${SETTINGS[@]}" \
  "hydra.sweep.subdir=\${name}_\${backbone.name}"
sweep table3_ablation "seed=$SEEDS" "+experiment=ablation_row2,ablation_row3,ablation_row4,ablation_row5" \
  "${SETTINGS[@]}" "hydra.sweep.subdir=\${name}_s\${seed}_\${backbone.name}"
