#!/usr/bin/env bash
# Keep the small result files of finished runs under a benchmarks folder, so that the report
# can be rebuilt without rerunning (demo world only: its notes are synthetic text; never use
# this on runs over credentialed notes).
#   experiments/keep_runs.sh DEST RUN_DIR...     e.g. benchmarks/table3_cpu outputs/table3_cpu/*
#   python -m ccl.report DEST --out DEST/report  rebuilds every table and figure from them
# Kept per run: config.yaml, metrics.json, predictions.jsonl, data_manifest.json,
# model/ccl_model.json (training cost), data/{train,test}.jsonl and data/spans_*.jsonl (what
# the seen/unseen and coverage analyses read), and .hydra/overrides.yaml reduced to the
# experiment override (what the report identifies Table 3 rows by). Git stores identical files once.
# CodiEsp runs (CC BY 4.0, but its notes' text is never committed): predictions.jsonl keeps
# id, codes, gold codes and code_scores only (raw output and evidence quote the notes; the
# scores are what the ranking metrics, MAP included, are recomputed from), data/{train,test}.jsonl
# keep id, split and codes only (text and evidence emptied); span pairs are ICD-10-CM text.
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
  cp "$run"/{config.yaml,metrics.json,data_manifest.json} "$out/"
  if [[ -f $run/.hydra/overrides.yaml ]]; then
    # the experiment the run was composed with (ccl.report finds Table 3 rows by it); the
    # other overrides name this machine's folders
    mkdir -p "$out/.hydra"
    { grep -E '^- \+{0,2}experiment=' "$run/.hydra/overrides.yaml" || echo '[]'; } > "$out/.hydra/overrides.yaml"
  fi
  [[ -f $run/model/ccl_model.json ]] && cp "$run/model/ccl_model.json" "$out/model/"
  rmdir "$out/model" 2>/dev/null || true
  for f in "$run"/data/spans_*.jsonl; do
    [[ -f $f ]] && cp "$f" "$out/data/"
  done
  if grep -q '^  source: codiesp$' "$run/config.yaml"; then
    # no note text: the fields the report reads, nothing that quotes a note
    python - "$run" "$out" <<'PY'
import json, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
def strip(src, dst, keep, blank):
    if not src.is_file():
        return
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{**{k: r[k] for k in keep if k in r}, **blank} for r in rows]
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
strip(run / "predictions.jsonl", out / "predictions.jsonl", ("id", "codes", "gold_codes", "code_scores"),
      {"raw_output": "", "evidence": []})
for split in ("train", "test"):
    strip(run / "data" / f"{split}.jsonl", out / "data" / f"{split}.jsonl",
          ("id", "codes", "split", "source"), {"text": "", "spans": []})
PY
  else
    cp "$run/predictions.jsonl" "$out/"
    for f in "$run"/data/train.jsonl "$run"/data/test.jsonl; do
      [[ -f $f ]] && cp "$f" "$out/data/"
    done
  fi
  echo "kept $run -> $out"
done
