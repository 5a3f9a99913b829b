"""A CPU-sized slice of a real source: a code subset and a cap on training documents.

``docs.code_pool`` (a list of ICD-10-CM codes; empty: every code) keeps, in every
split and the corpus, only the listed codes of each document and only the
evidence spans of those codes; a document left without a pool code is dropped
(the top-50 convention of MIMIC-III-50, Mullenbach et al. 2018: a restricted label
space keeps the documents that carry at least one of its codes). Because the test
label space is the test split's codes (:mod:`ccl.stages.data`), the pool is also
the label space that is scored.

``docs.max_train_docs`` (null: all) then keeps that many training documents,
a seeded pick (``docs.seed``) in their original order; val, test and the corpus
are not capped (``infer.limit`` bounds what is predicted).

Both are counted in ``stats["subset"]`` so the data manifest says what was cut.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from ccl.data.sources.common import option
from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList
from ccl.records import Document


def parse_pool(pool: Any, tab: TabularList) -> list[str]:
    """``docs.code_pool`` as canonical codes; a code the Tabular List lacks is an error.

    Raises ``ValueError`` naming ``docs.code_pool`` and the unknown codes.
    """
    codes, unknown = [], []
    for raw in pool or []:
        code = canonical_code(str(raw))
        if code not in tab:
            unknown.append(str(raw))
        elif code not in codes:
            codes.append(code)
    if unknown:
        raise ValueError(
            f"docs.code_pool: {', '.join(unknown)} not ICD-10-CM code(s) of the loaded Tabular List "
            f"({tab.year}); fix or remove them (empty list: every code)"
        )
    return codes


def _keep(doc: Document, pool: set[str]) -> Document:
    return replace(doc, codes=[c for c in doc.codes if c in pool],
                   spans=[s for s in doc.spans if s.code in pool])


def restrict_source(
    docs: dict[str, list[Document]], corpus: list[Document], cfg: Any, tab: TabularList
) -> tuple[dict[str, list[Document]], list[Document], dict[str, Any] | None]:
    """Apply ``docs.code_pool`` and ``docs.max_train_docs``; ``None`` stats when neither is set.

    Returns (documents by split, corpus, counts: pool size, documents before and kept per
    split (train also ``before_cap``: with a pool code, before the cap), code occurrences
    dropped). Raises ``ValueError`` for a bad pool code or a
    negative cap, and when the pool leaves the training split empty.
    """
    pool = parse_pool(option(cfg, "code_pool", []), tab)
    cap = option(cfg, "max_train_docs", None)
    if not pool and cap is None:
        return docs, corpus, None
    if cap is not None and int(cap) < 1:
        raise ValueError(f"docs.max_train_docs={cap}: give a positive number of training documents, or null for all")
    stats: dict[str, Any] = {"code_pool": len(pool), "max_train_docs": cap, "documents": {},
                             "code_occurrences_dropped": 0}
    out: dict[str, list[Document]] = {}
    for split, ds in [*docs.items(), ("corpus", corpus)]:
        kept = ds
        if pool:
            keep = set(pool)
            cut = [_keep(d, keep) for d in ds]
            stats["code_occurrences_dropped"] += sum(len(d.codes) for d in ds) - sum(len(d.codes) for d in cut)
            kept = [d for d in cut if d.codes]
        stats["documents"][split] = {"before": len(ds), "kept": len(kept)}
        out[split] = kept
    if pool and not out.get("train"):
        raise ValueError(f"docs.code_pool: none of its {len(pool)} codes occurs in a training document")
    if cap is not None and len(out.get("train", [])) > int(cap):
        ids = sorted(d.id for d in out["train"])
        chosen = set(random.Random(f"ccl-max-train:{int(option(cfg, 'seed', 13))}").sample(ids, int(cap)))
        out["train"] = [d for d in out["train"] if d.id in chosen]
        stats["documents"]["train"]["before_cap"] = len(ids)
        stats["documents"]["train"]["kept"] = len(out["train"])
    new_corpus = out.pop("corpus")
    return out, new_corpus, stats
