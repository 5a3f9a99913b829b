"""The synthetic span tier: evidence for codes that no earlier tier covers.

For each billable target code without pairs, the nearest covered codes in the
hierarchy (as :func:`ccl.icd.nearest.nearest_covered` ranks them) lend their evidence:

* ``template`` (no LLM): a word-level diff of the two Tabular descriptions
  gives the descriptors in which the codes differ (laterality, episode of care,
  type, with/without, acute/chronic, stage ...); each difference is applied to
  the neighbour's evidence where its words occur there, inserted next to an
  anchor word otherwise, and a differing trailing clause is appended. With no
  usable neighbour the target's own description words are the evidence.
* ``llm``: the LLM writes evidence for the target from the neighbour's
  description and evidence and the target's description (synthesis prompt);
  when its answer yields nothing usable, the template result is used.

Filters: no ICD-10-CM code strings inside the evidence, 2 to 25 words, no
duplicates, never identical to the neighbour's evidence (nor to evidence that
an earlier tier gives another code). The tier is cached under
``cache_dir/synthetic/<hash>`` with a ``provenance.jsonl`` naming the neighbour
behind every pair.
"""

from __future__ import annotations

import functools
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from omegaconf import OmegaConf

from ccl.config import LLMConfig, SyntheticSpansConfig, llm_config
from ccl.generation.progress import track
from ccl.icd.codes import CODE_PATTERN, canonical_code
from ccl.icd.nearest import hierarchy_levels
from ccl.icd.tabular import TabularList
from ccl.icd.terms import strip_modifiers
from ccl.records import EDGE_PUNCT, Document, SpanPair, phrase_key
from ccl.spans.llm.base import (
    GenerationParams,
    Message,
    generation_settings,
    is_credentialed,
)
from ccl.spans.llm.cache import CachedLLM, tier_llm
from ccl.spans.llm.parse import parse_string_list
from ccl.spans.tier_cache import open_entry, save_tier
from ccl.spans.tiers import TierContext, TierResult
from ccl.utils.hashing import hash_obj, hash_records

# Bump when synthesis or filtering changes, so cached tiers are rebuilt.
SYNTHETIC_VERSION = "1"
TIER = "synthetic"
MIN_WORDS, MAX_WORDS = 2, 25
NEIGHBOUR_EVIDENCE = 8  # evidence phrases of one neighbour tried (or shown to the LLM)
TARGETS = ("docs", "all")

_TOKEN = re.compile(r"[\w]+(?:['\-][\w]+)*|[^\w\s]")
VAGUE = frozenset({"unspecified", "other", "nos", "nec", "not", "elsewhere", "classified"})
# Nouns that only say which axis is unspecified ("stage unspecified", "unspecified site").
QUALIFIER_NOUNS = frozenset({"stage", "site", "type", "part", "severity", "organism", "grade",
                             "laterality", "side", "episode", "encounter", "region"})
FUNCTION = frozenset(
    {"of", "the", "a", "an", "and", "in", "to", "for", "on", "by", "at", ",", "due"}
)

