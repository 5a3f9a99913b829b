#!/usr/bin/env bash
# Table 1: methods (zero-shot CoT, document SFT on code-only documents, CCL, CCL + human
# evidence) x backbones x test sets. Every run is scored on the test sets of its config's
# test_sets (test_sets/<name>/ in the run folder), one results row per test set; the CCL run
# also scores CCL + human evidence with its own model (infer.also_human_evidence:
# test_sets/<name>/human_evidence/, its own results rows), so nothing is trained twice.
#   experiments/table1_main.sh          GPU: BACKBONES (default qwen3_4b,llama31_8b); SFT trains
#                                       on MIMIC-IV, CCL on MDACE; test sets MDACE and ACI-Bench
#   experiments/table1_main.sh --cpu    public data: SFT on CodiEsp English (code-only), CCL on
#                                       CodiEsp Spanish (evidence); test sets CodiEsp dev in both
#                                       languages; BACKBONES (default smollm2_135m,tiny)
# Data (credentialed files are never downloaded; set what you have):
#   MIMIC3_NOTES=.../NOTEEVENTS.csv.gz   MDACE's notes (test set, and CCL's training documents)
#   MIMIC4_NOTES=.../discharge.csv.gz MIMIC4_LABELS=.../diagnoses_icd.csv.gz   SFT's documents
#   ACI_LABELS=...   your ACI-Bench ICD labels (else ACI-Bench is predict-only and not scored)
#   CODIESP=...      the CodiEsp folder (--cpu; else downloaded once)   LIMIT=20  test notes (--cpu)
# SFT trains on other documents than the rest, so it is its own multirun; the report over
# both multiruns goes to <SWEEP_DIR>/report/.
source "$(dirname "$0")/_sweep.sh"
ROOT=${SWEEP_DIR:-multirun/table1_main/$(date +%Y-%m-%d_%H-%M-%S)}
opt() { [[ -n $2 ]] && echo "$1=$2"; return 0; }  # an override only when its value is set

if ((CPU)); then
  COMMON=("${CPU_SETTINGS[@]}" "backbone=${BACKBONES:-smollm2_135m,tiny}" test_sets=codiesp
          "infer.limit=${LIMIT:-20}")
  [[ -n ${CODIESP:-} ]] && COMMON+=("docs.path=$CODIESP" "test_sets.codiesp.path=$CODIESP"
                                    "test_sets.codiesp_en.path=$CODIESP")
  SFT_DOCS=(docs=codiesp_en)
  CCL_DOCS=(docs=codiesp)
else
  COMMON=("${GPU_SETTINGS[@]}" "backbone=${BACKBONES:-qwen3_4b,llama31_8b}")
  mapfile -t -O "${#COMMON[@]}" COMMON < <(opt test_sets.mdace.notes_path "${MIMIC3_NOTES:-}"
                                         opt test_sets.aci_bench.labels_path "${ACI_LABELS:-}")
  mapfile -t SFT_DOCS < <(opt docs.notes_path "${MIMIC4_NOTES:-}"; opt docs.labels_path "${MIMIC4_LABELS:-}")
  CCL_DOCS=()  # MDACE: its notes file follows test_sets.mdace.notes_path
fi

SWEEP_DIR=$ROOT/sft sweep table1_main +experiment=table1_sft "${COMMON[@]}" "${SFT_DOCS[@]}"
SWEEP_DIR=$ROOT/cot_ccl sweep table1_main "+experiment=table1_cot,table1_ccl" \
  "${COMMON[@]}" "${CCL_DOCS[@]}"
"$PYTHON" -m ccl.report "$ROOT" --out "$ROOT/report"
