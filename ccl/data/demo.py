"""The demo world: seeded synthetic discharge summaries built from ICD-10-CM text.

The default experiment runs without credentialed notes. Every code of a small
universe gets evidence phrases (from a caller's phrase bank, e.g. gold span
pairs, else from Tabular List descriptions and inclusion terms); notes are
assembled from section templates, filler sentences with random values, one
evidence mention per gold code and distractor mentions that must not be coded
(negated, ruled out, family history). Each evidence span is exactly the text
inserted, so ``text[start:end] == span.text`` holds by construction.

A share of the test set's codes (*unseen*) never occurs in training documents,
not even as a distractor; they occur in val/test and in the span-free corpus
that silver mining reads.

Coverage is honest, as on real notes: a share of the universe (*shorthand codes*,
``SHORTHAND_SHARE``) is written in every note only in clinician shorthand ("HTN",
"AFib", "CKD stage 3"), a form no Tabular List term spells, so the gold tier
never shows the model how these codes are written; the lexical silver miner
recovers the form from the code-labelled corpus (it expands gold terms into
such abbreviations, ``ccl.spans.lexical``). Unseen codes are drawn from
shorthand and from plain codes alike, so some unseen test codes are taught only
by silver pairs (Table 3 row 5) and the others by gold pairs (row 4). Everything is driven by ``random.Random`` streams
seeded from ``cfg.seed`` and a stream name, never by set iteration order, so a
world is identical across processes and a change to one split's size leaves the
others untouched.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Protocol

from ccl.config import DemoDocsConfig, source_settings
from ccl.icd.codes import canonical_code
from ccl.icd.terms import natural_phrase
from ccl.records import Document, EvidenceSpan

SOURCE = "demo"
MIN_TRAIN_OCCURRENCES = 3  # each seen code occurs in at least this many training notes
ABBREVIATION_PROB = 0.15  # chance that a mention of a code with an abbreviation uses it
# Share of the code universe written only in shorthand (drawn from ABBREVIATIONS' codes).
SHORTHAND_SHARE = 1 / 3
CAPITALISE_PROB = 0.1  # chance that a mid-sentence mention is written with a capital
REPEAT_PROB = 0.12  # chance that a gold code is mentioned again under discharge diagnoses
NATURAL_MAX_WORDS = 6

# Common billable inpatient diagnoses, roughly most frequent first. Codes that
# would contradict each other in one note (E11.9 vs E11.65, I10 vs I12.9) are
# left out; every code is billable in the April 2026 Tabular List (tested). A "*"
# marks a condition usually carried in the past medical history rather than treated as new.
_POOL = """
    I10* E78.5* E11.9* I25.10* K21.9* N17.9 I48.91* I50.9* E87.1 D64.9 J44.1* J18.9 N39.0 E03.9*
    F32.A* F41.9* G47.33* E66.9* N18.30* A41.9 Z79.4 Z79.01 Z87.891 Z79.02 Z66 E86.0 E87.6 D69.6
    F17.210* J96.01 E87.20 Z95.1 Z99.2 Z86.73 Z91.81 F10.20* G93.41 I95.9 D72.829 E83.42 E55.9*
    E43 M81.0* M10.9* M19.90* R65.20 I21.4 I26.99 I82.409 I63.9 G45.9 J90 J45.909* J43.9* K59.00
    K92.2 K85.90 K80.20 K70.30* K57.30* K56.609 L03.90 L89.159 M54.50 G40.909* G20.A1* G30.9*
    F03.90* F05 I35.0* I27.20* I73.9* I42.9* I34.0* I44.7* I45.10* I49.5* I47.10 R00.1 R07.9
    R06.02 R50.9 R55 R41.82 R11.2 R19.7 R10.9 R53.1 R63.4 R33.9 R31.9 R04.0 R42 R51.9 R60.0
    E16.2 E05.90* E27.40* E87.70 E83.51 E87.5 E87.0 E87.3 D70.9 D61.818 D47.3* B37.0 A04.72 B20*
    B18.2* U07.1 J11.1 J69.0 J98.11 J93.9 J81.0 J84.10* J32.9* J30.9* N40.0* N13.30 N20.0 I61.9
    Z95.0 Z85.46 Z88.0 Z51.5 Z79.52 Z86.711 G62.9* G89.29* F20.9* F31.9* F43.10* K29.70 K25.9
    K62.5 K76.0* K75.9 K72.90 K50.90* K51.90* M62.81 C34.90* C50.919* C61* C18.9* G43.909*
    H40.9*
