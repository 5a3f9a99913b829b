# Shared by experiments/*.sh (sourced, not run). Parses --cpu, keeps the other arguments as
# extra Hydra overrides (they come last, so they win), and runs one multirun whose
# ReportCallback renders the results table, tables and figures into <sweep dir>/report/.
#   SWEEP_DIR=...  where the multirun goes (default multirun/<script>/<timestamp>)
#   PYTHON=...     the interpreter (default python)
set -euo pipefail

PYTHON=${PYTHON:-python}
CPU=0
EXTRA=()
for arg in "$@"; do
  if [[ $arg == --cpu ]]; then CPU=1; else EXTRA+=("$arg"); fi
done

# Paper-scale settings for one GPU (see README, "Paper-scale runs on GPUs").
GPU_SETTINGS=(infer=vllm train.precision=bf16-mixed train.max_batch_tokens=32768 train.max_steps=2000 train.max_epochs=null)
# The CPU variant is the default config (demo world, SmolLM2-135M + LoRA, CPU settings).
CPU_SETTINGS=(train.accelerator=cpu)

sweep() {  # sweep NAME OVERRIDE...
  local name=$1
  shift
  local dir=${SWEEP_DIR:-multirun/$name/$(date +%Y-%m-%d_%H-%M-%S)}
  local start=$SECONDS
  "$PYTHON" -m ccl.run -m "$@" "${EXTRA[@]}" "hydra.sweep.dir=$dir" \
    "++hydra.callbacks.report._target_=ccl.report.callback.ReportCallback"
  echo "$name: $((SECONDS - start)) s; report: $dir/report/report.md"
}
