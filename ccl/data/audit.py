"""Contamination audit: test documents against everything a model trains or mines from.

The data stage writes the report into ``data_manifest.json`` under ``audit``
(``audit.enabled``); ``python -m ccl.cli.audit docs=NAME [overrides]``
(:mod:`ccl.cli.audit`) builds the data of a run in a temporary folder and prints it.

Why: MDACE's test notes come from MIMIC-III, while silver pairs and the document-SFT
baseline use MIMIC-IV, whose years overlap MIMIC-III's; a test note that is also a
training note (or sits in the mining corpus, or was copied into a span tier) inflates
every score. No peer checks this.

Rules (settings in ``conf/audit/default.yaml``):

* Text is reduced to word shingles: lower-cased runs of letters and digits, in
  overlapping groups of ``audit.shingle`` words (5: "type 2 diabetes mellitus with").
* Text is hashed, not kept: each shingle is a 64-bit hash (:class:`ShingleHasher`),
  8 bytes instead of a Python string, and no training-side shingle set is held.
* Documents: every *test* document (the splits other than ``train`` and ``val``, and
  every extra test set) is compared with every *training-side* document (``train``,
  ``val`` and the mining corpus; a corpus document that is a training document, as in
  ``docs=mimic4``, is compared once). A pair is reported when its Jaccard similarity
  reaches ``audit.threshold`` or at least ``audit.containment`` of the test document's
  shingles are in the other text (a test note inside a longer training admission, of
  any length). Both imply containment >= ``min(threshold, containment)``, which is
  what is searched: each test document's bottom-``audit.num_perm`` MinHash sketch is
  indexed, each training-side text is streamed once against it, and the candidates are
  verified on the exact hash sets (:func:`near_duplicate_documents`).
* Span tiers: a pair's evidence of at least ``audit.min_span_words`` words is a
  copied passage when at least ``audit.containment`` of its shingles are in one test
  document (exact containment over a shingle-hash index of the test documents).
  Shorter evidence is a phrase that any note may share, and is counted as not audited;
  gold pairs taken from the ICD books (Tabular List, Alphabetic Index) are the books'
  own text, which a test note may quote, and are counted apart, never flagged.
* ``audit.drop``: flagged training-side documents and span pairs are removed before
  training (test documents are never touched); what was dropped is reported.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ccl.config import AuditConfig
from ccl.data.pairs import SOURCE_PRIORITY as BOOK_SOURCES
from ccl.records import Document, SpanPair

_WORD = re.compile(r"[^\W_]+")
TRAIN_SIDE = ("train", "val")  # splits a model trains or selects on; the corpus is added to them
AUDIT_VERSION = 2


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


_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014) over a uint64 array: a bijective mix."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_MASK64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class ShingleHasher:
    """64-bit hashes of a text's word ``k``-shingles (the grams of :func:`shingles`), as a
    sorted array of unique ``uint64``: 8 bytes a shingle instead of a Python string.

    Each word is hashed once (BLAKE2b, 8 bytes, cached by word); a shingle's hash is the
    SplitMix64 mix of its words' hashes weighted by position (a rolling polynomial hash, as
    near-duplicate pipelines hash n-grams), so equal shingles get equal hashes and distinct
    ones collide with probability about 2**-64. Deterministic across processes.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._words: dict[str, int] = {}
        mult = _splitmix64(np.arange(1, k + 1, dtype=np.uint64)) | np.uint64(1)
        self._mult = mult  # one odd multiplier per position in the shingle

    def _word(self, w: str) -> int:
        h = self._words.get(w)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
            if len(self._words) < 2_000_000:  # bounded: a corpus of odd tokens cannot grow it forever
                self._words[w] = h
        return h

    def __call__(self, text: str) -> np.ndarray:
        """Sorted unique shingle hashes of ``text`` (``uint64``, shape ``(n,)``; empty for no words)."""
        words = _WORD.findall(text.lower())
        if not words:
            return np.empty(0, dtype=np.uint64)
        w = np.fromiter((self._word(x) for x in words), dtype=np.uint64, count=len(words))
        k = min(self.k, len(w))  # a text shorter than k words is one gram
        acc = np.zeros(len(w) - k + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):
                acc += w[j : len(w) - k + 1 + j] * self._mult[j]
            return np.unique(_splitmix64(acc))