"""
DEFAULT_CODE_POOL: tuple[str, ...] = tuple(c.rstrip("*") for c in _POOL.split())
_CHRONIC: frozenset[str] = frozenset(c.rstrip("*") for c in _POOL.split() if c.endswith("*"))


# Clinical abbreviations for a few common conditions: a shorthand code is written only so,
# another code of the list at ABBREVIATION_PROB. None is a Tabular List term of its code
# (tested), and the lexical silver miner finds each from the code's gold terms (tested).
ABBREVIATIONS: dict[str, str] = {
    "I10": "HTN", "E11.9": "T2DM", "E78.5": "HLD", "I48.91": "AFib", "I50.9": "CHF",
    "J44.1": "COPD exacerbation", "N17.9": "AKI", "I25.10": "CAD", "K21.9": "GERD",
    "G47.33": "OSA", "N39.0": "UTI", "N18.30": "CKD stage 3", "I21.4": "NSTEMI",
    "I82.409": "DVT", "N40.0": "BPH", "I63.9": "CVA", "R41.82": "AMS", "Z66": "DNR",
    "R06.02": "SOB", "K92.2": "GI bleed",
}


class TabularLike(Protocol):
    """What the generator needs from :class:`ccl.icd.tabular.TabularList`."""

    def description(self, code: str) -> str: ...
    def is_billable(self, code: str) -> bool: ...
    def inclusion_terms(self, code: str) -> tuple[str, ...]: ...
    def __contains__(self, code: object) -> bool: ...


@dataclass
class DemoWorld:
    """The generated splits, the span-free corpus, the label space and statistics."""

    train: list[Document]
    val: list[Document]
    test: list[Document]
    corpus: list[Document]  # code-labelled notes without evidence spans (silver mining)
    codes: list[str]  # the code universe (label space)
    seen_codes: list[str]
    unseen_codes: list[str]  # never in training documents; each occurs in the test set
    phrases: dict[str, list[str]]  # base evidence phrases per code (before surface variation)
    # Shorthand codes: the one form every mention of the code is written in (no Tabular term).
    shorthand: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, list[Document]]:
        return {"train": self.train, "val": self.val, "test": self.test}


# -- evidence phrases -----------------------------------------------------------




def _unnatural(phrase: str) -> bool:
    return "," in phrase or len(phrase.split()) > NATURAL_MAX_WORDS


def choose_phrases(
    codes: Sequence[str],
    tab: TabularLike,
    n_per_code: int,
    phrase_bank: dict[str, list[str]] | None = None,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Pick ``n_per_code`` distinct, natural evidence phrases for each code.

    Candidates pass through :func:`natural_phrase`. Natural ones (no comma, at
    most ``NATURAL_MAX_WORDS`` words) come first: phrase-bank phrases, shortest
    first, then the Tabular description, then its inclusion terms in list order;
    the unnatural ones follow in the same order. A phrase already taken by an
    earlier code is skipped so that each phrase names one code. Returns the
    phrases and, per code, the origin of its first phrase (bank | tabular).
    """
    taken: set[str] = set()
    chosen: dict[str, list[str]] = {}
    origin: dict[str, str] = {}
    for code in codes:
        bank = [(t, "bank") for t in (phrase_bank or {}).get(code, ())]
        tabular = [(t, "tabular") for t in (tab.description(code), *tab.inclusion_terms(code))]
        ranked: list[tuple[bool, bool, int, int, str, str]] = []
        for rank, (term, where) in enumerate(bank + tabular):
            phrase = natural_phrase(term) if isinstance(term, str) else ""
            if phrase:
                from_tab = where == "tabular"
                length = 0 if from_tab else len(phrase.split())
                ranked.append((_unnatural(phrase), from_tab, length, rank, phrase, where))
        ranked.sort()
        picked: list[str] = []
        for *_, phrase, where in ranked:
            if phrase.lower() not in taken and len(picked) < n_per_code:
                picked.append(phrase)
                taken.add(phrase.lower())
                origin.setdefault(code, where)
        if not picked:
            raise ValueError(
                f"demo world: no evidence phrase left for code {code} "
                f"({tab.description(code)!r}): all its terms name other codes of the universe"
            )
        chosen[code] = picked
    return chosen, origin


# -- code universe and split assignment -----------------------------------------


def _settings(cfg: Any) -> SimpleNamespace:
    """The demo world's settings as one namespace: ``docs.seed``, ``docs.n_val``,
    ``docs.code_pool`` and the ``docs.demo`` block (its defaults when null: a ``DocsConfig``
    built in code)."""
    demo = source_settings(cfg, "demo")
    return SimpleNamespace(seed=cfg.seed, n_val=cfg.n_val, code_pool=cfg.code_pool,
                           **{f.name: getattr(demo, f.name) for f in fields(DemoDocsConfig)})


def _key(name: str) -> str:
    """The config key of a demo setting (``docs.n_val``, ``docs.demo.n_train``)."""
    return f"docs.{name}" if name == "n_val" else f"docs.demo.{name}"


