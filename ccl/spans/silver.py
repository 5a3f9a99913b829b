"""The silver span tier: evidence phrases mined from a code-labelled corpus.

Stage 1, per labelled document: extract verbatim minimal spans per code
(``method: llm``: the extraction prompt, answers kept only where the span
really occurs in the note, located fuzzily; ``method: lexical``: the
:class:`~ccl.spans.lexical.LexicalMiner`). Unique phrases are
aggregated per code with the number of documents and mentions they come from.

Stage 2, per code: the frequency-ranked candidates, minus phrases the code
already has in earlier tiers, are refined into a small representative set
(``llm``: the refinement prompt with the code's description, index terms and
existing evidence; answers outside the candidate list are ignored and a
malformed answer falls back to frequency order; ``lexical``: frequency order).

The tier is cached under ``cache_dir/silver/<hash>`` (pairs and report), the
LLM calls under ``cache_dir/llm/calls.sqlite``, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ccl.config import LLMConfig, SilverSpansConfig, llm_config
from ccl.generation.progress import track
from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList
from ccl.records import Document, SpanPair, phrase_key
from ccl.spans.lexical import LexicalMiner, locate
from ccl.spans.llm.base import (
    GenerationParams,
    Message,
    generation_settings,
    is_credentialed,
)
from ccl.spans.llm.cache import CachedLLM, tier_llm
from ccl.spans.llm.grammar import extraction_grammar, locate_copy, refinement_grammar
from ccl.spans.llm.parse import parse_code_spans, parse_string_list
from ccl.spans.tier_cache import open_entry, save_tier
from ccl.spans.tiers import TierContext, TierResult
from ccl.utils.atomic import write_text_atomic
from ccl.utils.hashing import hash_obj, hash_records

# Bump when mining or refinement changes, so cached tiers are rebuilt.
SILVER_VERSION = "2"  # 2: answers decoded under a grammar, spans located as copies
TIER = "silver"
MAX_SPAN_WORDS = 25
CORPUS_NAMES = ("demo_corpus", "corpus")

SYSTEM = "You are an expert clinical coder. You cite evidence exactly as it is written in the note."
EXTRACTION = """Below is a clinical note and the ICD-10-CM codes assigned to it.

For each code, copy the evidence from the note: the shortest verbatim phrases (usually 1 to 8 words) that show the \
condition was documented for this patient. Copy the words exactly as they are written, including abbreviations and \
spelling. Do not paraphrase or add words. Leave out mentions that are negated, ruled out, hypothetical or about family \
members. Give an empty list for a code without evidence.

Codes:
{codes}

Note:
<<<
{note}
>>>

Answer with one JSON object only, mapping each code to a list of strings, for example {example}"""
REFINEMENT = """You are curating evidence phrases for the ICD-10-CM code {code}: {description}.

Index and tabular terms for this code:
{terms}

Evidence phrases already collected for this code:
{existing}

Candidate phrases found in clinical notes, with the number of notes each came from:
{candidates}

Choose at most {k} candidate phrases that together represent how clinicians document this diagnosis: keep distinct \
wordings (abbreviations, synonyms, specific qualifiers), and drop near-duplicates, phrases that do not support this \
code, and phrases already collected. Copy the chosen phrases exactly. Answer with a JSON list of strings only."""


def extraction_prompt(
    note: str, codes: Sequence[str], describe: Callable[[str], str]
) -> list[Message]:
    """The stage-1 prompt: ``{code: [verbatim spans]}`` for the note's codes."""
    lines = "\n".join(f"- {c}: {describe(c)}" for c in codes)
    example = json.dumps({c: ["..."] for c in codes[:2]})
    user = EXTRACTION.format(codes=lines, note=note, example=example)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def refinement_prompt(
    code: str,
    description: str,
    terms: Sequence[str],
    existing: Sequence[str],
    candidates: Sequence[tuple[str, int]],
    k: int,
) -> list[Message]:
    """The stage-2 prompt: pick at most ``k`` representative phrases among the candidates."""

    def bullets(items: Sequence[str]) -> str:
        return "\n".join(f"- {t}" for t in items) or "- (none)"

    ranked = "\n".join(f"{i}. {json.dumps(p)} ({n})" for i, (p, n) in enumerate(candidates, 1))
    user = REFINEMENT.format(code=code, description=description, terms=bullets(terms),
                             existing=bullets(existing), candidates=ranked, k=k)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@dataclass