def _sketch(hashes: np.ndarray, size: int) -> np.ndarray:
    """The bottom-``size`` MinHash sketch of a set (Cohen & Kaplan 2007; Broder 1997): its
    ``size`` smallest hashes, a uniform sample of the set drawn by one random permutation.
    ``hashes`` is sorted, so they are its first ``size`` entries (all of a smaller set)."""
    return hashes[:size]


class _TestIndex:
    """Every test document's shingle hashes (CSR) and, hash -> test documents (postings)."""

    def __init__(self, tests: Mapping[str, Sequence[Document]], hasher: ShingleHasher) -> None:
        self.keys: list[tuple[str, str]] = []
        arrays: list[np.ndarray] = []
        for part, docs in tests.items():
            for d in docs:
                h = hasher(d.text)
                if len(h):
                    self.keys.append((part, d.id))
                    arrays.append(h)
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.uint64)
        del arrays

    def hashes(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.keys)

    def postings(self, per_doc: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(hashes, docs)`` sorted by hash: every hash of each test document, or with
        ``per_doc`` only its bottom-``per_doc`` sketch."""
        if per_doc is None:
            flat, lengths = self.flat, np.diff(self.offsets)
        else:
            parts = [_sketch(self.hashes(i), per_doc) for i in range(len(self))]
            lengths = np.array([len(p) for p in parts], dtype=np.int64)
            flat = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
        docs = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        order = np.argsort(flat, kind="stable")
        return flat[order], docs[order]


def _candidate_floor(sample: np.ndarray, share: float) -> np.ndarray:
    """Per test document with a sketch of ``sample`` hashes: the fewest sketch hashes a text must
    hold to be verified. A text holding ``share`` of the document's shingles holds on average
    ``share`` of the sketch; four binomial standard deviations below that keeps misses below
    about 3 in 100,000 while false candidates stay rare (each is verified exactly)."""
    sd = np.sqrt(share * (1 - share) / np.maximum(sample, 1))
    return np.maximum(1, np.floor(sample * (share - 4 * sd))).astype(np.int64)


def _ranges(sorted_hashes: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.searchsorted(sorted_hashes, query, side="left"),
            np.searchsorted(sorted_hashes, query, side="right"))


def _pair(test_key: tuple[str, str], test: np.ndarray, other_key: tuple[str, str],
          other: np.ndarray) -> dict[str, Any]:
    inter = len(np.intersect1d(test, other, assume_unique=True))
    return {
        "test_part": test_key[0], "test_id": test_key[1], "other_part": other_key[0], "other_id": other_key[1],
        "jaccard": round(inter / (len(test) + len(other) - inter), 4),
        "test_contained": round(inter / len(test), 4),
    }


def _training_side(
    others: Mapping[str, Sequence[Document]],
) -> tuple[list[tuple[str, Document]], dict[tuple[str, str], tuple[str, str]]]:
    """Training-side documents to compare, each once: a corpus document that is a training or
    validation document (``docs=mimic4`` mines its own training split) is compared as the
    latter; returns the documents and ``(corpus, id) -> (split, id)`` for those aliases."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    by_object: dict[int, tuple[str, str]] = {}
    out: list[tuple[str, Document]] = []
    alias: dict[tuple[str, str], tuple[str, str]] = {}
    for part, docs in others.items():
        for d in docs:
            same = by_object.get(id(d)) or seen.get((d.id, _text_key(d.text)))
            if same is not None and same[0] != part:
                alias[(part, d.id)] = same
                continue
            key = (part, d.id)
            by_object[id(d)] = key
            seen[(d.id, _text_key(d.text))] = key
            out.append((part, d))
    return out, alias


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def near_duplicate_documents(
    tests: Mapping[str, Sequence[Document]], others: Mapping[str, Sequence[Document]], s: AuditSettings
) -> list[dict[str, Any]]:
    """Pairs (test document, training-side document) over the thresholds, most similar first.

    Containment search, not a Jaccard search: Jaccard >= ``t`` implies that at least ``t``
    of the test document's shingles are in the other text, so both tests need the pairs
    whose containment reaches ``min(threshold, containment)``. Each test document's
    bottom-``num_perm`` MinHash sketch (a uniform sample of its shingles) is indexed;
    every training-side text is streamed once, its shingle hashes looked up in that index,
    and a test document whose sketch it holds enough of (:func:`_candidate_floor`) is
    verified on the exact hash sets. Memory: the test side's hashes (8 bytes a shingle)
    and one training text at a time, however long the training side is; a short test note
    inside a long admission is found whatever the length ratio.
    """
    report = _near_duplicates(tests, others, s)
    return report[0]


def _near_duplicates(
    tests: Mapping[str, Sequence[Document]], others: Mapping[str, Sequence[Document]], s: AuditSettings
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], tuple[str, str]]]:
    hasher = ShingleHasher(s.shingle)
    index = _TestIndex(tests, hasher)
    side, alias = _training_side(others)
    pairs: list[dict[str, Any]] = []
    if not len(index):
        return pairs, alias
    sample_h, sample_doc = index.postings(per_doc=s.num_perm)
    sizes = np.minimum(np.diff(index.offsets), s.num_perm)
    floor = _candidate_floor(sizes, min(s.threshold, s.containment))
    for part, d in side:
        h = hasher(d.text)
        if not len(h):
            continue
        lo, hi = _ranges(sample_h, h)
        hit = hi > lo
        if not hit.any():
            continue
        docs = np.concatenate([sample_doc[a:b] for a, b in zip(lo[hit], hi[hit], strict=True)])
        cand, counts = np.unique(docs, return_counts=True)
        for i in cand[counts >= floor[cand]]:
            pair = _pair(index.keys[i], index.hashes(i), (part, d.id), h)
            if pair["jaccard"] >= s.threshold or pair["test_contained"] >= s.containment:
                pairs.append(pair)
    pairs.sort(key=lambda p: (-p["jaccard"], -p["test_contained"], p["test_id"], p["other_id"]))
    return pairs, alias