def _check_config(cfg: Any) -> None:
    problems = []
    for name in ("n_train", "n_val", "n_test", "corpus_size", "filler_sentences"):
        if getattr(cfg, name) < 0:
            problems.append(f"{_key(name)}={getattr(cfg, name)} must be >= 0")
    for name in ("n_codes", "phrases_per_code", "codes_per_note_min"):
        if getattr(cfg, name) < 1:
            problems.append(f"{_key(name)}={getattr(cfg, name)} must be >= 1")
    if cfg.codes_per_note_max < cfg.codes_per_note_min:
        problems.append(
            f"docs.demo.codes_per_note_max={cfg.codes_per_note_max} < "
            f"docs.demo.codes_per_note_min={cfg.codes_per_note_min}"
        )
    if not 0.0 <= cfg.unseen_share < 1.0:
        problems.append(f"docs.demo.unseen_share={cfg.unseen_share} must be in [0, 1)")
    if cfg.distractor_rate < 0:
        problems.append(f"docs.demo.distractor_rate={cfg.distractor_rate} must be >= 0")
    if problems:
        raise ValueError("demo world: " + "; ".join(problems))


def _universe(
    cfg: Any, tab: TabularLike, rng: random.Random
) -> tuple[list[str], list[str], list[str]]:
    """The label space (in pool order), its shorthand codes, and the default-pool codes the list lacks.

    ``round(SHORTHAND_SHARE * n)`` codes of the universe are shorthand codes, drawn from
    the codes that have an entry in ABBREVIATIONS (as many as there are, if fewer).
    """
    if cfg.code_pool:
        codes = list(dict.fromkeys(canonical_code(str(c)) for c in cfg.code_pool))
        bad = [c for c in codes if not tab.is_billable(c)]
        if bad:
            raise ValueError(
                f"demo world: docs.code_pool has codes that are not billable in the Tabular "
                f"List: {', '.join(bad)}"
            )
        if len(codes) < 2:
            raise ValueError("demo world: docs.code_pool needs at least 2 codes")
        candidates = [c for c in codes if c in ABBREVIATIONS]
        n_short = min(round(len(codes) * SHORTHAND_SHARE), len(candidates))
        short = set(rng.sample(candidates, n_short))
        return codes, [c for c in codes if c in short], []
    pool = [c for c in DEFAULT_CODE_POOL if tab.is_billable(c)]
    skipped = [c for c in DEFAULT_CODE_POOL if c not in pool]
    if cfg.n_codes > len(pool):
        raise ValueError(
            f"demo world: docs.demo.n_codes={cfg.n_codes} but the default pool has only {len(pool)} "
            f"billable codes; set docs.code_pool to a longer list"
        )
    if cfg.n_codes < 2:
        raise ValueError("demo world: docs.demo.n_codes must be >= 2")
    candidates = [i for i, c in enumerate(pool) if c in ABBREVIATIONS]
    n_short = min(round(cfg.n_codes * SHORTHAND_SHARE), len(candidates))
    short = set(rng.sample(candidates, n_short))
    rest = [i for i in range(len(pool)) if i not in short]
    keep = short | set(rng.sample(rest, cfg.n_codes - n_short))
    codes = [c for i, c in enumerate(pool) if i in keep]
    return codes, [pool[i] for i in sorted(short)], skipped


def _assign_codes(
    rng: random.Random,
    n_docs: int,
    pool: Sequence[str],
    weights: Sequence[float],
    required: Sequence[str],
    k_min: int,
    k_max: int,
    what: str,
) -> list[list[str]]:
    """Code sets for ``n_docs`` notes: every ``required`` entry placed, the rest drawn by weight."""
    if n_docs == 0:
        return []
    k_max = min(k_max, len(pool))
    k_min = min(k_min, k_max)
    sizes = [rng.randint(k_min, k_max) for _ in range(n_docs)]
    room = [i for i in range(n_docs) if sizes[i] < k_max]
    while sum(sizes) < len(required) and room:
        i = rng.choice(room)
        sizes[i] += 1
        if sizes[i] == k_max:
            room.remove(i)
    sets: list[list[str]] = [[] for _ in range(n_docs)]
    order = list(range(n_docs))
    rng.shuffle(order)
    pos = 0
    for code in required:
        for step in range(n_docs):
            i = order[(pos + step) % n_docs]
            if len(sets[i]) < sizes[i] and code not in sets[i]:
                sets[i].append(code)
                pos = (pos + step + 1) % n_docs
                break
        else:
            raise ValueError(
                f"demo world: {what}: {n_docs} notes of at most {k_max} codes cannot hold "
                f"{len(required)} required code mentions; raise the number of notes or "
                f"docs.demo.codes_per_note_max, or lower docs.demo.n_codes"
            )
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    for i, chosen in enumerate(sets):
        while len(chosen) < sizes[i]:
            code = rng.choices(pool, cum_weights=cum)[0]
            if code not in chosen:
                chosen.append(code)
        rng.shuffle(chosen)
    return sets