class Candidates:
    """Stage-1 output: per code, unique phrases with document and mention counts.

    ``by_code`` indexes the phrase keys of each code, so :meth:`ranked` reads one code's
    phrases only (not every ``(code, phrase)`` entry of the corpus)."""

    docs: Counter[tuple[str, str]] = field(default_factory=Counter)
    mentions: Counter[tuple[str, str]] = field(default_factory=Counter)
    surfaces: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    labelled_docs: Counter[str] = field(default_factory=Counter)
    evidence_docs: Counter[str] = field(default_factory=Counter)
    by_code: dict[str, dict[str, None]] = field(default_factory=dict)
    documents: int = 0
    documents_with_evidence: int = 0

    def add(self, codes: Sequence[str], spans: Mapping[str, Sequence[str]]) -> None:
        """Record one document: its labelled codes and the spans found per code."""
        self.documents += 1
        found = False
        for code in dict.fromkeys(codes):
            self.labelled_docs[code] += 1
            keys: set[str] = set()
            for span in spans.get(code, ()):
                key = phrase_key(span)
                if not key:
                    continue
                keys.add(key)
                self.mentions[code, key] += 1
                self.surfaces.setdefault((code, key), Counter())[" ".join(span.split())] += 1
                self.by_code.setdefault(code, {})[key] = None
            for key in keys:
                self.docs[code, key] += 1
            self.evidence_docs[code] += bool(keys)
            found = found or bool(keys)
        self.documents_with_evidence += found

    def codes(self) -> list[str]:
        return sorted(self.by_code)

    def ranked(self, code: str) -> list[tuple[str, str, int, int]]:
        """``(surface, key, documents, mentions)`` by documents, then mentions, then text."""
        rows = []
        for key in self.by_code.get(code, ()):
            surface = min(self.surfaces[code, key].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            rows.append((surface, key, self.docs[code, key], self.mentions[code, key]))
        return sorted(rows, key=lambda r: (-r[2], -r[3], r[1]))


@dataclass
class ParseCounts:
    """Malformed or unusable LLM answers, by kind (never fatal)."""

    counts: Counter[str] = field(default_factory=Counter)
    spans: Counter[str] = field(default_factory=Counter)  # spans answered / kept (the yield)

    def add(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] += n

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


# ------------------------------------------------------------------ stage 1


Found = list[tuple[str, dict[str, list[str]]]]  # (document id, {code: spans}) per document


def candidates_of(documents: Sequence[Document], found: Found) -> Candidates:
    """The candidates of ``documents`` (in their order) from their extracted spans, whichever
    worker (shard) extracted them. Raises ``KeyError`` naming a document without spans."""
    spans = dict(found)
    out = Candidates()
    for doc in documents:
        out.add(doc.codes, spans[doc.id])
    return out


def mine_lexical(
    documents: Sequence[Document], miner: LexicalMiner, progress: bool = False
) -> Found:
    """Stage 1 without an LLM: ``(document id, {code: spans})`` per document."""
    out: Found = []
    with track(len(documents), "silver: lexical mining", progress, show_hits=False) as bar:
        for doc in documents:
            out.append((doc.id, miner.extract(doc.text, doc.codes)))
            bar.advance()
    return out


def extract_with_llm(
    llm: CachedLLM,
    documents: Sequence[Document],
    describe: Callable[[str], str],
    params: GenerationParams,
    counts: ParseCounts,
    credentialed: bool,
    fuzzy_edits: int = 1,
) -> Found:
    """Stage 1 with an LLM: prompt (under :func:`extraction_grammar` when the backend decodes
    under a grammar), parse defensively, keep spans found in the note; returns ``(document id,
    {code: spans})`` per document. A span is located as a copy (exactly, else ignoring case
    and whitespace: :func:`locate_copy`), else fuzzily (``fuzzy_edits``), else dropped and
    counted (``spans_not_in_note``); ``counts.spans`` counts the spans answered and kept.
    """
    prompts = [extraction_prompt(d.text, d.codes, describe) for d in documents]
    grammars = [extraction_grammar(d.text, list(dict.fromkeys(d.codes))) for d in documents]
    answers = llm.complete(prompts, params, desc="silver: extract", credentialed=credentialed,
                           grammars=grammars)
    out: Found = []
    for doc, answer in zip(documents, answers, strict=True):
        parsed, lenient = parse_code_spans(answer)
        counts.add("lenient_answers", int(lenient))
        if parsed is None:
            counts.add("malformed_answers")
            out.append((doc.id, {}))
            continue
        labelled = set(doc.codes)
        spans: dict[str, list[str]] = {}
        for code, texts in parsed.items():
            if code not in labelled:
                counts.add("codes_not_labelled")
                continue
            for text in texts:
                counts.spans["answered"] += 1
                if len(text.split()) > MAX_SPAN_WORDS:
                    counts.add("spans_too_long")
                    continue
                where = locate_copy(text, doc.text) or locate(text, doc.text, fuzzy_edits)
                if where is None:
                    counts.add("spans_not_in_note")
                    continue
                spans.setdefault(code, []).append(doc.text[where[0] : where[1]])
        spans = drop_shared_spans(spans, counts)
        counts.spans["kept"] += sum(len(v) for v in spans.values())
        out.append((doc.id, spans))
    return out


def drop_shared_spans(spans: Mapping[str, Sequence[str]], counts: ParseCounts) -> dict[str, list[str]]:
    """``spans`` without the phrases one answer gives as evidence for two or more codes
    (``phrase_key`` equal): such a phrase ("noted", "history") tells the codes apart for none
    of them. Each dropped span is counted as ``spans_shared_by_codes``."""
    owners: dict[str, set[str]] = {}
    for code, texts in spans.items():
        for t in texts:
            owners.setdefault(phrase_key(t), set()).add(code)
    out: dict[str, list[str]] = {}
    for code, texts in spans.items():
        kept = [t for t in texts if len(owners[phrase_key(t)]) < 2]
        counts.add("spans_shared_by_codes", len(texts) - len(kept))
        if kept:
            out[code] = kept
    return out


# ------------------------------------------------------------------ stage 2


def refine_by_frequency(
    candidates: Candidates, existing: Mapping[str, set[str]], k: int | None
) -> dict[str, list[tuple[str, int, int]]]:
    """Stage 2 without an LLM: the ``k`` most frequent phrases not already in ``existing``."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for code in candidates.codes():
        have = existing.get(code, set())
        rows = [(s, d, m) for s, key, d, m in candidates.ranked(code) if key not in have]
        if rows:
            out[code] = rows[:k] if k is not None else rows
    return out


def refine_with_llm(
    llm: CachedLLM,
    tab: TabularList,
    candidates: Candidates,
    existing: Mapping[str, Sequence[str]],
    k: int | None,
    params: GenerationParams,
    counts: ParseCounts,
    max_candidates: int = 30,
    credentialed: bool = False,
) -> dict[str, list[tuple[str, int, int]]]:
    """Stage 2 with an LLM (answers under :func:`refinement_grammar`, a list of candidates,
    when the backend decodes under a grammar); codes whose answer is unusable fall back to
    frequency order.

    The candidates are copied from the notes, so ``credentialed`` follows the corpus.
    """
    keep = k if k is not None else max_candidates
    have = {c: {phrase_key(e) for e in ev} for c, ev in existing.items()}
    pools: dict[str, list[tuple[str, str, int, int]]] = {}
    for code in candidates.codes():
        rows = [r for r in candidates.ranked(code) if r[1] not in have.get(code, set())]
        if rows:
            pools[code] = rows[:max_candidates]
    codes = sorted(pools)
    prompts = [
        refinement_prompt(
            c, tab.description(c), [tab.description(c), *tab.inclusion_terms(c)],
            list(existing.get(c, ()))[:15], [(r[0], r[2]) for r in pools[c]], keep,
        )
        for c in codes
    ]
    grammars = [refinement_grammar([r[0] for r in pools[c]], keep) for c in codes]
    answers = llm.complete(prompts, params, desc="silver: refine", credentialed=credentialed,
                           grammars=grammars)
    out: dict[str, list[tuple[str, int, int]]] = {}
    for code, answer in zip(codes, answers, strict=True):
        by_key = {r[1]: r for r in pools[code]}
        chosen, lenient = parse_string_list(answer)
        counts.add("lenient_answers", int(lenient))
        picked: dict[str, tuple[str, int, int]] = {}
        for phrase in chosen or ():
            row = by_key.get(phrase_key(phrase))
            if row is None:
                counts.add("refined_not_a_candidate")
            elif len(picked) < keep:
                picked.setdefault(row[1], (row[0], row[2], row[3]))
        if not picked:
            counts.add("malformed_answers" if chosen is None else "refine_fallbacks")
            picked = {r[1]: (r[0], r[2], r[3]) for r in pools[code][:keep]}
        out[code] = list(picked.values())
    return out


# ------------------------------------------------------------------ the tier


def select_corpus(
    name: str, docs: Mapping[str, Sequence[Document]], corpus: Sequence[Document]
) -> list[Document]:
    """The labelled documents to mine: the run's corpus, or one document split by name."""
    if name in CORPUS_NAMES:
        return list(corpus)
    if name in docs:
        return list(docs[name])
    raise ValueError(
        f"spans.silver.corpus={name!r}: choose {' or '.join(CORPUS_NAMES)} (the code-labelled "
        f"corpus of the docs source) or a document split: {sorted(docs)}"
    )


def lexical_terms(
    tab: TabularList, pairs: Sequence[SpanPair], codes: Sequence[str]
) -> dict[str, list[str]]:
    """Per code: its earlier-tier evidence, Tabular description and inclusion terms."""
    wanted = set(codes)
    terms: dict[str, list[str]] = {c: [] for c in sorted(wanted)}
    for p in pairs:
        if p.code in wanted:
            terms[p.code].append(p.evidence)
    for code in terms:
        terms[code] += [tab.description(code), *tab.inclusion_terms(code)]
        terms[code] = [t for t in dict.fromkeys(terms[code]) if t]
    return terms


def _existing(spans: Mapping[str, Sequence[SpanPair]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pairs in spans.values():
        for p in pairs:
            out.setdefault(p.code, []).append(p.evidence)
    return out


@dataclass(frozen=True)
class Shard:
    """Which part of stage 1 this worker does: ``index`` of ``count`` (``None``: all of it;
    with ``count > 1`` the merge, which reads every shard's spans)."""

    count: int = 1
    index: int | None = None

    @property
    def extracts_only(self) -> bool:
        return self.count > 1 and self.index is not None

    def holds(self, doc_id: str) -> bool:
        """Whether note ``doc_id`` is in this shard (:func:`shard_of`)."""
        return self.index is None or shard_of(doc_id, self.count) == self.index


def shard_of(doc_id: str, count: int) -> int:
    """The shard of note ``doc_id`` among ``count``: the first 8 bytes of its SHA-256, as an
    unsigned big-endian integer, mod ``count`` (the same on every machine and Python)."""
    digest = hashlib.sha256(str(doc_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _setting(cfg: Any) -> tuple[str, str, int | None, Shard]:
    """(method, corpus, max pairs per code, shard) of ``cfg.spans.silver``; keys it lacks take
    the schema's defaults (:class:`ccl.config.SilverSpansConfig`). Raises ``ValueError`` (one
    line, naming the key) for an unknown method or a shard index outside ``0 .. count-1``."""
    silver = OmegaConf.merge(OmegaConf.structured(SilverSpansConfig), cfg.spans.silver)
    method = str(silver.method)
    if method not in ("lexical", "llm"):
        raise ValueError(f"spans.silver.method={method!r}: choose lexical or llm")
    k = silver.max_pairs_per_code
    count, index = int(silver.shard.count), silver.shard.index
    if count < 1:
        raise ValueError(f"spans.silver.shard.count={count}: give 1 (no sharding) or more workers")
    if index is not None and not 0 <= int(index) < count:
        raise ValueError(f"spans.silver.shard.index={index}: give 0 .. {count - 1} "
                         "(spans.silver.shard.count - 1), or null to merge the shards")
    shard = Shard(count, None if index is None or count == 1 else int(index))
    return method, str(silver.corpus), int(k) if k is not None else None, shard


def _tier_key(method: str, llm: LLMConfig, corpus_name: str, documents: Sequence[Document],
              spans: Mapping[str, Sequence[SpanPair]], tab: TabularList, k: int | None) -> str:
    relevant = {"fuzzy_edits": llm.fuzzy_edits, "max_documents": llm.max_documents}
    if method == "lexical":
        relevant["negation_window"] = llm.negation_window
    else:
        relevant.update(generation_settings(llm), max_candidates=llm.max_candidates,
                        structured=llm.structured)
    return hash_obj({
        "version": SILVER_VERSION, "method": method, "llm": relevant, "corpus": corpus_name,
        "documents": hash_records(documents), "tabular": tab.content_hash(), "k": k,
        "existing": {t: hash_records(p) for t, p in sorted(spans.items())},
    })


def shard_file(cache_dir: str | Path, key: str, shard: Shard) -> Path:
    """Where shard ``shard.index`` of tier entry ``key`` keeps its stage-1 spans:
    ``cache_dir/silver/shards/<key>/<index>-of-<count>.json`` (a filesystem every worker and
    the merge share)."""
    return Path(cache_dir) / TIER / "shards" / key / f"{shard.index}-of-{shard.count}.json"


def _load_shards(cache_dir: Path, key: str, count: int) -> list[dict[str, Any]]:
    """Every shard's stage-1 record; ``FileNotFoundError`` naming the shards not yet run."""
    files = [shard_file(cache_dir, key, Shard(count, i)) for i in range(count)]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"spans.silver.shard.count={count}: shard(s) {missing} have not run for this tier "
            f"(no {files[missing[0]]}); run them first, e.g. python -m ccl.cli.mine -m "
            f"spans.silver.shard.count={count} spans.silver.shard.index={','.join(map(str, missing))} "
            "with the same overrides"
        )
    return [json.loads(f.read_text()) for f in files]


def _stage1(ctx: TierContext, method: str, llm_cfg: LLMConfig, documents: Sequence[Document],
            existing: Mapping[str, Sequence[str]], counts: ParseCounts,
            credentialed: bool) -> tuple[Found, dict[str, Any]]:
    """Extract spans from ``documents``; returns them and what the extraction reports."""
    tab, spans = ctx.tab, ctx.spans
    if method == "lexical":
        labelled = sorted({c for d in documents for c in d.codes})
        miner = LexicalMiner(
            lexical_terms(tab, [p for ps in spans.values() for p in ps], labelled),
            fuzzy_edits=llm_cfg.fuzzy_edits, window=llm_cfg.negation_window,
        )
        found = mine_lexical(documents, miner, llm_cfg.progress)
        return found, {"skipped_mentions": {r: miner.skipped[r] for r in ("negated", "family")}}
    llm = tier_llm(llm_cfg, ctx.cache_dir, "spans.silver.method=llm", ctx.console)
    try:
        params = GenerationParams.from_config(llm_cfg)
        found = extract_with_llm(llm, documents, tab.description, params, counts,
                                 credentialed, llm_cfg.fuzzy_edits)
    finally:
        llm.close()
    return found, {"llm_calls": llm.stats.to_dict()}


def _sum_calls(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total: Counter[str] = Counter()
    for r in records:
        total.update(r)
    return {k: round(v, 2) for k, v in sorted(total.items())}


def build(ctx: TierContext) -> TierResult:
    """The registered silver tier (``spans.silver._target_``): build it, or load it from
    ``cache_dir/silver/<hash>``; its settings are ``ctx.cfg.spans.silver`` and ``ctx.cfg.llm``.

    With ``spans.silver.shard.count > 1``: a worker with ``shard.index`` extracts only its
    notes (:func:`shard_of`) into :func:`shard_file` and returns no pairs; the merge
    (``index`` null) reads every shard's spans, refines once and caches the tier, the same
    pairs as one worker's run (stage 2 sees the same candidates, in corpus order). Raises
    ``FileNotFoundError`` at the merge when a shard has not run."""
    cfg, tab, spans, cache_dir = ctx.cfg, ctx.tab, ctx.spans, ctx.cache_dir
    method, corpus_name, k, shard = _setting(cfg)
    llm_cfg = llm_config(cfg)
    documents = [d for d in select_corpus(corpus_name, ctx.docs, ctx.corpus) if d.codes]
    if llm_cfg.max_documents is not None:
        documents = documents[: llm_cfg.max_documents]
    key = _tier_key(method, llm_cfg, corpus_name, documents, spans, tab, k)
    existing = _existing(spans)
    credentialed = is_credentialed(cfg.docs.get("source")) or any(
        is_credentialed(d.source) for d in documents
    )
    if shard.extracts_only:
        return _extract_shard(ctx, key, shard, method, llm_cfg, documents, existing, credentialed)
    folder, cached = open_entry(cache_dir, TIER, key)
    if cached is not None:
        return cached

    start = time.perf_counter()
    counts = ParseCounts()
    report: dict[str, Any] = {
        "silver_version": SILVER_VERSION,
        "method": method,
        "corpus": corpus_name,
    }
    if shard.count > 1:
        records = _load_shards(cache_dir, key, shard.count)
        found = [(doc_id, sp) for r in records for doc_id, sp in r["found"]]
        for r in records:
            for kind, n in r["parse"].items():
                counts.add(kind, n)
            counts.spans.update(r.get("spans", {}))
        extraction: dict[str, Any] = {"shards": shard.count}
        if method == "lexical":
            extraction["skipped_mentions"] = _sum_calls([r["skipped_mentions"] for r in records])
        else:
            extraction["extraction_calls"] = _sum_calls([r["llm_calls"] for r in records])
    else:
        found, extraction = _stage1(ctx, method, llm_cfg, documents, existing, counts, credentialed)
        if method == "llm":
            extraction = {"extraction_calls": extraction["llm_calls"]}
    cands = candidates_of(documents, found)
    report.update(extraction)
    if method == "lexical":
        have = {c: {phrase_key(e) for e in ev} for c, ev in existing.items()}
        chosen = refine_by_frequency(cands, have, k)
        source = "silver:lexical"
    else:
        llm = tier_llm(llm_cfg, cache_dir, "spans.silver.method=llm", ctx.console)
        try:
            params = GenerationParams.from_config(llm_cfg)
            chosen = refine_with_llm(llm, tab, cands, existing, k, params, counts,
                                     llm_cfg.max_candidates, credentialed)
        finally:
            llm.close()
        refinement = llm.stats.to_dict()
        report.update(backend=llm_cfg.backend, model=llm_cfg.model, structured=llm_cfg.structured,
                      refinement_calls=refinement,
                      llm_calls=_sum_calls([report["extraction_calls"], refinement]))
        source = f"silver:llm:{llm_cfg.backend}"
    pairs = [
        SpanPair(s, canonical_code(code), TIER, source)
        for code in sorted(chosen)
        for s, _, _ in chosen[code]
    ]
    seconds = time.perf_counter() - start
    covered_before = set(existing)
    parse = counts.to_dict()
    report.update(
        documents=len(documents),
        documents_with_evidence=cands.documents_with_evidence,
        codes_labelled=len(cands.labelled_docs),
        codes_with_candidates=len(cands.codes()),
        candidates=len(cands.docs),
        pairs=len(pairs),
        codes=len({p.code for p in pairs}),
        new_codes=len({p.code for p in pairs} - covered_before),
        parse=parse,
        seconds=round(seconds, 2),
        seconds_per_document=round(seconds / len(documents), 5) if documents else 0.0,
        per_code={
            code: {"labelled_docs": cands.labelled_docs[code], "evidence_docs": cands.evidence_docs[code],
                   "kept": [[s, d, m] for s, d, m in chosen.get(code, [])]}
            for code in sorted(cands.labelled_docs)
        },
    )
    if method == "llm":
        report["yield"] = silver_yield(report, parse, counts.spans)
    save_tier(folder, pairs, report)
    return TierResult(pairs, report)


def silver_yield(report: Mapping[str, Any], parse: Mapping[str, int],
                 spans: Mapping[str, int]) -> dict[str, Any]:
    """What the LLM calls gave: calls made, spans answered and kept (``spans``), candidates,
    pairs, and what was dropped on the way and why (``parse``: :class:`ParseCounts` kinds)."""
    calls = [report.get("extraction_calls", {}), report.get("refinement_calls", {})]
    return {
        "calls": sum(int(c.get("unique", 0)) for c in calls),
        "calls_generated": sum(int(c.get("generated", 0)) for c in calls),
        "spans_answered": spans.get("answered", 0),
        "spans_kept": spans.get("kept", 0),
        "candidates": report.get("candidates", 0),
        "pairs": report.get("pairs", 0),
        "dropped": {kind: n for kind, n in parse.items() if kind != "lenient_answers"},
        "lenient_answers": parse.get("lenient_answers", 0),
    }


def _extract_shard(ctx: TierContext, key: str, shard: Shard, method: str, llm_cfg: LLMConfig,
                   documents: Sequence[Document], existing: Mapping[str, Sequence[str]],
                   credentialed: bool) -> TierResult:
    """Stage 1 over this worker's notes into :func:`shard_file` (kept: a rerun resumes)."""
    path = shard_file(ctx.cache_dir, key, shard)
    mine = [d for d in documents if shard.holds(d.id)]
    info: dict[str, Any] = {"silver_version": SILVER_VERSION, "method": method,
                            "shard": {"index": shard.index, "count": shard.count},
                            "documents": len(mine), "shard_file": str(path),
                            "pairs": 0, "status": "stage 1 only; the merge (shard.index=null) refines"}
    if path.is_file():
        return TierResult([], {**info, "resumed": True})
    start = time.perf_counter()
    counts = ParseCounts()
    found, extraction = _stage1(ctx, method, llm_cfg, mine, existing, counts, credentialed)
    record = {"found": found, "parse": counts.to_dict(), "spans": dict(counts.spans), "documents": len(mine),
              "llm_calls": extraction.get("llm_calls", {}),
              "skipped_mentions": extraction.get("skipped_mentions", {}),
              "seconds": round(time.perf_counter() - start, 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, sort_keys=True))
    return TierResult([], {**info, "parse": record["parse"], "llm_calls": record["llm_calls"]})
