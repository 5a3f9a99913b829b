#!/usr/bin/env bash
# Keep the small result files of finished runs under a benchmarks folder, so that the report
# can be rebuilt without rerunning (demo world only: its notes are synthetic text; never use
# this on runs over credentialed notes).
#   experiments/keep_runs.sh DEST RUN_DIR...     e.g. benchmarks/table3_cpu outputs/table3_cpu/*
#   python -m ccl.report DEST --out DEST/report  rebuilds every table and figure from them
# Kept per run: config.yaml, metrics.json, predictions.jsonl, data_manifest.json,
# model/ccl_model.json (training cost), data/{train,test}.jsonl and data/spans_*.jsonl (what
# the seen/unseen and coverage analyses read). Git stores identical files once.
set -euo pipefail
dest=$1
shift
for run in "$@"; do
  [[ -f $run/metrics.json && -f $run/config.yaml ]] || { echo "skip $run (not finished)"; continue; }
  if ! grep -q '^  source: \(demo\|codiesp\)$' "$run/config.yaml"; then
    echo "refused: $run is not on the demo world or CodiEsp (public notes only)" >&2
    exit 2
  fi
  out=$dest/$(basename "$run")
  mkdir -p "$out/data" "$out/model"
  cp "$run"/{config.yaml,metrics.json,predictions.jsonl,data_manifest.json} "$out/"
  [[ -f $run/model/ccl_model.json ]] && cp "$run/model/ccl_model.json" "$out/model/"
  rmdir "$out/model" 2>/dev/null || true
  for f in "$run"/data/train.jsonl "$run"/data/test.jsonl "$run"/data/spans_*.jsonl; do
    [[ -f $f ]] && cp "$f" "$out/data/"
  done
  echo "kept $run -> $out"
done