def copied_spans(
    tests: Mapping[str, Sequence[Document]], tiers: Mapping[str, Sequence[SpanPair]], s: AuditSettings
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    """Span pairs whose evidence is a passage of a test document; per tier, the pairs not
    audited because they are short; per tier, the pairs whose evidence is the ICD books' own
    text (gold pairs from the Tabular List or the Alphabetic Index: a test note that quotes a
    Tabular description did not leak into the books).

    Exact containment (up to 64-bit hash collisions) over the test documents' shingle
    hashes: a span's few shingles are looked up in a hash -> test documents index; only
    documents holding one of its rarest ``g - need + 1`` shingles can hold ``need`` of them
    (prefix filtering, as in set-similarity joins), and each such document is counted
    exactly. Unlike an LSH Ensemble query, this never misses a copied passage (an
    approximate query missed a planted 20-word copy in the demo world).
    """
    short: Counter[str] = Counter()
    book: Counter[str] = Counter()
    found: list[dict[str, Any]] = []
    hasher = ShingleHasher(s.shingle)
    index = _TestIndex(tests, hasher)
    if not len(index):
        return found, short, book
    post_h, post_doc = index.postings()
    for tier, pairs in tiers.items():
        seen: set[str] = set()
        for i, p in enumerate(pairs):
            if p.source in BOOK_SOURCES:
                book[tier] += 1
                continue
            if len(_WORD.findall(p.evidence)) < s.min_span_words:
                short[tier] += 1
                continue
            if p.evidence in seen:
                continue
            seen.add(p.evidence)
            grams = hasher(p.evidence)
            if not len(grams):
                continue
            need = max(1, math.ceil(s.containment * len(grams) - 1e-9))
            lo, hi = _ranges(post_h, grams)
            rare = np.argsort(hi - lo, kind="stable")[: len(grams) - need + 1]
            if not (hi[rare] > lo[rare]).any():
                continue
            cand = np.unique(np.concatenate([post_doc[lo[j] : hi[j]] for j in rare]))
            for c in cand:
                doc = index.hashes(int(c))
                pos = np.searchsorted(doc, grams)
                n = int(np.count_nonzero(doc[np.minimum(pos, len(doc) - 1)] == grams))
                contained = n / len(grams)
                if contained >= s.containment:
                    part, doc_id = index.keys[int(c)]
                    found.append({"tier": tier, "index": i, "evidence": p.evidence, "code": p.code,
                                  "test_part": part, "test_id": doc_id, "contained": round(contained, 4)})
    return sorted(found, key=lambda f: (-f["contained"], f["tier"], f["index"])), short, book


def test_groups(
    docs: Mapping[str, Sequence[Document]], test_sets: Mapping[str, Sequence[Document]]
) -> dict[str, list[Document]]:
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
    pairs, alias = _near_duplicates(tests, others, s)
    report: dict[str, Any] = {
        "enabled": True,
        "version": AUDIT_VERSION,
        "settings": {k: getattr(s, k) for k in ("shingle", "threshold", "containment", "num_perm",
                                                  "min_span_words", "drop")},
        "compared": {"test": {k: len(v) for k, v in tests.items()}, "other": {k: len(v) for k, v in others.items()}},
        # corpus documents that are training/validation documents, compared once as those
        "corpus_also_training": sum(1 for part, _ in alias if part == "corpus"),
        "document_pairs": len(pairs),
        "pairs_by_part": dict(Counter(f"{p['test_part']} ~ {p['other_part']}" for p in pairs)),
        "test_documents_flagged": len({(p["test_part"], p["test_id"]) for p in pairs}),
        "pairs": pairs[: s.max_listed],
    }
    if s.drop and pairs:
        flagged = {(p["other_part"], p["other_id"]) for p in pairs}
        flagged |= {key for key, same in alias.items() if same in flagged}
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
    found, short, book = copied_spans(test_groups(docs, test_sets), spans, s)
    flagged_pairs = {(f["tier"], f["index"]) for f in found}
    report: dict[str, Any] = {
        # distinct pairs (a pair copied from a sentence many test notes share is one pair, as
        # test_documents_flagged counts documents), then the (pair, test note) matches
        "span_pairs_flagged": len(flagged_pairs),
        "span_pairs_by_tier": dict(Counter(tier for tier, _ in flagged_pairs)),
        "span_pair_matches": len(found),
        "span_pairs_too_short_to_audit": dict(short),
        "span_pairs_book_text": dict(book),
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
        f"[bold]Contamination audit[/]: {st['shingle']}-word shingles, bottom-{st['num_perm']} "
        f"MinHash sketches, Jaccard >= {st['threshold']} or test containment >= {st['containment']}"
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
                      f"not audited: {report['span_pairs_too_short_to_audit']}; ICD book text, not audited: "
                      f"{report.get('span_pairs_book_text', {})}")
        for f in report["spans"][:10]:
            console.print(f"  {f['tier']}[{f['index']}] {f['code']}: {f['evidence'][:80]!r} in "
                          f"{f['test_part']}:{f['test_id']} ({f['contained']:.2f})")
    for key in ("dropped", "dropped_span_pairs"):
        if report.get(key):
            console.print(f"[yellow]{key.replace('_', ' ')}: {report[key]}[/]")