# -- note templates ------------------------------------------------------------

_HPI_OPEN = (
    "{age}-year-old {sex} who presented with {p}.",
    "{age}-year-old {sex} admitted with {p}.",
    "{age}-year-old {sex} presenting to the emergency department with {p}.",
    "{age}-year-old {sex} brought in by family and found to have {p}.",
)
_HPI_OPEN_PLAIN = (
    "{age}-year-old {sex} admitted for evaluation and management.",
    "{age}-year-old {sex} transferred from an outside hospital for further care.",
)
_CHRONIC_LINES = (
    "The patient has a history of {p}.",
    "Known {p}, on home therapy.",
    "Longstanding {p}, followed by the primary care provider.",
    "h/o {p}.",
)
_ACUTE_LINES = (
    "The patient was treated for {p}.",
    "Course was complicated by {p}.",
    "{p} was diagnosed on hospital day {day} and treated.",
    "Found to have {p} and started on appropriate therapy.",
    "{p} was managed with {treatment}.",
    "Workup confirmed {p}.",
    "{Pron} was treated for {p} with improvement.",
)
_PLAN_CHRONIC = (
    "{p}: continue home regimen.",
    "{p}, stable on current therapy.",
    "{p} - chronic, at baseline; continue outpatient management.",
    "{p}: stable, no changes made.",
)
_PLAN_ACUTE = (
    "{p}: improving, continue current treatment.",
    "{p}, resolved prior to discharge.",
    "{p}, treated this admission.",
    "{p} - monitor and follow up as an outpatient.",
)
_PLAN_STATUS = (
    "{p}: noted.",
    "Also noted: {p}.",
    "Relevant history includes {p}.",
)
_NEGATED = (
    "Denies {p}.",
    "No history of {p}.",
    "{Pron} denies any {p}.",
    "Negative for {p}.",
)
_RULED_OUT = (
    "{p} was ruled out.",
    "Workup was negative for {p}.",
    "No evidence of {p} on further evaluation.",
    "{p} was considered but ruled out.",
)
_FAMILY = (
    "Mother had {p}.",
    "Father with {p}.",
    "Family history of {p} in a sibling.",
    "Brother with {p}.",
)
_FILLERS: tuple[Callable[[random.Random], str], ...] = (
    lambda r: (
        f"Vital signs on admission: temperature {r.uniform(36.4, 37.4):.1f} C, heart rate "
        f"{r.randint(62, 96)}, blood pressure {r.randint(108, 134)}/{r.randint(62, 84)}, "
        f"respiratory rate {r.randint(12, 18)}, oxygen saturation {r.randint(94, 99)}% on room air."
    ),
    lambda r: (
        f"Admission labs showed white blood cell count {r.uniform(4.5, 10.5):.1f}, hemoglobin "
        f"{r.uniform(12.5, 15.5):.1f}, platelets {r.randint(160, 380)} and creatinine "
        f"{r.uniform(0.7, 1.1):.2f}."
    ),
    lambda r: (
        f"Basic metabolic panel: sodium {r.randint(136, 144)}, potassium {r.uniform(3.6, 4.8):.1f}, "
        f"bicarbonate {r.randint(23, 28)}, glucose {r.randint(80, 130)}."
    ),
    lambda r: "Electrocardiogram showed normal sinus rhythm without acute changes.",
    lambda r: f"Blood cultures were drawn and showed no growth at {r.randint(2, 5)} days.",
    lambda r: "Physical therapy evaluated the patient and recommended home with services.",
    lambda r: "The patient tolerated a regular diet and ambulated with assistance.",
    lambda r: "Home medications were reviewed with the pharmacist.",
    lambda r: (
        f"{r.choice(['Case management', 'Nutrition', 'Social work'])} followed during the stay."
    ),
    lambda r: "Pain was controlled with acetaminophen as needed.",
    lambda r: "The patient remained hemodynamically stable throughout the stay.",
    lambda r: f"Weight on discharge was {r.randint(52, 110)} kg.",
    lambda r: f"Chest radiograph on day {r.randint(1, 3)} was reviewed with radiology.",
    lambda r: f"Follow-up with the primary care provider in {r.randint(1, 4)} weeks.",
)


def _plain_filler(r: random.Random) -> str:
    return f"The care team reviewed the plan on day {r.randint(1, 4)}."


