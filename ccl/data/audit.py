"""Contamination audit: test documents against everything a model trains or mines from.

``python -m ccl.data.audit docs=NAME [overrides]`` builds the data of a run (as the data
stage does, in a temporary folder) and prints the report; the data stage writes the
same report into ``data_manifest.json`` under ``audit`` (``audit.enabled``).

Why: MDACE's test notes come from MIMIC-III, while silver pairs and the document-SFT
baseline use MIMIC-IV, whose years overlap MIMIC-III's; a test note that is also a
training note (or sits in the mining corpus, or was copied into a span tier) inflates
every score. No peer checks this.

Rules (settings in ``conf/audit/default.yaml``):

* Text is reduced to word shingles: lower-cased runs of letters and digits, in
  overlapping groups of ``audit.shingle`` words (5: "type 2 diabetes mellitus with").
* Documents: every *test* document (the splits other than ``train`` and ``val``, and
  every extra test set) is compared with every *training-side* document (``train``,
  ``val`` and the mining corpus) by MinHash LSH (``datasketch.MinHashLSH``,
  ``audit.num_perm`` permutations, Jaccard threshold ``audit.threshold``). LSH only
  proposes candidates; each is verified on the exact shingle sets, and a pair is
  reported when its exact Jaccard similarity reaches ``audit.threshold`` or the test
  document's shingles are at least ``audit.containment`` contained in the other (a
  test note inside a longer training admission).
* Span tiers: a pair's evidence of at least ``audit.min_span_words`` words is a
  copied passage when at least ``audit.containment`` of its shingles are in one test
  document (exact containment over an inverted shingle index). Shorter
  evidence is a phrase that any note may share, and is counted as not audited.
* ``audit.drop``: flagged training-side documents and span pairs are removed before
  training (test documents are never touched); what was dropped is reported.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ccl.cli_errors import cli_main
from ccl.config import AuditConfig, compose_config
from ccl.data.records import Document, SpanPair

_WORD = re.compile(r"[^\W_]+")
TRAIN_SIDE = ("train", "val")  # splits a model trains or selects on; the corpus is added to them
AUDIT_VERSION = 1


class AuditSettings(AuditConfig):
    """The knobs of ``conf/audit`` (see the module docstring), declared with their defaults
    once, in :class:`ccl.config.AuditConfig`; :meth:`from_config` checks their ranges."""

    @classmethod
    def from_config(cls, cfg: Any) -> AuditSettings:
        """From an ``audit`` config node (missing keys: the defaults); checks the ranges."""
        out = cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if getattr(cfg, k, None) is not None})
        if out.shingle < 1 or out.num_perm < 16:
            raise ValueError(f"audit.shingle={out.shingle} must be >= 1 and audit.num_perm={out.num_perm} >= 16")
        for key in ("threshold", "containment"):
            if not 0.0 < getattr(out, key) <= 1.0:
                raise ValueError(f"audit.{key}={getattr(out, key)} must be in (0, 1]")
        return out


def shingles(text: str, k: int) -> set[str]:
    """Word ``k``-grams of ``text`` (lower case, letters and digits); one gram for shorter text."""
    words = _WORD.findall(text.lower())
    if not words:
        return set()
    if len(words) < k:
        return {" ".join(words)}
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


class _Hasher:
    """MinHash signatures sharing one set of permutations (built once), datasketch's
    default SHA-1 shingle hash (CRC-32, twice as fast, is linear and biases the
    estimates: measured 0.41 for a true Jaccard of 0.33)."""

    def __init__(self, num_perm: int) -> None:
        from datasketch import MinHash

        self._cls = MinHash
        self._template = MinHash(num_perm=num_perm, seed=1)
        self.num_perm = num_perm

    def __call__(self, grams: Iterable[str]) -> Any:
        m = self._cls(num_perm=self.num_perm, seed=1, permutations=self._template.permutations,
                      scheme=self._template.scheme)
        m.update_batch([g.encode("utf-8") for g in grams])
        return m


def _pair(test: tuple[str, str, set[str]], other: tuple[str, str, set[str]]) -> dict[str, Any]:
    inter = len(test[2] & other[2])
    return {
        "test_part": test[0], "test_id": test[1], "other_part": other[0], "other_id": other[1],
        "jaccard": round(inter / len(test[2] | other[2]), 4),
        "test_contained": round(inter / len(test[2]), 4),
    }


def near_duplicate_documents(
    tests: Mapping[str, Sequence[Document]], others: Mapping[str, Sequence[Document]], s: AuditSettings
) -> list[dict[str, Any]]:
    """Pairs (test document, training-side document) over the thresholds, most similar first."""
    from datasketch import MinHashLSH

    hasher = _Hasher(s.num_perm)
    # The lower of the two thresholds finds the candidates of both tests.
    lsh = MinHashLSH(threshold=min(s.threshold, s.containment / 2), num_perm=s.num_perm)
    sides: dict[str, tuple[str, str, set[str]]] = {}
    for part, docs in others.items():
        for d in docs:
            grams = shingles(d.text, s.shingle)
            if grams:
                key = f"{part}\x00{d.id}"
                sides[key] = (part, d.id, grams)
                lsh.insert(key, hasher(grams), check_duplication=False)
    pairs = []
    for part, docs in tests.items():
        for d in docs:
            grams = shingles(d.text, s.shingle)
            if not grams:
                continue
            test = (part, d.id, grams)
            for key in lsh.query(hasher(grams)):
                pair = _pair(test, sides[key])
                if pair["jaccard"] >= s.threshold or pair["test_contained"] >= s.containment:
                    pairs.append(pair)
    return sorted(pairs, key=lambda p: (-p["jaccard"], -p["test_contained"], p["test_id"], p["other_id"]))


def copied_spans(
    tests: Mapping[str, Sequence[Document]], tiers: Mapping[str, Sequence[SpanPair]], s: AuditSettings
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Span pairs whose evidence is a passage of a test document; and per tier, pairs not audited.

    Exact containment from an inverted index (shingle -> test documents): a span's
    shingles are few, so counting their hits per test document is cheap and, unlike an
    LSH Ensemble query, never misses a copied passage (an approximate query missed a
    planted 20-word copy in the demo world).
    """
    docs: dict[str, tuple[str, str]] = {}
    index: dict[str, list[str]] = defaultdict(list)
    for part, group in tests.items():
        for d in group:
            key = f"{part}\x00{d.id}"
            docs[key] = (part, d.id)
            for gram in shingles(d.text, s.shingle):
                index[gram].append(key)
    short: Counter[str] = Counter()
    found = []
    if not docs:
        return found, short
    for tier, pairs in tiers.items():
        seen: set[str] = set()
        for i, p in enumerate(pairs):
            if len(_WORD.findall(p.evidence)) < s.min_span_words:
                short[tier] += 1
                continue
            if p.evidence in seen:
                continue
            seen.add(p.evidence)
            grams = shingles(p.evidence, s.shingle)
            if not grams:
                continue
            hits: Counter[str] = Counter(key for gram in grams for key in index.get(gram, ()))
            for key, n in hits.items():
                contained = n / len(grams)
                if contained >= s.containment:
                    part, doc_id = docs[key]
                    found.append({"tier": tier, "index": i, "evidence": p.evidence, "code": p.code,
                                  "test_part": part, "test_id": doc_id, "contained": round(contained, 4)})
    return sorted(found, key=lambda f: (-f["contained"], f["tier"], f["index"])), short


