#!/usr/bin/env bash
# The CPU recipe of issue 3: does span data help unseen codes? Rows 3 and 4 of Table 3
# on the mechanism demo world (SmolLM2-135M + LoRA, three document passes), seeds 0 and 1,
# each scored with generated and with human (gold) evidence.
#   experiments/mechanism_demo.sh            about 25-40 min a run on 2 cores (4 runs, one after another)
#   SEEDS=0 experiments/mechanism_demo.sh    one seed
# Extra Hydra overrides pass through, e.g. `backbone=tiny train.max_epochs=1` (smoke run).
source "$(dirname "$0")/_sweep.sh"
sweep mechanism_demo "+experiment=mechanism_demo,mechanism_demo_row3" "seed=${SEEDS:-0,1}" \
  "${CPU_SETTINGS[@]}"