_EXAM = (
    "General: alert, in no acute distress.",
    "Lungs: clear to auscultation bilaterally.",
    "Heart: normal S1 and S2.",
    "Abdomen: soft, nontender, nondistended.",
    "Extremities: warm and well perfused.",
    "Neuro: alert and oriented, moving all extremities.",
    "Skin: warm and dry.",
)
_SOCIAL = (
    "Lives with {family}; independent in activities of daily living.",
    "Lives with {family} and walks with a cane.",
    "Lives alone; a neighbor checks in daily.",
    "Retired teacher, lives with {family}.",
)
_FAMILY_MEMBERS = ("spouse", "daughter", "son", "partner")
_COMPLAINTS = (
    "fatigue", "cough", "dyspnea on exertion", "confusion", "leg swelling", "poor oral intake",
    "abnormal labs", "fall at home", "palpitations", "decreased appetite",
)
_MEDICATIONS = (
    "aspirin 81 mg daily", "atorvastatin 40 mg nightly", "metoprolol tartrate 25 mg twice daily",
    "lisinopril 10 mg daily", "pantoprazole 40 mg daily", "furosemide 20 mg daily",
    "metformin 500 mg twice daily", "apixaban 5 mg twice daily", "levothyroxine 75 mcg daily",
    "sertraline 50 mg daily", "amlodipine 5 mg daily", "acetaminophen 650 mg as needed",
    "senna 8.6 mg nightly", "vitamin D3 1000 units daily",
)
_TREATMENTS = (
    "supportive care",
    "medical management",
    "close monitoring",
    "a short course of therapy",
)
_DISPOSITIONS = ("home", "home with services", "skilled nursing facility", "acute rehabilitation")


def _kind(code: str, phrase: str) -> str:
    """chronic | status | acute: which templates can carry a mention of ``code``."""
    if code.startswith("Z"):
        return "status"
    if code in _CHRONIC or phrase.lower().startswith("chronic"):
        return "chronic"
    return "acute"


@dataclass(frozen=True)
class _Mention:
    """A phrase placed in a sentence; ``code`` is None for distractors."""

    text: str
    code: str | None


_Sentence = tuple["str | _Mention", ...]


def _fill(template: str, mentions: Sequence[_Mention], values: dict[str, Any]) -> _Sentence:
    """Split ``template`` at its ``{p}`` slots and put the mentions there."""
    pieces = template.split("{p}")
    if len(pieces) != len(mentions) + 1:
        raise AssertionError(f"template {template!r} has the wrong number of slots")
    out: list[str | _Mention] = []
    for i, piece in enumerate(pieces):
        text = piece.format(**values)
        if text:
            out.append(text)
        if i < len(mentions):
            mention = mentions[i]
            if not out:  # the sentence starts with the mention
                mention = _Mention(mention.text[0].upper() + mention.text[1:], mention.code)
            out.append(mention)
    return tuple(out)