SYSTEM = "You are an expert clinical coder who writes realistic clinical documentation."
SYNTHESIS = """ICD-10-CM code {target} has no example evidence yet.

Target code {target}: {target_description}

The closest code with examples is {neighbour}: {neighbour_description}
Evidence phrases written for {neighbour}:
{evidence}

Write up to {k} short evidence phrases (2 to 25 words each) that a clinician could write in a note to document \
{target}. Keep the style of the examples, and change exactly what distinguishes the target from {neighbour} (for \
example laterality, episode of care, type, stage, with or without a complication). Never write ICD-10-CM codes. Answer \
with a JSON list of strings only."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(strip_modifiers(text))


def _join(tokens: Sequence[str]) -> str:
    return re.sub(r"\s+([,;:.])", r"\1", " ".join(tokens)).strip()


@functools.lru_cache(maxsize=65_536)
def _phrase_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    body = r"\s*".join(re.escape(w) if not w.isalnum() else re.escape(w) + r"\b" for w in words)
    return re.compile(r"(?<![\w-])" + body, re.IGNORECASE)


def _content(words: Sequence[str]) -> list[str]:
    return [w for w in words if w.lower() not in FUNCTION]


def _is_vague(words: Sequence[str]) -> bool:
    content = _content(words)
    return not content or all(w.lower() in VAGUE for w in content)


@dataclass(frozen=True)
class Change:
    """One difference between two descriptions: ``old`` words become ``new`` words."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    before: str | None  # the neighbour-description word right before the change
    after: str | None  # ... and right after it
    clause: tuple[str, ...]  # the target-description comma clause holding the change
    first_clause: bool  # the change sits in the target description's first clause
    at_clause_end: bool  # nothing of that clause follows the change


def _anchor(words: Iterable[str]) -> str | None:
    """The first content word before a comma: a place to attach a change in the same clause."""
    for w in words:
        if w == ",":
            return None
        if w.isalnum() and w.lower() not in FUNCTION:
            return w
    return None


def description_changes(neighbour_description: str, target_description: str) -> list[Change]:
    """The word-level diff from the neighbour's description to the target's."""
    a, b = _tokens(neighbour_description), _tokens(target_description)
    if b and b[0][:1].isupper() and b[0][1:].islower():
        b[0] = b[0].lower()  # only sentence case: inserted mid-phrase it would read oddly
    ops = SequenceMatcher(None, [w.lower() for w in a], [w.lower() for w in b], autojunk=False)
    commas = [i for i, w in enumerate(b) if w == ","]
    changes = []
    for tag, i1, i2, j1, j2 in ops.get_opcodes():
        if tag == "equal":
            continue
        lo = max((c + 1 for c in commas if c < max(j1, 1)), default=0)
        if j1 < len(b) and b[j1] == ",":  # the change opens a new clause
            lo = j1 + 1
        hi = min((c for c in commas if c >= j2), default=len(b))
        clause = tuple(b[lo:hi])
        before, after = _anchor(reversed(a[:i1])), _anchor(a[i2:])
        changes.append(Change(tuple(a[i1:i2]), tuple(b[j1:j2]), before, after, clause,
                              lo == 0, j2 >= hi))
    return changes


def _sub_once(pattern: re.Pattern[str], text: str, replacement: str) -> str:
    return pattern.sub(lambda _: replacement, text, count=1)


def _word_at(text: str, word: str) -> re.Match[str] | None:
    return _phrase_pattern((word,)).search(text)


def apply_change(evidence: str, change: Change) -> tuple[str, bool]:
    """``evidence`` with one change applied; ``False`` when it found no place to apply it."""
    old = [w for w in change.old if w != ","]
    new = [] if _is_vague(change.new) else [w for w in change.new if w != ","]
    new_text = _join(new)
    if old and _content(old):
        pattern = _phrase_pattern(tuple(old))
        if pattern.search(evidence):
            return _sub_once(pattern, evidence, new_text), True
        specific = [w for w in _content(old) if w.lower() not in VAGUE]
        found = [w for w in specific if _word_at(evidence, w)]
        if found and len(found) == len(
            specific
        ):  # "with exacerbation" -> "exacerbation" in "COPD exacerbation"
            first = _word_at(evidence, found[0])
            assert first is not None
            out = evidence[: first.start()] + "\x00" + evidence[first.end() :]
            for w in found[1:]:
                out = _sub_once(_phrase_pattern((w,)), out, "")
            return out.replace("\x00", new_text), True
    if not new:
        return evidence, not old or _is_vague(change.old)  # nothing to say: no-op is fine
    if not change.first_clause:  # a qualifier clause ("subsequent encounter ..."): append it
        kept = [w for w in change.clause if w.lower() not in VAGUE]
        if all(w.lower() in QUALIFIER_NOUNS for w in _content(kept)):
            return evidence, True  # ", stage unspecified": nothing specific to add
        clause = _join(kept)
        if phrase_key(clause) not in phrase_key(evidence):
            return f"{evidence}, {clause}", True
        return evidence, True
    if change.after and (m := _word_at(evidence, change.after)):
        return evidence[: m.start()] + new_text + " " + evidence[m.start() :], True
    if change.before and (m := _word_at(evidence, change.before)):
        return evidence[: m.end()] + " " + new_text + evidence[m.end() :], True
    if change.at_clause_end:
        return f"{evidence} {new_text}", True
    return evidence, False