def test_groups(docs: Mapping[str, Sequence[Document]], test_sets: Mapping[str, Sequence[Document]]) -> dict[str, list[Document]]:
    """Held-out documents: every split other than train and val, and every extra test set."""
    out = {split: list(d) for split, d in docs.items() if split not in TRAIN_SIDE and d}
    out.update({f"test_set:{name}": list(d) for name, d in test_sets.items() if d})
    return out


def audit_documents(
    docs: dict[str, list[Document]], corpus: list[Document], test_sets: Mapping[str, Sequence[Document]],
    s: AuditSettings,
) -> tuple[dict[str, list[Document]], list[Document], dict[str, Any]]:
    """Documents and corpus (less flagged training-side documents with ``drop``), and the report."""
    tests = test_groups(docs, test_sets)
    others: dict[str, list[Document]] = {split: list(docs.get(split, [])) for split in TRAIN_SIDE}
    others["corpus"] = list(corpus)
    pairs = near_duplicate_documents(tests, others, s)
    report: dict[str, Any] = {
        "enabled": True,
        "version": AUDIT_VERSION,
        "settings": {k: getattr(s, k) for k in ("shingle", "threshold", "containment", "num_perm",
                                                  "min_span_words", "drop")},
        "compared": {"test": {k: len(v) for k, v in tests.items()}, "other": {k: len(v) for k, v in others.items()}},
        "document_pairs": len(pairs),
        "pairs_by_part": dict(Counter(f"{p['test_part']} ~ {p['other_part']}" for p in pairs)),
        "test_documents_flagged": len({(p["test_part"], p["test_id"]) for p in pairs}),
        "pairs": pairs[: s.max_listed],
    }
    if s.drop and pairs:
        flagged = {(p["other_part"], p["other_id"]) for p in pairs}
        kept = {split: [d for d in docs[split] if (split, d.id) not in flagged] if split in TRAIN_SIDE else docs[split]
                for split in docs}
        kept_corpus = [d for d in corpus if ("corpus", d.id) not in flagged]
        report["dropped"] = {split: len(docs[split]) - len(kept[split]) for split in TRAIN_SIDE if split in docs}
        report["dropped"]["corpus"] = len(corpus) - len(kept_corpus)
        return kept, kept_corpus, report
    return docs, corpus, report