def _word_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = sorted({re.escape(p.lower()) for p in phrases if p}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


class _NoteWriter:
    """Writes notes over one code universe; all randomness comes from the caller's rng."""

    def __init__(
        self,
        phrases: dict[str, list[str]],
        kinds: dict[str, str],
        shorthand: dict[str, str] | None = None,
    ) -> None:
        self.phrases = phrases
        self.kinds = kinds
        self.shorthand = dict(shorthand or {})
        self.abbreviations = {c: a for c, a in ABBREVIATIONS.items() if c in phrases}
        surface = [p for ps in phrases.values() for p in ps] + list(self.abbreviations.values())
        clash = _word_pattern(surface)

        def clean(texts: Iterable[str]) -> tuple[str, ...]:
            return tuple(t for t in texts if clash is None or not clash.search(t))

        # Template text that names a code of the universe would be an unlabelled mention.
        self.complaints = clean(_COMPLAINTS) or ("evaluation",)
        self.medications = clean(_MEDICATIONS) or ("home medications as before",)
        self.exam = clean(_EXAM) or ("General: comfortable.",)
        self.social = clean(_SOCIAL) or ("Lives at home.",)
        probe = random.Random(0)
        self.fillers = tuple(f for f in _FILLERS if clean([f(probe)])) or (_plain_filler,)
        self.lowered = {c: [p.lower() for p in ps] for c, ps in phrases.items()}
        for c, form in self.shorthand.items():
            self.lowered[c] = [form.lower(), *self.lowered[c]]

    def surface(self, rng: random.Random, code: str, upper: bool = False) -> str:
        """One written form of a code's phrase: the phrase, its abbreviation, or a case variant.

        A shorthand code is always written in its shorthand."""
        if code in self.shorthand:
            return self.shorthand[code]
        abbreviation = self.abbreviations.get(code)
        if abbreviation and rng.random() < ABBREVIATION_PROB:
            return abbreviation
        text = rng.choice(self.phrases[code])
        if upper:
            return text.upper()
        if rng.random() < CAPITALISE_PROB:
            return text[0].upper() + text[1:]
        return text

    def distractor_codes(
        self, rng: random.Random, pool: Sequence[str], gold: Sequence[str], count: int
    ) -> list[str]:
        gold_phrases = [p for c in gold for p in self.lowered[c]]

        def overlaps(code: str) -> bool:
            return any(p in g or g in p for p in self.lowered[code] for g in gold_phrases)

        candidates = [c for c in pool if c not in gold and self.kinds[c] != "status"]
        candidates = [c for c in candidates if not overlaps(c)]
        return rng.sample(candidates, min(count, len(candidates)))

    def write(
        self,
        rng: random.Random,
        gold: Sequence[str],
        distractor_pool: Sequence[str],
        distractor_rate: float,
        filler_sentences: int,
    ) -> tuple[str, list[EvidenceSpan], int, int]:
        """Text, gold spans, number of distractors and of abbreviated mentions of one note."""
        female = rng.random() < 0.5
        said = " ".join(self.phrases[c][0].lower() for c in gold)
        if "prostat" in said or "female" in said:  # keep sex-specific codes plausible
            female = "female" in said
        values = {
            "age": rng.randint(24, 94),
            "sex": "woman" if female else "man",
            "Pron": "She" if female else "He",
            "day": rng.randint(1, 4),
            "treatment": rng.choice(_TREATMENTS),
        }

        def mention(code: str, upper: bool = False) -> _Mention:
            return _Mention(self.surface(rng, code, upper), code)

        hpi: list[_Sentence] = []
        pmh: list[_Mention] = []
        course: list[_Sentence] = []
        plan: list[_Sentence] = []
        family: list[_Sentence] = []
        acute = [c for c in gold if self.kinds[c] == "acute"]
        opener = acute[0] if acute else None
        if opener is not None:
            hpi.append(_fill(rng.choice(_HPI_OPEN), [mention(opener)], values))
        else:
            hpi.append(_fill(rng.choice(_HPI_OPEN_PLAIN), [], values))
        for code in gold:
            if code == opener:
                continue
            kind = self.kinds[code]
            roll = rng.random()
            if kind == "chronic":
                if roll < 0.5:
                    pmh.append(mention(code))
                elif roll < 0.7:
                    hpi.append(_fill(rng.choice(_CHRONIC_LINES), [mention(code)], values))
                else:
                    plan.append(_fill(rng.choice(_PLAN_CHRONIC), [mention(code)], values))
            elif kind == "status":
                if roll < 0.4:
                    pmh.append(mention(code))
                else:
                    plan.append(_fill(rng.choice(_PLAN_STATUS), [mention(code)], values))
            elif roll < 0.6:
                course.append(_fill(rng.choice(_ACUTE_LINES), [mention(code)], values))
            else:
                plan.append(_fill(rng.choice(_PLAN_ACUTE), [mention(code)], values))

        n_distract = int(distractor_rate) + (rng.random() < distractor_rate % 1)
        distract = self.distractor_codes(rng, distractor_pool, gold, n_distract)
        for code in distract:
            fake = _Mention(self.surface(rng, code), None)
            kind = rng.randrange(3)
            if kind == 0:
                hpi.append(_fill(rng.choice(_NEGATED), [fake], values))
            elif kind == 1:
                course.append(_fill(rng.choice(_RULED_OUT), [fake], values))
            else:
                family.append(_fill(rng.choice(_FAMILY), [fake], values))

        # Every third filler joins the HPI (after its opening line), the rest the course.
        picks = rng.sample(self.fillers, min(filler_sentences, len(self.fillers)))
        picks += [rng.choice(self.fillers) for _ in range(filler_sentences - len(picks))]
        for i, make in enumerate(picks):
            filler = (make(rng),)
            if i % 3 == 0:
                hpi.insert(rng.randint(1, len(hpi)), filler)
            else:
                course.insert(rng.randint(0, len(course)), filler)
        if not course:
            course.append(("The hospital course was uneventful.",))

        repeated = [c for c in gold if rng.random() < REPEAT_PROB]
        sections: list[tuple[str, list[_Sentence]]] = [
            ("Chief complaint", [(rng.choice(self.complaints).capitalize() + ".",)]),
            ("History of present illness", hpi),
        ]
        if pmh:
            sections.append(("Past medical history", [_list_sentence(pmh, rng.random() < 0.3)]))
        if family:
            sections.append(("Family history", family))
        social = rng.choice(self.social).format(family=rng.choice(_FAMILY_MEMBERS))
        exam = rng.sample(self.exam, min(len(self.exam), rng.randint(2, 3)))
        sections += [
            ("Social history", [(social,)]),
            ("Physical examination", [(line,) for line in exam]),
            ("Hospital course", course),
        ]
        if plan:
            sections.append(("Assessment and plan", plan))
        if repeated:
            items = [mention(c, upper=rng.random() < 0.3) for c in repeated]
            sections.append(("Discharge diagnoses", [_list_sentence(items, False)]))
        meds = rng.sample(self.medications, min(len(self.medications), rng.randint(2, 4)))
        sections.append(("Discharge medications", [(_join(meds) + ".",)]))
        sections.append(("Disposition", [(rng.choice(_DISPOSITIONS).capitalize() + ".",)]))
        sections.append(("Condition at discharge", [("Stable.",)]))
        text, spans, abbreviated = _render(sections, self.abbreviations)
        return text, spans, len(distract), abbreviated


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _list_sentence(items: Sequence[_Mention], history_prefix: bool) -> _Sentence:
    """``a, b and c.`` with each item a mention; optionally ``h/o a, b and c.``."""
    out: list[str | _Mention] = ["h/o "] if history_prefix else []
    for i, item in enumerate(items):
        if i:
            out.append(" and " if i == len(items) - 1 else ", ")
        if not out:
            item = _Mention(item.text[0].upper() + item.text[1:], item.code)
        out.append(item)
    out.append(".")
    return tuple(out)


def _render(
    sections: Sequence[tuple[str, Sequence[_Sentence]]], abbreviations: dict[str, str]
) -> tuple[str, list[EvidenceSpan], int]:
    parts: list[str] = []
    spans: list[EvidenceSpan] = []
    length = 0
    abbreviated = 0
    for s, (header, sentences) in enumerate(sections):
        heading = ("\n\n" if s else "") + header + ": "
        parts.append(heading)
        length += len(heading)
        for j, sentence in enumerate(sentences):
            if j:
                parts.append(" ")
                length += 1
            for piece in sentence:
                if isinstance(piece, _Mention):
                    if piece.code is not None:
                        spans.append(
                            EvidenceSpan(length, length + len(piece.text), piece.text, piece.code)
                        )
                        abbreviated += piece.text == abbreviations.get(piece.code)
                    piece = piece.text
                parts.append(piece)
                length += len(piece)
    return "".join(parts), spans, abbreviated


# -- the world -------------------------------------------------------------------


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"ccl-demo:{seed}:{name}")