def usable_changes(neighbour_description: str, target_description: str) -> list[Change] | None:
    """The description diff, or ``None`` when there is none or the codes differ too much."""
    changes = description_changes(neighbour_description, target_description)
    if not changes:
        return None
    target_words = len(_content(_tokens(target_description)))
    changed = sum(len(_content(c.new)) for c in changes)
    if changed > max(3, target_words // 2):
        return None  # the codes are too different for word substitution to mean anything
    return changes


def apply_changes(evidence: str, changes: Sequence[Change]) -> str | None:
    """``evidence`` with every change applied, or ``None`` when one finds no place or nothing changes."""
    out = evidence
    for change in changes:
        out, ok = apply_change(out, change)
        if not ok:
            return None
    out = EDGE_PUNCT.sub("", re.sub(r"\s+([,;:.])", r"\1", " ".join(out.split())))
    out = re.sub(r",\s*,", ",", out)
    return out if out and phrase_key(out) != phrase_key(evidence) else None


def template_evidence(
    neighbour_description: str, target_description: str, evidence: str
) -> str | None:
    """The neighbour's ``evidence`` rewritten for the target, or ``None`` if it cannot be."""
    changes = usable_changes(neighbour_description, target_description)
    return apply_changes(evidence, changes) if changes else None


def description_evidence(description: str) -> str:
    """The target's own description without nonessential modifiers, as a last resort."""
    return _join(_tokens(description))


def synthesis_prompt(
    target: str, target_description: str, neighbour: str, neighbour_description: str,
    evidence: Sequence[str], k: int,
) -> list[Message]:
    """The LLM synthesis prompt for one uncovered code."""
    lines = "\n".join(f"- {e}" for e in evidence) or "- (none)"
    user = SYNTHESIS.format(target=target, target_description=target_description,
                            neighbour=neighbour, neighbour_description=neighbour_description,
                            evidence=lines, k=k)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class EvidenceFilter:
    """The tier's filters; :meth:`reason` says why a candidate is rejected (``None``: keep)."""

    def __init__(self, tab: TabularList, existing: Mapping[str, Iterable[str]]) -> None:
        self.tab = tab
        self.owner: dict[str, set[str]] = {}
        for code, evidence in existing.items():
            for e in evidence:
                self.owner.setdefault(phrase_key(e), set()).add(code)

    def has_code(self, text: str, codes: Iterable[str]) -> bool:
        for m in CODE_PATTERN.finditer(text):
            head, dotted, tail = m.groups()
            code = canonical_code(head + (dotted if dotted is not None else (tail or "")))
            if code in self.tab or head.upper() in self.tab:
                return True
        bare = text.upper().replace(".", "")
        return any(c.replace(".", "") in bare for c in codes if len(c) > 3)

    def reason(
        self, text: str, target: str, neighbour_evidence: Iterable[str], taken: set[str]
    ) -> str | None:
        key = phrase_key(text)
        if not key:
            return "empty"
        if self.has_code(text, [target]):
            return "code_string"
        n = len(text.split())
        if n < MIN_WORDS or n > MAX_WORDS:
            return "length"
        if key in taken:
            return "duplicate"
        if key in {phrase_key(e) for e in neighbour_evidence}:
            return "same_as_neighbour"
        if self.owner.get(key, set()) - {target}:
            return "other_code_evidence"
        return None


class CoveredIndex:
    """:func:`ccl.icd.nearest.nearest_covered` for many targets against one covered set.

    Same distances and order (by up distance, then by position closest to the
    target, the earlier code first on a tie), but each hierarchy level is
    searched by bisection in the sorted positions of the covered codes, so a
    sparse covered set costs milliseconds per target instead of a scan of it.
    """

    def __init__(self, tab: TabularList, covered: Iterable[str]) -> None:
        self.tab = tab
        self.positions = sorted(tab.position(c) for c in set(covered) if c in tab)

    def _within(self, lo: int, hi: int) -> list[int]:
        return self.positions[bisect_left(self.positions, lo) : bisect_left(self.positions, hi)]

    def nearest(self, code: str, k: int = 1) -> list[tuple[str, int]]:
        if k <= 0 or not self.positions:
            return []
        target = self.tab.position(code)
        out: list[tuple[str, int]] = []
        for dist, ranges in hierarchy_levels(self.tab, self.tab.code_at(target)):
            found = sorted(
                (p for lo, hi in ranges for p in self._within(lo, hi) if p != target),
                key=lambda p: (abs(p - target), p),
            )
            out += [(self.tab.code_at(p), dist) for p in found[: k - len(out)]]
            if len(out) == k:
                break
        return out


@dataclass
class Synthesis:
    """Pairs, their provenance and counters of one synthesis run."""

    pairs: list[SpanPair] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    distance: Counter[int] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    uncovered: list[str] = field(default_factory=list)

    def keep(self, code: str, text: str, source: str, neighbour: str | None, dist: int | None,
             origin: str | None) -> None:
        self.pairs.append(SpanPair(text, code, TIER, source))
        self.provenance.append({"code": code, "evidence": text, "source": source,
                                "neighbour": neighbour, "distance": dist, "from": origin})


def _template_candidates(
    tab: TabularList, code: str, neighbours: Sequence[tuple[str, int]],
    evidence: Mapping[str, Sequence[str]],
) -> Iterator[tuple[str, str, int, str]]:
    """``(text, neighbour, distance, neighbour evidence)`` from substitution, nearest first (lazy)."""
    target_description = tab.description(code)
    for neighbour, dist in neighbours:
        changes = usable_changes(tab.description(neighbour), target_description)
        if not changes:
            continue
        for e in evidence.get(neighbour, ())[:NEIGHBOUR_EVIDENCE]:
            text = apply_changes(e, changes)
            if text:
                yield text, neighbour, dist, e


def _choose(
    out: Synthesis, flt: EvidenceFilter, code: str, k: int,
    candidates: Iterable[tuple[str, str | None, int | None, str | None, str]],
    evidence: Mapping[str, Sequence[str]],
) -> int:
    """Keep up to ``k`` candidates ``(text, neighbour, distance, origin, source)`` that pass."""
    taken: set[str] = set()
    for text, neighbour, dist, origin, source in candidates:
        if len(taken) >= k:
            break
        why = flt.reason(text, code, evidence.get(neighbour, ()) if neighbour else (), taken)
        if why:
            out.rejected[why] += 1
            continue
        taken.add(phrase_key(text))
        out.keep(code, text, source, neighbour, dist, origin)
        if dist is not None:
            out.distance[dist] += 1
    return len(taken)


def synthesize(
    tab: TabularList,
    targets: Sequence[str],
    evidence: Mapping[str, Sequence[str]],
    k: int = 3,
    neighbours: int = 3,
    llm: CachedLLM | None = None,
    params: GenerationParams | None = None,
    progress: bool = False,
    credentialed: bool = False,
) -> tuple[Synthesis, Counter[str]]:
    """Synthetic pairs for every billable target code that ``evidence`` leaves uncovered.

    ``credentialed``: the evidence holds phrases mined from credentialed notes.
    """
    covered = {c for c, ev in evidence.items() if ev}
    flt = EvidenceFilter(tab, evidence)
    out = Synthesis()
    parse: Counter[str] = Counter()
    todo = [c for c in dict.fromkeys(targets) if tab.is_billable(c) and c not in covered]
    near = {}
    index = CoveredIndex(tab, covered)
    with track(len(todo), "synthetic: neighbours", progress, show_hits=False) as bar:
        for code in todo:
            near[code] = index.nearest(code, k=neighbours)
            bar.advance()
    answers: dict[str, list[str]] = {}
    if llm is not None:
        asked = [c for c in todo if near[c]]
        prompts = []
        for c in asked:
            n = near[c][0][0]
            prompts.append(synthesis_prompt(c, tab.description(c), n, tab.description(n),
                                             list(evidence[n])[:NEIGHBOUR_EVIDENCE], k))
        texts = llm.complete(prompts, params or GenerationParams(), desc="synthetic: write",
                             credentialed=credentialed)
        for c, text in zip(asked, texts, strict=True):
            items, lenient = parse_string_list(text)
            parse["lenient_answers"] += lenient
            if items is None:
                parse["malformed_answers"] += 1
            answers[c] = items or []
        source_llm = f"synthetic:llm:{llm.backend.name}"
    with track(len(todo), "synthetic: write", progress, show_hits=False) as bar:
        for code in todo:
            kept = 0
            if code in answers:
                n, d = near[code][0]
                kept = _choose(
                    out,
                    flt,
                    code,
                    k,
                    ((t, n, d, None, source_llm) for t in answers[code]),
                    evidence,
                )
                if not kept:
                    out.fallbacks["llm_to_template"] += 1
            if not kept:
                cands = _template_candidates(tab, code, near[code], evidence)
                kept = _choose(out, flt, code, k,
                               ((t, n, d, e, "synthetic:template") for t, n, d, e in cands), evidence)
            if not kept:
                out.fallbacks["description"] += 1
                text = description_evidence(tab.description(code))
                kept = _choose(
                    out, flt, code, 1, [(text, None, None, None, "synthetic:description")], evidence
                )
            if not kept:
                out.uncovered.append(code)
            bar.advance()
    return out, parse


# ------------------------------------------------------------------ the tier


def target_codes(which: str, tab: TabularList, docs: Mapping[str, Sequence[Document]]) -> list[str]:
    """``docs``: the billable codes of every document split (the run's label space); ``all``: every billable code."""
    if which == "all":
        return tab.billable_codes()
    if which == "docs":
        return sorted(
            {c for split in docs.values() for d in split for c in d.codes if tab.is_billable(c)}
        )
    raise ValueError(f"spans.synthetic.targets={which!r}: choose one of {TARGETS}")


def _evidence(spans: Mapping[str, Sequence[SpanPair]]) -> dict[str, list[str]]:
    """Evidence per code, earlier tiers first, shortest first within a tier, deduplicated."""
    out: dict[str, dict[str, str]] = {}
    for tier in ("gold", "silver", *sorted(set(spans) - {"gold", "silver"})):
        for p in sorted(spans.get(tier, ()), key=lambda p: (len(p.evidence), p.evidence)):
            out.setdefault(p.code, {}).setdefault(phrase_key(p.evidence), p.evidence)
    return {c: list(v.values()) for c, v in out.items()}


def _setting(cfg: Any) -> tuple[str, int, str, int]:
    """(method, pairs per code, targets, neighbours) of ``cfg.spans.synthetic``; keys it lacks
    take the schema's defaults (:class:`ccl.config.SyntheticSpansConfig`), and a null
    ``max_pairs_per_code`` the schema's default too (the tier is always bounded)."""
    schema = SyntheticSpansConfig()
    syn = OmegaConf.merge(OmegaConf.structured(schema), cfg.spans.synthetic)
    method = str(syn.method)
    if method not in ("template", "llm"):
        raise ValueError(f"spans.synthetic.method={method!r}: choose template or llm")
    k = syn.max_pairs_per_code
    return method, int(k if k is not None else schema.max_pairs_per_code), str(syn.targets), int(syn.neighbours)


def _tier_key(method: str, llm: LLMConfig, targets: Sequence[str], spans: Mapping[str, Sequence[SpanPair]],
              tab: TabularList, k: int, neighbours: int) -> str:
    relevant = {}
    if method == "llm":
        relevant = generation_settings(llm)
    return hash_obj({
        "version": SYNTHETIC_VERSION, "method": method, "llm": relevant, "k": k,
        "neighbours": neighbours, "targets": hash_obj(list(targets)), "tabular": tab.content_hash(),
        "existing": {t: hash_records(p) for t, p in sorted(spans.items())},
    })


def build(ctx: TierContext) -> TierResult:
    """The registered synthetic tier (``spans.synthetic._target_``): build it, or load it from
    ``cache_dir/synthetic/<hash>``; its settings are ``ctx.cfg.spans.synthetic`` and ``ctx.cfg.llm``."""
    # Synthesis reads the hierarchy and the earlier tiers, never notes (ctx.corpus).
    cfg, tab, spans, cache_dir, console = ctx.cfg, ctx.tab, ctx.spans, ctx.cache_dir, ctx.console
    method, k, which, n_neighbours = _setting(cfg)
    targets = target_codes(which, tab, ctx.docs)
    llm_cfg = llm_config(cfg)
    folder, cached = open_entry(cache_dir, TIER, _tier_key(method, llm_cfg, targets, spans, tab, k, n_neighbours))
    if cached is not None:
        return cached

    start = time.perf_counter()
    evidence = _evidence(spans)
    llm = None
    if method == "llm":
        llm = tier_llm(llm_cfg, cache_dir, "spans.synthetic.method=llm", console)
    try:
        # Prompts hold ICD-10-CM text and earlier-tier phrases; silver phrases are copied
        # from the docs source's notes, so they are as credentialed as those notes.
        credentialed = is_credentialed(cfg.docs.get("source")) and bool(spans.get("silver"))
        result, parse = synthesize(tab, targets, evidence, k, n_neighbours, llm,
                                   GenerationParams.from_config(llm_cfg), llm_cfg.progress,
                                   credentialed)
    finally:
        if llm is not None:
            llm.close()
    seconds = time.perf_counter() - start
    covered_before = {c for c in targets if evidence.get(c)}
    report: dict[str, Any] = {
        "synthetic_version": SYNTHETIC_VERSION,
        "method": method,
        "targets": which,
        "target_codes": len(targets),
        "covered_before": len(covered_before),
        "uncovered_before": len(
            [c for c in targets if c not in covered_before and tab.is_billable(c)]
        ),
        "pairs": len(result.pairs),
        "codes": len({p.code for p in result.pairs}),
        "still_uncovered": len(result.uncovered),
        "still_uncovered_examples": result.uncovered[:10],
        "by_source": dict(sorted(Counter(p.source for p in result.pairs).items())),
        "neighbour_distance": {str(d): n for d, n in sorted(result.distance.items())},
        "rejected": dict(sorted(result.rejected.items())),
        "fallbacks": dict(sorted(result.fallbacks.items())),
        "parse": dict(sorted(parse.items())),
        "examples": result.provenance[:5],
        "seconds": round(seconds, 2),
    }
    if llm is not None:
        report.update(backend=llm_cfg.backend, model=llm_cfg.model, llm_calls=llm.stats.to_dict())
    save_tier(folder, result.pairs, report, {"provenance.jsonl": result.provenance})
    return TierResult(result.pairs, report)
