"""CodiEsp's official MAP on a kept CCL run, beside CCL's own ``map_trec``.

Two steps, because the official scorer needs its own environment (pandas + trectools 0.0.42,
as its requirements pin) and CCL needs its own:

1. ``python experiments/codiesp_official_map.py write RUN OUT`` (CCL's venv) writes the scorer's
   three inputs from ``RUN/predictions.jsonl``: ``gold.tsv`` (note id, gold code), ``pred.tsv``
   (each note's codes in the order CCL ranks them: by ``code_scores``, within the label space
   = the test notes' gold codes, ``ccl.eval.ranking.ranked_codes``) and ``codes.tsv`` (the label
   space as the valid codes). It prints CCL's ``map_trec`` on the same ranking, unrounded.
2. ``python experiments/codiesp_official_map.py score OUT SCORER`` (the scorer's venv) runs the
   official ``codiespD_P_evaluation.py`` (TeMU-BSC codiesp-evaluation-script) step by step, its
   own functions and its own ``TrecEval.get_map(trec_eval=False)`` call, and prints the MAP
   unrounded (the script itself prints it rounded to 3 decimals).

Both print ``MAP <value>``; they agree to the last digit on the kept runs
(``tests/test_map.py`` pins the values, ``benchmarks/codiesp_cpu.md`` has the runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path


def write_inputs(run: Path, out: Path) -> float:
    """Write gold/pred/codes TSVs for ``run`` into ``out``; return CCL's ``map_trec``.

    Raises FileNotFoundError when ``run`` has no ``predictions.jsonl``.
    """
    from ccl.eval.ranking import ranked_codes, trec_map  # CCL's venv only; `score` runs without CCL

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]
    space = {c for r in rows for c in r["gold_codes"]}
    ranked = [ranked_codes(r["codes"], r.get("code_scores") or {}, space) for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "gold.tsv").write_text("".join(f"{r['id']}\t{c}\n" for r in rows for c in r["gold_codes"]))
    pairs = zip(rows, ranked, strict=True)
    (out / "pred.tsv").write_text("".join(f"{r['id']}\t{c}\n" for r, codes in pairs for c in codes))
    (out / "codes.tsv").write_text("".join(f"{c}\tlabel space\n" for c in sorted(space)))
    return trec_map([r["gold_codes"] for r in rows], ranked)


def official_map(folder: Path, scorer: Path) -> float:
    """The official scorer's MAP on ``folder``'s TSVs, by its own functions, unrounded."""
    spec = importlib.util.spec_from_file_location("codiesp_official", scorer)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)  # the module's __main__ block does not run
    import pandas as pd  # the scorer's venv

    valid = {c.lower() for c in pd.read_csv(folder / "codes.tsv", sep="\t", header=None, usecols=[0])[0]}
    os.chdir(folder)  # the scorer writes its intermediate files to the working folder
    official.format_gs("gold.tsv", "./intermediate_gs_file.txt")
    official.format_predictions("pred.tsv", "./intermediate_predictions_file.txt", valid)
    run = official.TrecRun("./intermediate_predictions_file.txt")
    qrels = official.TrecQrel("./intermediate_gs_file.txt")
    return official.TrecEval(run, qrels).get_map(trec_eval=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    w = sub.add_parser("write", help="write the scorer's inputs from a kept run (CCL's venv)")
    w.add_argument("run", type=Path)
    w.add_argument("out", type=Path)
    s = sub.add_parser("score", help="run the official scorer on them (the scorer's venv)")
    s.add_argument("out", type=Path)
    s.add_argument("scorer", type=Path, help="path to codiespD_P_evaluation.py")
    args = parser.parse_args()
    value = write_inputs(args.run, args.out) if args.step == "write" else official_map(args.out, args.scorer)
    print(f"MAP {float(value)!r}")


if __name__ == "__main__":
    main()
