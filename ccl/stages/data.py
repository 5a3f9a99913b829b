"""The data stage: ICD knowledge -> documents -> span tiers -> ``data_manifest.json``.

Everything here is deterministic given the config, and each expensive piece
(Tabular List, index parse, gold tier, tiny tokenizer) is cached under
``paths.cache_dir`` by content hash, so the stage is cheap to rerun.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ccl.data.audit import AuditSettings, audit_documents, audit_spans
from ccl.data.prompts import PROMPT_VERSION
from ccl.data.sources import load_source
from ccl.icd.index import load_valid_entries
from ccl.icd.tabular import TabularList, load_tabular
from ccl.records import TIERS, Document, SpanPair, document_reference, write_jsonl
from ccl.spans.tiers import TierContext, build_tiers
from ccl.utils.atomic import atomic_dir, write_json_atomic
from ccl.utils.hashing import hash_obj, hash_records
from ccl.utils.run_folder import RunFolder


@dataclass
class DataBundle:
    """Everything later stages read: documents, span pairs, label space and provenance."""

    tab: TabularList
    docs: dict[str, list[Document]]
    corpus: list[Document]
    spans: dict[str, list[SpanPair]]
    label_space: list[str]
    seen_codes: set[str]
    manifest: dict[str, Any]
    key: str
    # Extra test sets (``cfg.test_sets``): name -> the test split of that docs config.
    test_sets: dict[str, list[Document]] = field(default_factory=dict)

    @property
    def describe(self) -> Callable[[str], str]:
        return self.tab.description

    def span_pairs(self) -> list[SpanPair]:
        return [p for tier in TIERS for p in self.spans.get(tier, [])]

    def code_vocabulary(self) -> list[str]:
        """Every code the model may need to write, sorted: each document split's codes and the
        span tiers' codes (the codes that get their own token; restricted decoding allows the
        billable ones)."""
        codes = {c for split in self.docs.values() for d in split for c in d.codes}
        codes |= {p.code for p in self.span_pairs()}
        return sorted(codes)


def load_index_entries(cfg: DictConfig, tab: TabularList, cache_dir: Path, console: Console) -> tuple[list, dict]:
    """Alphabetic Index entries valid in the tabular year, or [] with a plain fallback report."""
    entries, report = load_valid_entries(cfg.icd, tab, cache_dir)
    if report.get("fallback"):
        console.print(f"[bold yellow]ICD index:[/] {report['message']}")
    return entries, report


def _build_documents(docs_cfg: DictConfig, cache_dir: Path, tab: TabularList, entries: list) -> tuple[dict, list, dict]:
    """Documents by split, the code-only corpus and the source's stats for one docs config
    (its loader: ``docs._target_``, :func:`ccl.data.sources.load_source`)."""
    data = load_source(docs_cfg, tab, cache_dir, entries)
    return data.docs, data.corpus, {str(docs_cfg.source): data.stats}


TEST_SET_SPLIT = "test"
_DOCS_KEY = re.compile(r"(?<![\w/.-])docs\.(?=[a-z_]+\b)")


def _build_test_sets(
    cfg: DictConfig, tab: TabularList, entries: list, seen_codes: set[str]
) -> tuple[dict[str, list[Document]], dict[str, Any]]:
    """The test split of each ``cfg.test_sets`` entry, and its manifest section.

    A source that cannot load raises its own error, re-worded so that its ``docs.KEY``
    hints name the test set's keys (``test_sets.NAME.KEY``): the data stage runs
    before training, so a missing file stops the run before any GPU time is spent.
    """
    sets: dict[str, list[Document]] = {}
    manifest: dict[str, Any] = {}
    for name, docs_cfg in (cfg.get("test_sets") or {}).items():
        try:
            docs, _, stats = _build_documents(docs_cfg, Path(cfg.paths.cache_dir), tab, entries)
        except (OSError, ValueError, RuntimeError) as err:
            message = f"test_sets.{name} (docs={docs_cfg.name}): " + _DOCS_KEY.sub(f"test_sets.{name}.", str(err))
            try:
                renamed = type(err)(message)
            except TypeError:  # an exception type that takes other arguments: keep it as is
                renamed = None
            if renamed is None:
                raise
            raise renamed from err
        test = docs.get(TEST_SET_SPLIT) or []
        if not test:
            raise ValueError(f"test_sets.{name} (docs={docs_cfg.name}): its source has no "
                             f"{TEST_SET_SPLIT!r} documents")
        codes = {c for d in test for c in d.codes}
        sets[name] = test
        manifest[name] = {
            "docs": str(docs_cfg.name), "source": str(docs_cfg.source), "split": TEST_SET_SPLIT,
            "count": len(test), "spans": sum(len(d.spans) for d in test), "codes": len(codes),
            "seen": len(codes & seen_codes), "unseen": len(codes - seen_codes),
            "content_hash": hash_records(test), "stats": stats,
        }
    return sets, manifest


def _label_space(docs: dict[str, list[Document]], split: str) -> list[str]:
    return sorted({c for d in docs.get(split, []) for c in d.codes})


def build_data(cfg: DictConfig, run_dir: Path, console: Console, write: bool = True) -> DataBundle:
    """Build (or load from cache) documents and span tiers; write the manifest and records
    (unless ``write`` is false: a DDP rank > 0 reads the same data and leaves the files to rank 0)."""
    cache_dir = Path(cfg.paths.cache_dir)
    t0 = time.perf_counter()
    tab = load_tabular(cfg.icd.tabular_xml, cache_dir)
    tab_check = tab.check()
    for problem in tab_check["problems"]:  # a partial list: loaders stop on the labels it loses
        console.print(f"[bold yellow]Tabular List:[/] {problem}")
    entries, index_report = load_index_entries(cfg, tab, cache_dir, console)
    docs, corpus, doc_stats = _build_documents(cfg.docs, cache_dir, tab, entries)

    seen_codes = {c for d in docs.get("train", []) for c in d.codes}
    # Before the span tiers (the slow part): a test set that cannot load fails fast. Test
    # sets never shape the training data, so adding one keeps the data and train keys.
    test_sets, test_manifest = _build_test_sets(cfg, tab, entries, seen_codes)
    audit_settings, audit_report = None, {"enabled": False}
    if cfg.get("audit") is not None and cfg.audit.get("enabled"):
        # Contamination audit (ccl/data/audit.py): test documents against training-side ones;
        # with audit.drop the flagged training-side documents go before anything is mined.
        audit_settings = AuditSettings.from_config(cfg.audit)
        docs, corpus, audit_report = audit_documents(docs, corpus, test_sets, audit_settings)
        seen_codes = {c for d in docs.get("train", []) for c in d.codes}
        for name, info in test_manifest.items():
            codes = {c for d in test_sets[name] for c in d.codes}
            info["seen"], info["unseen"] = len(codes & seen_codes), len(codes - seen_codes)
    label_space = _label_space(docs, cfg.infer.split)

    # The span tiers (ccl/spans/tiers.py): spans.<tier>._target_, in order gold, silver,
    # synthetic; each sees the pairs of the tiers before it.
    spans, tier_reports = build_tiers(TierContext(cfg, tab, docs, corpus, cache_dir=cache_dir, entries=entries))

    if audit_settings is not None:
        spans, span_report = audit_spans(docs, test_sets, spans, audit_settings)
        audit_report.update(span_report)
        flagged = audit_report["document_pairs"] + audit_report["span_pairs_flagged"]
        if flagged:
            console.print(
                f"[bold yellow]contamination audit:[/] {audit_report['document_pairs']} near-duplicate "
                f"test/training document pairs, {audit_report['span_pairs_flagged']} span pairs copied "
                f"from test documents{' (dropped)' if audit_settings.drop else ''}; see data_manifest.json "
                "'audit' or python -m ccl.cli.audit"
            )

    manifest = {
        "prompt_version": PROMPT_VERSION,
        "tabular": {"year": tab.year, "source": str(tab.source), "content_hash": tab.content_hash(),
                    "codes": len(tab), "billable": len(tab.billable_codes()),
                    "chapters": tab_check["chapters"], "complete": tab_check["complete"],
                    "problems": tab_check["problems"]},
        "index": index_report,
        "documents": {
            split: {"count": len(ds), "spans": sum(len(d.spans) for d in ds),
                    "codes": len({c for d in ds for c in d.codes}), "content_hash": hash_records(ds)}
            for split, ds in docs.items()
        },
        "corpus": {"count": len(corpus), "content_hash": hash_records(corpus)},
        "documents_stats": doc_stats,
        "span_tiers": {
            name: {"pairs": len(pairs), "codes": len({p.code for p in pairs}),
                   "by_source": dict(Counter(p.source for p in pairs)),
                   "content_hash": hash_records(pairs), **tier_reports.get(name, {})}
            for name, pairs in spans.items()
        },
        "label_space": {"split": cfg.infer.split, "codes": len(label_space),
                        "seen": len(set(label_space) & seen_codes),
                        "unseen": len(set(label_space) - seen_codes)},
        "test_sets": test_manifest,
        "audit": audit_report,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    # The key covers content only (tabular, documents, pairs, prompts), never paths,
    # timings, where a file came from, which split is scored or which extra test sets are
    # loaded: a rerun of the same data must find the same key, or every later stage would
    # be redone (test sets are keyed in the predict stage).
    key = hash_obj({
        "prompt_version": PROMPT_VERSION,
        "tabular": tab.content_hash(),
        "documents": {split: info["content_hash"] for split, info in manifest["documents"].items()},
        "spans": {name: info["content_hash"] for name, info in manifest["span_tiers"].items()},
    })
    manifest["key"] = key

    bundle = DataBundle(tab, docs, corpus, spans, label_space, seen_codes, manifest, key, test_sets=test_sets)
    if not write:
        return bundle
    # Written into a fresh folder that then replaces data/: no file of an earlier config
    # (a tier or test set this one lacks) survives beside the new ones.
    # Documents by reference (source, id, codes, spans, text SHA-256); the note text only with
    # copy_notes=true, or logger.log_note_text=true (the W&B sample that opted in to note text
    # reads it from here): a run folder is no copy of credentialed notes unless asked.
    folder = RunFolder(run_dir)
    logger = cfg.get("logger") or {}
    with_text = bool(cfg.get("copy_notes", False)) or bool(logger.get("log_note_text", False))
    with atomic_dir(folder.data, replace=True) as tmp:
        for split, ds in docs.items():
            write_jsonl(tmp / folder.records(split).name, (document_reference(d, with_text) for d in ds))
        for name, pairs in spans.items():
            write_jsonl(tmp / folder.spans(name).name, pairs)
        for name, ds in test_sets.items():
            write_jsonl(tmp / RunFolder.TEST_SETS / folder.test_set_records(name).name,
                        (document_reference(d, with_text) for d in ds))
    write_json_atomic(folder.manifest, manifest)  # as every other run-folder file: whole or absent
    return bundle


def print_data_summary(bundle: DataBundle, console: Console) -> None:
    """A rich table of documents and span tiers."""
    table = Table(title="CCL data", show_lines=False)
    for col in ("part", "count", "codes", "spans / source", "hash"):
        table.add_column(col)
    for split, info in bundle.manifest["documents"].items():
        table.add_row(f"docs:{split}", str(info["count"]), str(info["codes"]), str(info["spans"]),
                      info["content_hash"])
    for name, info in bundle.manifest["span_tiers"].items():
        sources = ", ".join(f"{k} {v}" for k, v in sorted(info["by_source"].items()))
        table.add_row(f"spans:{name}", str(info["pairs"]), str(info["codes"]), sources, info["content_hash"])
    ls = bundle.manifest["label_space"]
    table.add_row("label space", str(ls["codes"]), f"seen {ls['seen']}", f"unseen {ls['unseen']}", "")
    for name, info in bundle.manifest.get("test_sets", {}).items():
        table.add_row(f"test set:{name}", str(info["count"]), str(info["codes"]),
                      f"{info['spans']} (seen {info['seen']}, unseen {info['unseen']})", info["content_hash"])
    console.print(table)
    idx = bundle.manifest["index"]
    if idx.get("fallback"):
        console.print("[yellow]No Alphabetic Index was used: gold pairs come from Tabular List terms only.[/]")
