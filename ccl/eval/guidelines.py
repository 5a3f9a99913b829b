"""Checks of predicted codes against the Tabular List's own instructional notes.

Rules (ICD-10-CM Official Guidelines, Section I.A and I.B; the notes are those of the
Tabular List XML, parsed by :mod:`ccl.icd.tabular`):

* **Excludes1** ("NOT CODED HERE"): two conditions that cannot occur together. A pair
  (a, b) of one document's codes is a violation when an Excludes1 note of a, or of
  any ancestor of a (a note applies to everything below it), references b.
* **Missing 7th character**: a code of the list that is not billable and has
  7th-character (``sevenChrDef``) extensions below it (``S72.001``, ``S02.0``).
* **Code first / use additional code**: sequencing instructions for two conditions
  coded together (Guidelines I.A.13). They say what to add *when the other condition is
  present*, so a code list alone shows a missing half only where the note's condition
  always holds. A code whose own or inherited ``codeFirst`` (``useAdditionalCode``)
  note is *enforced* and references codes, none of which the document also has, is
  missing its other half. One note is one instruction: a header note ending in ``:``
  with the items under it, or the notes of a code before any header, led by the first
  (A41's ", if applicable, postprocedural sepsis (T81.44-)" conditions the sepsis list
  after it); its items are alternatives, any one of which meets it. Each ancestor's notes
  are instructions of their own.

  - **Conditional notes are not enforced**: the note or its header says "if applicable",
    "if known", "if present", "if necessary", "when specified" or "any" ("code first any
    associated gangrene"), and "such as" (a list of examples of what to add where
    present), except in a "code first underlying ..." note: a manifestation code needs
    its underlying condition (Guidelines I.A.13, the etiology/manifestation convention),
    so there the examples are checked. An item that is conditional itself is dropped.
  - **Context notes apply only in their context.** References to the chapters that
    record a circumstance of the encounter rather than a condition the code implies:
    factors influencing health status (Z00-Z99: tobacco use, long-term insulin, history,
    exposure), external causes (V00-Y99; reported voluntarily, Guidelines I.C.20) and the
    supplementary infectious-agent codes (B95-B97, "to identify the infectious agent"
    where it is known) are never required; a note (or header group) listing any of them
    is a menu of circumstances to record where they apply and is not enforced.
    References to pregnancy, childbirth and the puerperium (O00-O9A) or to the perinatal
    period (P00-P96) apply only to a document coded in that context, i.e. with a code of
    that chapter (I42's "code first pre-existing cardiomyopathy complicating pregnancy
    and puerperium (O99.4)" applies to a pregnant patient only; Guidelines I.C.15.a).
  - A note without a code reference (prose only) cannot be checked.

  What stays enforced is the unconditional kind: "code first (T51-T65) to identify chemical
  and intent" on a corrosion, "use additional code to identify severity of ulcer (L97.-)"
  on atherosclerosis with ulceration, "code first the underlying physiological condition,
  such as: ..." on a manifestation code (an underlying condition missing from the
  examples is flagged), and K70's "use additional code to identify: alcohol abuse and
  dependence (F10.-)" -- the one rule the demo world's gold codes break (10 of its 40 test
  documents code alcoholic cirrhosis without an F10 code).

Code references are read from the parentheses of a note: ``(E10.-)`` and ``(T81.44-)``
are the code and everything below it, ``(O75.3)`` the code (and its children),
``(P35-P39)`` the categories of a range, ``(O03.37, O03.87)`` a list.
Chapter- and block-level notes are not applied (only notes on codes).

``repair`` drops the lower-scored code of each Excludes1 pair (the later-written one
when scores are missing or equal), so the report/repair switch
(``eval.guidelines``) changes the scored predictions only there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList

_PARENS = re.compile(r"\(([^()]*)\)")
_REF = re.compile(r"^([A-Z][0-9A-Z]{2}(?:\.[0-9A-Z]{1,4})?)\.?-?$")
_RANGE = re.compile(r"^([A-Z][0-9A-Z]{2}(?:\.[0-9A-Z]{1,4})?)-([A-Z][0-9A-Z]{2}(?:\.[0-9A-Z]{1,4})?)\.?-?$")
_CONDITIONAL = re.compile(r"\bif (?:applicable|known|present|necessary|desired)\b|\bwhen specified\b|\bany\b")
_SUCH_AS = re.compile(r"\bsuch as\b")
_UNDERLYING = re.compile(r"\bunderlying\b")
# Chapters that record a circumstance, not a condition a code implies (see the module docs).
_CIRCUMSTANCE = (("Z00", "Z99"), ("V00", "Y99"), ("B95", "B97"))
# Chapters that set a context: their references apply when the document has a code there.
_CONTEXT = {"O": "pregnancy, childbirth and the puerperium", "P": "perinatal period"}
COUNT_KEYS = ("excludes1_pairs", "missing_seventh_character", "code_first_missing", "use_additional_code_missing")


@dataclass(frozen=True)
class CodeRef:
    """A code, or the codes ``low``..``high`` compared on ``len(low)`` characters."""

    low: str
    high: str

    def matches(self, code: str) -> bool:
        head = code[: len(self.low)]
        return self.low <= head <= self.high[: len(self.low)] if self.low != self.high else code.startswith(self.low)


def note_references(note: str) -> list[CodeRef]:
    """Code references in the parentheses of a note (see the module docs); [] when none."""
    refs = []
    for group in _PARENS.findall(note):
        for item in group.split(","):
            item = item.strip().upper()
            rng = _RANGE.match(item)
            if rng:
                refs.append(CodeRef(rng.group(1), rng.group(2)))
                continue
            one = _REF.match(item)
            if one:
                code = one.group(1)
                refs.append(CodeRef(code, code))
    return refs


def _is_circumstance(ref: CodeRef) -> bool:
    return any(lo <= ref.low[:3] <= hi and lo <= ref.high[:3] <= hi for lo, hi in _CIRCUMSTANCE)


@dataclass(frozen=True)
class Requirement:
    """One enforced note: alternatives, each the codes that satisfy it and the chapter letter
    of its context (``"O"``, ``"P"``: the alternative exists only for a document with a code
    there) or None. Met when the document has a code of an alternative that applies, or
    when none applies."""

    alternatives: tuple[tuple[tuple[CodeRef, ...], str | None], ...]

    def missing(self, code: str, codes: Sequence[str]) -> bool:
        """True when ``code`` (one of ``codes``) lacks the other half this note asks for."""
        active = [refs for refs, ctx in self.alternatives
                  if ctx is None or any(c.startswith(ctx) for c in codes)]
        others = [c for c in codes if c != code]
        return bool(active) and not any(r.matches(b) for refs in active for r in refs for b in others)


def _note_groups(notes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(header, items): a note ending in ':' heads the notes after it; the notes before the
    first header are one group whose header is its first note (one XML element is one
    instruction: A41's ", if applicable, postprocedural sepsis (T81.44-)" conditions the
    sepsis list after it)."""
    groups: list[tuple[str, list[str]]] = []
    for note in notes:
        if note.rstrip().endswith(":"):
            groups.append((note, []))
        elif not groups:
            groups.append((note, [note]))
        else:
            groups[-1][1].append(note)
    return groups


