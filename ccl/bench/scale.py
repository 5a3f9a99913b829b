"""``python -m ccl.bench scale --notes N``: the data steps at MIMIC-IV size, time and peak memory.

Writes a seeded synthetic MIMIC-IV-shaped corpus into the three files ``docs=mimic4``
reads (``--work DIR``/``corpus``: ``discharge.csv.gz``, ``diagnoses_icd.csv.gz``,
``split.feather``): ``N`` training admissions and validation / test admissions in the
public split's proportions (89,099 / 13,378 / 19,802); notes of about 1,550 words
(normal, sd 400, at least 200) that begin with MIMIC's de-identified header and hold the
Tabular description of each of their codes among filler words drawn Zipf-like from the
Tabular List's vocabulary; about 13.4 real billable codes a note (Poisson), drawn
Zipf-like (exponent 1.1) from 5,800 codes chosen by the seed. The notes' shape, not their
language, is what the steps' cost depends on.

Then it runs each data step in its own process (``--step NAME``, the same Hydra config
the data stage composes, plus any ``key=value`` overrides given) and reads that
process's CPU time, wall time and peak resident memory from ``os.wait4``:

* ``load``       the Tabular List, the index and ``docs=mimic4`` (:func:`load_source`);
* ``audit``      ``load`` + the contamination audit of the documents (:mod:`ccl.data.audit`);
* ``gold``       the gold tier over the full code space (``spans.gold.restrict=all``), cold;
* ``silver``     ``load`` + the lexical silver tier mined from the training notes;
* ``synthetic``  ``load`` + gold (cached) + silver (cached) + the synthetic tier;
* ``data_stage`` the whole data stage of a Table 3 row-5 run (audit on, gold over the full
  code space, lexical silver, synthetic) writing its run folder, whose bytes are counted;
* ``model``      the tiny backbone with the code tokens of 200 demo documents + the
  full-code-space gold tier (its footprint), and ``train``: the same, trained for
  ``--train-steps`` steps by the train stage (examples tokenised, plan drawn). The
  training's cost is ``train`` minus ``model``.

A table is printed and ``--out FILE`` keeps the numbers as JSON with the exact command,
the load average before and after, and the machine. The corpus stays in ``--work`` (it is
big at 89k: about 1.3 GB uncompressed); delete it when done.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ccl.bench.common import machine_info
from ccl.config import compose_config
from ccl.data.audit import AuditSettings, audit_documents
from ccl.data.sources import load_source
from ccl.icd.tabular import load_tabular
from ccl.spans.tiers import TierContext, build_tiers
from ccl.stages.data import build_data, load_index_entries

SPLIT_SHARE = {"train": 1.0, "val": 13_378 / 89_099, "test": 19_802 / 89_099}
WORDS_MEAN, WORDS_SD, WORDS_MIN = 1550, 400, 200
CODES_MEAN, CODE_POOL, ZIPF = 13.4, 5800, 1.1
HADM_BASE = 20_000_000
HEADER = ("Name:  ___                     Unit No:   ___\n \nAdmission Date:  ___              "
          "Discharge Date:   ___\n \nDate of Birth:  ___             Sex:   {sex}\n \nService: MEDICINE\n \n"
          "Allergies: \nNo Known Allergies / Adverse Drug Reactions\n \nChief Complaint:\n")
STEPS = ("load", "audit", "gold", "silver", "synthetic", "data_stage", "model", "train")


def corpus_files(work: Path) -> dict[str, Path]:
    folder = work / "corpus"
    return {"notes": folder / "discharge.csv.gz", "labels": folder / "diagnoses_icd.csv.gz",
            "split": folder / "split.feather"}


def _zipf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def _gzip_text(path: Path) -> io.TextIOWrapper:
    """A text file gzip-compressed with no time stamp or name in its header (same bytes each run)."""
    raw = path.open("wb")
    return io.TextIOWrapper(gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0),
                            encoding="utf-8", newline="")


def _cdf(p: np.ndarray) -> np.ndarray:
    """The cumulative distribution ``Generator.choice(n, size, p=p)`` draws from: its draws are
    ``cdf.searchsorted(rng.random(size), side="right")`` (numpy's own code), so drawing with a
    precomputed ``cdf`` consumes the generator and returns the indices exactly as ``choice``."""
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return cdf


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    return cdf.searchsorted(rng.random(size), side="right")


def _csv_field(text: str) -> str:
    """``text`` as the csv module writes a field (excel dialect, QUOTE_MINIMAL): quoted, with
    quotes doubled, when it holds a comma, a quote or a line break."""
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_corpus(work: Path, notes: int, seed: int = 0, tab: Any = None) -> dict[str, Any]:
    """The synthetic corpus (module docstring) for ``notes`` training admissions; returns its counts.

    Streamed one note at a time into the gzip files (memory does not grow with ``notes``; about
    0.9 ms of CPU a note). The same ``seed`` (and Tabular List, default the run's) gives the
    same bytes: the draws are those of ``Generator.choice`` in the same order (:func:`_cdf`), and
    the rows are the csv module's (:func:`_csv_field`)."""
    import pandas as pd

    files = corpus_files(work)
    files["notes"].parent.mkdir(parents=True, exist_ok=True)
    tab = tab if tab is not None else load_tabular(None, work / "cache")
    rng = np.random.default_rng(seed)
    billable = sorted(tab.billable_codes())
    pool = [billable[i] for i in rng.permutation(len(billable))[:CODE_POOL]]
    code_cdf = _cdf(_zipf(len(pool), ZIPF))
    vocab = sorted({w for c in billable for w in re.findall(r"[a-z]+", tab.description(c).lower()) if len(w) > 2})
    vocab = np.array(vocab, dtype=object)[rng.permutation(len(vocab))]  # words drawn by fancy indexing
    word_cdf = _cdf(_zipf(len(vocab), 1.0))
    description = {c: tab.description(c) for c in pool}
    # words of a description as text.split() counts them, twice (the "History of" line, the list)
    description_words = {c: len(d.split()) + len(d.lower().split()) for c, d in description.items()}
    label_code = {c: c.replace(".", "") for c in pool}
    sizes = {s: max(1, round(notes * share)) for s, share in SPLIT_SHARE.items()}
    ids, splits = [], []
    for split, n in sizes.items():
        ids += range(HADM_BASE + len(ids), HADM_BASE + len(ids) + n)
        splits += [split] * n
    pd.DataFrame({"_id": ids, "split": splits}).to_feather(files["split"])
    header_words = {sex: len(HEADER.format(sex=sex).split()) for sex in "FM"}
    words = codes = 0
    with _gzip_text(files["notes"]) as fn, _gzip_text(files["labels"]) as fl:
        fn.write("note_id,subject_id,hadm_id,note_type,note_seq,text\r\n")
        fl.write("subject_id,hadm_id,seq_num,icd_code,icd_version\r\n")
        for hadm in ids:
            k = max(1, int(rng.poisson(CODES_MEAN)))
            mine = list(dict.fromkeys(pool[i] for i in _draw(rng, code_cdf, k).tolist()))
            n_words = max(WORDS_MIN, int(rng.normal(WORDS_MEAN, WORDS_SD)))
            diagnoses = [description[c] for c in mine]
            filler = n_words - sum(len(d.split()) for d in diagnoses) - 40
            body = vocab[_draw(rng, word_cdf, max(filler, 50))].tolist()
            cuts = np.sort(rng.choice(len(body), size=len(diagnoses), replace=False)).tolist() if diagnoses else []
            parts, last = [], 0
            for cut, d in zip(cuts, diagnoses, strict=True):
                parts += [" ".join(body[last:cut]), f"\nHistory of {d.lower()}.\n"]
                last = cut
            parts.append(" ".join(body[last:]))
            sex = "F" if hadm % 2 else "M"
            text = (HEADER.format(sex=sex) + "".join(parts)
                    + "\n \nDischarge Diagnosis:\n" + "\n".join(diagnoses) + "\n")
            subject = hadm - HADM_BASE
            fn.write(f"{hadm}-DS-1,{subject},{hadm},DS,1,{_csv_field(text)}\r\n")
            fl.write("".join(f"{subject},{hadm},{seq},{_csv_field(label_code[c])},10\r\n"
                             for seq, c in enumerate(mine, start=1)))
            # = len(text.split()): body words hold no whitespace; "History of" 2 words a code;
            # "Discharge Diagnosis:" 2
            words += header_words[sex] + len(body) + 2 * len(mine) + sum(description_words[c] for c in mine) + 2
            codes += len(mine)
    return {"admissions": sizes, "words_per_note": round(words / len(ids), 1),
            "codes_per_note": round(codes / len(ids), 2), "code_pool": len(pool),
            "bytes": {k: p.stat().st_size for k, p in files.items()}}


# ------------------------------------------------------------------------- one step


STEP_SPANS = {"gold": "[gold]", "silver": "[silver]"}  # the others: row 5's [gold, silver, synthetic]


def step_overrides(work: Path, name: str, extra: list[str]) -> list[str]:
    """The Hydra overrides of data step ``name``: ``docs=mimic4`` on the corpus, a Table 3 row-5
    run (gold over the full code space, lexical silver, synthetic, audit on), then ``extra``."""
    files = corpus_files(work)
    spans = STEP_SPANS.get(name, "[gold,silver,synthetic]")
    return ["docs=mimic4", f"docs.notes_path={files['notes']}", f"docs.labels_path={files['labels']}",
            f"docs.split_path={files['split']}", f"paths.cache_dir={work / 'cache'}", "icd.download=false",
            "logger=none", "name=ablation_row5", f"spans={spans}", "llm=lexical", "audit.enabled=true",
            *(["spans.gold.restrict=all"] if "gold" in spans else []),
            *(["spans.silver.method=lexical"] if "silver" in spans else []), *extra]


def run_step(name: str, work: Path, extra: list[str], train_steps: int) -> dict[str, Any]:
    """Run one step in this process; returns its counts (the parent measures time and memory)."""
    import resource

    from rich.console import Console

    quiet = Console(quiet=True)
    if name in ("model", "train"):
        cfg = compose_config(["docs=demo", "docs.demo.n_train=200", f"paths.cache_dir={work / 'cache'}",
                              "icd.download=false", "logger=none", "backbone=tiny", "+experiment=ablation_row4",
                              "spans.gold.restrict=all", f"train.max_steps={train_steps}", "train.max_epochs=null",
                              *[e for e in extra if e.startswith("icd.")]])
    else:
        cfg = compose_config(step_overrides(work, name, extra))
    cache = Path(cfg.paths.cache_dir)
    out: dict[str, Any] = {}
    if name in ("load", "audit", "silver", "synthetic"):
        tab = load_tabular(cfg.icd.tabular_xml, cache)
        entries, _ = load_index_entries(cfg, tab, cache, quiet)
        data = load_source(cfg.docs, tab, cache, entries)
        out["documents"] = {k: len(v) for k, v in data.docs.items()}
        if name == "audit":
            _, _, report = audit_documents(data.docs, data.corpus, {}, AuditSettings.from_config(cfg.audit))
            out["audit"] = {k: report[k] for k in ("document_pairs", "corpus_also_training", "compared")}
        if name in ("silver", "synthetic"):
            spans, _ = build_tiers(TierContext(cfg, tab, data.docs, data.corpus, cache_dir=cache,
                                                     entries=entries))
            out["pairs"] = {k: len(v) for k, v in spans.items()}
    elif name == "gold":
        tab = load_tabular(cfg.icd.tabular_xml, cache)
        entries, _ = load_index_entries(cfg, tab, cache, quiet)
        spans, _ = build_tiers(TierContext(cfg, tab, {}, [], cache_dir=cache, entries=entries))
        out["pairs"] = {k: len(v) for k, v in spans.items()}
    elif name == "data_stage":
        run_dir = work / "run"
        bundle = build_data(cfg, run_dir, quiet)
        out["pairs"] = {k: v["pairs"] for k, v in bundle.manifest["span_tiers"].items()}
        out["audit"] = {k: bundle.manifest["audit"].get(k) for k in ("document_pairs", "span_pairs_flagged",
                                                                      "corpus_also_training")}
        out["seconds"] = {"data_stage": bundle.manifest["seconds"],
                          **{k: v.get("seconds") for k, v in bundle.manifest["span_tiers"].items()}}
        out["run_folder_bytes"] = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
        out["run_folder_files"] = {str(p.relative_to(run_dir)): p.stat().st_size
                                   for p in sorted(run_dir.rglob("*")) if p.is_file()}
    elif name in ("model", "train"):
        import torch

        # local import: Lightning + the model code (~3 s, ~200 MB) only in the train step's process,
        # whose time and peak memory this measures (the other steps' processes never load them)
        from ccl.predict.serving import load_model  # local import: as above
        from ccl.stages import train as train_step

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(dir=work) as run_dir:
            bundle = build_data(cfg, Path(run_dir), quiet)
            out["pairs"] = {k: v["pairs"] for k, v in bundle.manifest["span_tiers"].items()}
            out["code_vocabulary"] = len(bundle.code_vocabulary())
            if name == "model":
                model, _ = load_model(cfg, bundle, cache)
                out["parameters"] = sum(p.numel() for p in model.parameters())
            else:
                train_step.train_stage(cfg, bundle, Path(run_dir), quiet)
    else:
        raise ValueError(f"--step {name}: choose from {', '.join(STEPS)}")
    out["maxrss_kb_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


# ------------------------------------------------------------------------- measurement


def measure(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` under ``/usr/bin/time -v``; its wall seconds, CPU seconds, peak RSS (GB) and its
    JSON line. Through ``time``, not forked from this process: Linux carries the forking
    process's RSS high-water mark across ``exec`` into the child's ``ru_maxrss``, so a step
    forked from here never reads below this process's own RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        t = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", report.name, *cmd], stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t
        fields = dict(line.strip().rsplit(": ", 1) for line in report.read().splitlines() if ": " in line)
    if proc.returncode != 0:
        raise RuntimeError(f"step failed (exit {proc.returncode}): {shlex.join(cmd)}")
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "peak_rss_gb": round(int(fields["Maximum resident set size (kbytes)"]) / 1024**2, 3),
            "result": json.loads(last[-1]) if last else {}}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_scale(args: argparse.Namespace, overrides: list[str], console: Any) -> dict[str, Any]:
    """The ``scale`` benchmark (module docstring)."""
    from rich.table import Table

    work = Path(args.work or f"outputs/bench_scale_{args.notes}").resolve()
    result: dict[str, Any] = {"benchmark": "scale", "command": args.command_line, "notes": args.notes,
                              "load_average_before": load_average(), "steps": {}}
    if args.notes is None:
        raise ValueError("scale: give --notes N, the training admissions of the synthetic corpus")
    files = corpus_files(work)
    if not all(p.exists() for p in files.values()) or args.regenerate:
        t = time.perf_counter()
        result["corpus"] = write_corpus(work, args.notes, args.seed)
        result["corpus"]["seconds"] = round(time.perf_counter() - t, 1)
    steps = args.steps.split(",") if args.steps else list(STEPS)
    for name in steps:
        cmd = [sys.executable, "-m", "ccl.bench.scale", "--step", name, "--work", str(work),
               "--train-steps", str(args.train_steps), *overrides]
        console.print(f"[dim]{name}: {shlex.join(cmd)}[/]")
        result["steps"][name] = measure(cmd)
        console.print(f"  {name}: {result['steps'][name]['wall_s']} s, {result['steps'][name]['peak_rss_gb']} GB")
    result["load_average_after"] = load_average()
    result["machine"] = machine_info()
    table = Table(title=f"data steps at {args.notes:,} training notes (synthetic MIMIC-IV shape)")
    for col in ("step", "wall s", "CPU s", "peak RSS GB", "what"):
        table.add_column(col, justify="left" if col in ("step", "what") else "right")
    for name, m in result["steps"].items():
        r = m["result"]
        what = ", ".join(f"{k} {v}" for k, v in r.items() if k in ("documents", "pairs", "audit", "parameters",
                                                                     "run_folder_bytes"))
        table.add_row(name, f"{m['wall_s']:.1f}", f"{m['cpu_s']:.1f}", f"{m['peak_rss_gb']:.2f}", what[:120])
    console.print(table)
    console.print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """One Markdown table of several ``scale`` results: a row per step, ``CPU s / peak RSS GB`` per size."""
    results = sorted(results, key=lambda r: r["notes"])
    steps = [s for s in STEPS if any(s in r["steps"] for r in results)]
    lines = ["| step | " + " | ".join(f"{r['notes']:,} notes" for r in results) + " |",
             "| --- |" + " ---: |" * len(results)]
    for s in steps:
        cells = [f"{r['steps'][s]['cpu_s']:.0f} s / {r['steps'][s]['peak_rss_gb']:.2f} GB" if s in r["steps"] else ""
                 for r in results]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``--step NAME --work DIR [overrides]``: one step in this process (what the benchmark runs);
    ``--table FILE...``: the Markdown table of kept results."""
    parser = argparse.ArgumentParser(prog="python -m ccl.bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", choices=STEPS)
    parser.add_argument("--work")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--table", nargs="+", help="scale result JSON files: print their Markdown table")
    args, rest = parser.parse_known_args(argv)
    if args.table:
        print(markdown([json.loads(Path(p).read_text()) for p in args.table]), end="")
        return
    if not (args.step and args.work):
        parser.error("--step and --work are required (or --table FILE...)")
    out = run_step(args.step, Path(args.work), rest, args.train_steps)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