def _split_docs(
    writer: _NoteWriter,
    rng: random.Random,
    split: str,
    code_sets: list[list[str]],
    distractor_pool: Sequence[str],
    cfg: Any,
    keep_spans: bool,
) -> tuple[list[Document], Counter[str]]:
    docs = []
    counts: Counter[str] = Counter()
    for i, gold in enumerate(code_sets):
        text, spans, n_distract, n_abbr = writer.write(
            rng, gold, distractor_pool, cfg.distractor_rate, cfg.filler_sentences
        )
        counts["distractors"] += n_distract
        counts["abbreviated"] += n_abbr
        codes = list(dict.fromkeys(s.code for s in spans))
        docs.append(
            Document(
                id=f"demo-{split}-{i:04d}",
                text=text,
                codes=codes,
                spans=spans if keep_spans else [],
                split=split,
                source=SOURCE,
            )
        )
    return docs, counts


def _check_bank(phrase_bank: dict[str, list[str]]) -> dict[str, list[str]]:
    bank: dict[str, list[str]] = {}
    for code, phrases in phrase_bank.items():
        if isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
            raise ValueError(f"demo world: phrase_bank[{code!r}] must be a list of strings")
        bank.setdefault(canonical_code(str(code)), []).extend(phrases)
    return bank


def build_demo_world(
    cfg: Any, tab: TabularLike, phrase_bank: dict[str, list[str]] | None = None
) -> DemoWorld:
    """Generate the demo world for ``cfg`` (a :class:`ccl.config.DocsConfig`).

    ``phrase_bank`` maps codes to candidate evidence phrases (e.g. gold span
    pairs); codes it lacks fall back to Tabular descriptions and inclusion terms.
    Raises ValueError naming the config field when the request cannot be met.
    """
    cfg = _settings(cfg)
    _check_config(cfg)
    seed = int(cfg.seed)
    codes, shorthand, skipped = _universe(cfg, tab, _stream(seed, "universe"))
    bank = _check_bank(phrase_bank or {})
    phrases, origin = choose_phrases(codes, tab, int(cfg.phrases_per_code), bank)
    kinds = {c: _kind(c, phrases[c][0]) for c in codes}

    k_min, k_max = int(cfg.codes_per_note_min), int(cfg.codes_per_note_max)
    test_capacity = cfg.n_test * min(k_max, len(codes))
    n_unseen = round(cfg.unseen_share * min(len(codes), test_capacity)) if cfg.n_test else 0
    n_unseen = min(n_unseen, len(codes) - 1)
    rng = _stream(seed, "unseen")
    # Unseen codes from shorthand and plain codes alike (at least their share of shorthand ones).
    plain = [c for c in codes if c not in set(shorthand)]
    n_short = min(len(shorthand), math.ceil(n_unseen * len(shorthand) / len(codes)))
    n_short = max(n_short, n_unseen - len(plain))
    unseen_set = set(rng.sample(shorthand, n_short)) | set(rng.sample(plain, n_unseen - n_short))
    unseen = [c for c in codes if c in unseen_set]
    seen = [c for c in codes if c not in unseen_set]
    # Mild skew: codes early in the pool (the common ones) are drawn more often.
    weight = {c: 1.0 / (i + 1) ** 0.5 for i, c in enumerate(codes)}

    def weights(pool: Sequence[str]) -> list[float]:
        return [weight[c] for c in pool]

    train_capacity = cfg.n_train * min(k_max, len(seen))
    repeats = min(MIN_TRAIN_OCCURRENCES, train_capacity // len(seen), cfg.n_train)
    if cfg.n_train and repeats < 1:
        raise ValueError(
            f"demo world: docs.demo.n_train={cfg.n_train} notes of at most {k_max} codes cannot "
            f"hold the {len(seen)} seen codes once each; raise docs.demo.n_train or lower docs.demo.n_codes"
        )
    rng = _stream(seed, "required")
    train_required = [c for _ in range(repeats) for c in rng.sample(seen, len(seen))]
    test_required = rng.sample(unseen, len(unseen)) + rng.sample(seen, len(seen))
    test_required = test_required[: max(test_capacity, len(unseen))]

    writer = _NoteWriter(phrases, kinds, {c: ABBREVIATIONS[c] for c in shorthand})
    plan = {
        "train": (seen, train_required, cfg.n_train),
        "val": (codes, [], cfg.n_val),
        "test": (codes, test_required, cfg.n_test),
        "corpus": (codes, [], cfg.corpus_size),
    }
    out: dict[str, list[Document]] = {}
    counts: dict[str, Counter[str]] = {}
    for split, (pool, required, n_docs) in plan.items():
        rng = _stream(seed, f"{split}-codes")
        sets = _assign_codes(rng, n_docs, pool, weights(pool), required, k_min, k_max, split)
        out[split], counts[split] = _split_docs(
            writer, _stream(seed, f"{split}-text"), split, sets, pool, cfg, split != "corpus"
        )
    world = DemoWorld(
        train=out["train"], val=out["val"], test=out["test"], corpus=out["corpus"],
        codes=codes, seen_codes=seen, unseen_codes=unseen, phrases=phrases,
        shorthand={c: ABBREVIATIONS[c] for c in shorthand},
    )
    world.stats = _stats(world, counts, origin, skipped)
    return world


def _stats(
    world: DemoWorld,
    counts: dict[str, Counter[str]],
    origin: dict[str, str],
    skipped: list[str],
) -> dict[str, Any]:
    groups = {**world.splits(), "corpus": world.corpus}

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 2) if values else 0.0

    test_codes = sorted({c for d in world.test for c in d.codes})
    unseen_test = [c for c in world.unseen_codes if c in set(test_codes)]
    train_counts = Counter(c for d in world.train for c in d.codes)
    return {
        "documents": {k: len(v) for k, v in groups.items()},
        "codes": len(world.codes),
        "seen_codes": len(world.seen_codes),
        "unseen_codes": len(world.unseen_codes),
        "test_codes": len(test_codes),
        "unseen_test_codes": unseen_test,
        "unseen_test_share": round(len(unseen_test) / len(test_codes), 4) if test_codes else 0.0,
        "min_train_occurrences": min((train_counts[c] for c in world.seen_codes), default=0),
        "spans": {k: sum(len(d.spans) for d in v) for k, v in groups.items()},
        "mean_words": {k: mean([len(d.text.split()) for d in v]) for k, v in groups.items()},
        "codes_per_note": {k: mean([len(d.codes) for d in v]) for k, v in groups.items()},
        "distractors": {k: counts[k]["distractors"] for k in groups},
        "abbreviated_mentions": {k: counts[k]["abbreviated"] for k in groups},
        "phrase_origin": dict(Counter(origin[c] for c in world.codes)),
        "shorthand_codes": dict(world.shorthand),
        "unseen_shorthand_codes": [c for c in unseen_test if c in world.shorthand],
        "skipped_pool_codes": skipped,
    }