def _context(refs: Sequence[CodeRef]) -> str | None:
    letters = {r.low[0] for r in refs} | {r.high[0] for r in refs}
    return next(iter(letters)) if len(letters) == 1 and letters <= set(_CONTEXT) else None


def note_requirements(notes: Sequence[str], kind: str) -> list[Requirement]:
    """The enforced requirements of one code's own ``codeFirst`` (``kind="code_first"``) or
    ``useAdditionalCode`` (``"use_additional_code"``) notes, in the Tabular List's order;
    see the module docs for which notes are enforced."""
    out = []
    for header, items in _note_groups(notes):
        head = header.lower()
        underlying = kind == "code_first" and bool(_UNDERLYING.search(head))
        if _CONDITIONAL.search(head) or (_SUCH_AS.search(head) and not underlying):
            continue
        alternatives = []
        circumstance = False
        for item in ([] if header in items else [header]) + items:
            refs = tuple(note_references(item))
            if not refs or (item is not header and _CONDITIONAL.search(item.lower())):
                continue
            circumstance |= any(_is_circumstance(r) for r in refs)
            alternatives.append((refs, _context(refs)))
        if alternatives and not circumstance:
            out.append(Requirement(tuple(alternatives)))
    return out


@dataclass
class DocFlags:
    """Violations in one document's codes."""

    excludes1_pairs: list[tuple[str, str]] = field(default_factory=list)
    missing_seventh_character: list[str] = field(default_factory=list)
    code_first_missing: list[str] = field(default_factory=list)
    use_additional_code_missing: list[str] = field(default_factory=list)

    def per_code(self) -> dict[str, list[str]]:
        """``code -> flags`` (``excludes1:OTHER``, ``missing_7th_character``, ``code_first_missing``, ...)."""
        out: dict[str, list[str]] = {}
        for a, b in self.excludes1_pairs:
            out.setdefault(a, []).append(f"excludes1:{b}")
            out.setdefault(b, []).append(f"excludes1:{a}")
        for key, label in (("missing_seventh_character", "missing_7th_character"),
                           ("code_first_missing", "code_first_missing"),
                           ("use_additional_code_missing", "use_additional_code_missing")):
            for c in getattr(self, key):
                out.setdefault(c, []).append(label)
        return out

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in COUNT_KEYS}