def audit_spans(
    docs: Mapping[str, Sequence[Document]], test_sets: Mapping[str, Sequence[Document]],
    spans: dict[str, list[SpanPair]], s: AuditSettings,
) -> tuple[dict[str, list[SpanPair]], dict[str, Any]]:
    """Span tiers (less flagged pairs with ``drop``) and the span part of the report."""
    found, short = copied_spans(test_groups(docs, test_sets), spans, s)
    report: dict[str, Any] = {
        "span_pairs_flagged": len(found),
        "span_pairs_by_tier": dict(Counter(f["tier"] for f in found)),
        "span_pairs_too_short_to_audit": dict(short),
        "spans": found[: s.max_listed],
    }
    if s.drop and found:
        flagged = {(f["tier"], f["evidence"]) for f in found}
        kept = {tier: [p for p in pairs if (tier, p.evidence) not in flagged] for tier, pairs in spans.items()}
        report["dropped_span_pairs"] = {tier: len(spans[tier]) - len(kept[tier]) for tier in spans}
        return kept, report
    return spans, report


# -- command line ------------------------------------------------------------------------


def render(report: dict[str, Any], console: Console) -> None:
    """The audit as tables: settings, what was compared, pairs found, copied spans."""
    st = report["settings"]
    console.print(
        f"[bold]Contamination audit[/]: {st['shingle']}-word shingles, MinHash LSH {st['num_perm']} "
        f"permutations, Jaccard >= {st['threshold']} or test containment >= {st['containment']}"
    )
    console.print("compared: test " + ", ".join(f"{k} {v}" for k, v in report["compared"]["test"].items())
                  + " | against " + ", ".join(f"{k} {v}" for k, v in report["compared"]["other"].items()))
    console.print(f"near-duplicate document pairs: {report['document_pairs']} "
                  f"({report['test_documents_flagged']} test documents) {report['pairs_by_part'] or ''}")
    if report["pairs"]:
        table = Table(title="near-duplicate documents (most similar first)")
        for col in ("test", "other", "jaccard", "test contained"):
            table.add_column(col, justify="right" if col in ("jaccard", "test contained") else "left")
        for p in report["pairs"]:
            table.add_row(f"{p['test_part']}:{p['test_id']}", f"{p['other_part']}:{p['other_id']}",
                          f"{p['jaccard']:.3f}", f"{p['test_contained']:.3f}")
        console.print(table)
    if "span_pairs_flagged" in report:
        console.print(f"span pairs copied from test documents: {report['span_pairs_flagged']} "
                      f"{report['span_pairs_by_tier'] or ''}; shorter than {st['min_span_words']} words, "
                      f"not audited: {report['span_pairs_too_short_to_audit']}")
        for f in report["spans"][:10]:
            console.print(f"  {f['tier']}[{f['index']}] {f['code']}: {f['evidence'][:80]!r} in "
                          f"{f['test_part']}:{f['test_id']} ({f['contained']:.2f})")
    for key in ("dropped", "dropped_span_pairs"):
        if report.get(key):
            console.print(f"[yellow]{key.replace('_', ' ')}: {report[key]}[/]")


@cli_main("ccl.data.audit")
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compose the config from Hydra overrides (as ``ccl.data.stats``), build the data, print the audit.
    ``-h`` / ``--help`` prints the module's text."""
    # why: ccl.stages.data is a floor above (and imports this module): an upward arrow, kept lazy
    from ccl.stages.data import build_data

    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in overrides):  # Hydra overrides have no flags
        print(__doc__)
        return {}
    cfg = compose_config(["audit.enabled=true", *overrides])
    console = Console(width=None if sys.stdout.isatty() else 120)
    with tempfile.TemporaryDirectory() as run_dir:
        bundle = build_data(cfg, Path(run_dir), Console(quiet=True))
    report = bundle.manifest["audit"]
    render(report, console)
    return report


if __name__ == "__main__":
    main()