class GuidelineChecker:
    """Checks codes against one Tabular List; note references are parsed once per code."""

    def __init__(self, tab: TabularList) -> None:
        self.tab = tab
        self._refs: dict[tuple[str, str], list[CodeRef]] = {}
        self._reqs: dict[tuple[str, str], list[Requirement]] = {}
        self._needs_seventh: dict[str, bool] = {}

    def _lineage(self, code: str) -> list[str]:
        return [code, *self.tab.ancestors(code)] if code in self.tab else []

    def _inherited(self, code: str, kind: str) -> list[CodeRef]:
        """Excludes1 references of the code and its ancestors."""
        key = (code, kind)
        if key not in self._refs:
            refs: list[CodeRef] = []
            for c in self._lineage(code):
                info = self.tab.get(c)
                for note in getattr(info, kind, ()) if info else ():
                    refs.extend(note_references(note))
            self._refs[key] = refs
        return self._refs[key]

    def requirements(self, code: str, kind: str) -> list[Requirement]:
        """Enforced ``code_first`` / ``use_additional_code`` notes of the code and its ancestors."""
        key = (code, kind)
        if key not in self._reqs:
            reqs: list[Requirement] = []
            for c in self._lineage(code):
                info = self.tab.get(c)
                reqs.extend(note_requirements(getattr(info, kind, ()) if info else (), kind))
            self._reqs[key] = reqs
        return self._reqs[key]

    def needs_seventh_character(self, code: str) -> bool:
        """A non-billable code of the list with 7th-character extensions below it."""
        code = canonical_code(code)
        if code not in self._needs_seventh:
            needs = False
            if self.tab.needs_more_characters(code):
                start, end = self.tab.subtree_span(code)
                needs = any(self.tab.get(self.tab.code_at(i)).kind == "extended" for i in range(start, end))
            self._needs_seventh[code] = needs
        return self._needs_seventh[code]

    def check(self, codes: Sequence[str]) -> DocFlags:
        """Violations among one document's codes (codes outside the list are not checked)."""
        codes = list(dict.fromkeys(canonical_code(c) for c in codes))
        flags = DocFlags()
        pairs: set[tuple[str, str]] = set()
        for a in codes:
            refs = self._inherited(a, "excludes1")
            for b in codes:
                if b != a and any(r.matches(b) for r in refs):
                    pairs.add((a, b) if codes.index(a) < codes.index(b) else (b, a))
            if self.needs_seventh_character(a):
                flags.missing_seventh_character.append(a)
            for kind, out in (("code_first", flags.code_first_missing),
                              ("use_additional_code", flags.use_additional_code_missing)):
                if any(req.missing(a, codes) for req in self.requirements(a, kind)):
                    out.append(a)
        flags.excludes1_pairs = sorted(pairs, key=lambda p: (codes.index(p[0]), codes.index(p[1])))
        return flags

    def repair(self, codes: Sequence[str], scores: Mapping[str, float] | None = None) -> tuple[list[str], list[str]]:
        """(kept codes in order, dropped codes): the lower-scored code of each Excludes1 pair
        dropped (on equal or missing scores, the later-written one)."""
        scores = {canonical_code(k): float(v) for k, v in (scores or {}).items()}
        kept = list(dict.fromkeys(canonical_code(c) for c in codes))
        dropped: list[str] = []
        for a, b in self.check(kept).excludes1_pairs:  # a was written before b
            if a in dropped or b in dropped:
                continue
            sa, sb = scores.get(a, float("-inf")), scores.get(b, float("-inf"))
            loser = a if sa < sb else b
            dropped.append(loser)
        return [c for c in kept if c not in dropped], dropped


def guideline_counts(flags: Sequence[DocFlags]) -> dict[str, int]:
    """Run totals: each kind of violation, and documents with at least one."""
    totals = {k: sum(f.counts()[k] for f in flags) for k in COUNT_KEYS}
    totals["docs_with_violation"] = sum(any(f.counts().values()) for f in flags)
    return totals
