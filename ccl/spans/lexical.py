"""The ``lexical`` miner: gold terms found in notes without any LLM.

For each code a note is labelled with, the code's terms (Alphabetic Index
phrases, Tabular descriptions and inclusion terms, as handed in) are expanded
into the ways clinicians write them (:func:`term_variants`: nonessential
modifiers and "unspecified" clauses dropped, common abbreviations, roman
numerals) and searched for in the note token by token:

* tokens match when equal after light normalisation (case, plural ``s``,
  possessive) or, for words of five letters or more, when at most
  ``fuzzy_edits`` missing, extra or swapped letters apart (typos, British
  spelling; see :func:`similar`);
* function words of a term ("of", "with" ...) may be missing in the note, and
  one extra note word may sit inside a mention (``max_gap``);
* a mention never crosses a sentence boundary.

A mention is skipped when a negation cue ("no", "denies", "negative for",
"ruled out", "without evidence of" ...) or a family cue ("mother", "family
history of" ...) stands within ``window`` tokens before it in the same
sentence (unless "but"/"however" ends the cue's scope), when "ruled out" /
"unlikely" follows it, or when it sits under a "Family history" heading.
Overlapping mentions keep the longest. Everything is deterministic.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ccl.icd.terms import plain_forms, tidy

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_BREAK = re.compile(r"[.!?;](?=\s|$)|\n|:(?=\s)")
_HEADING = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&-]{1,40}):")
_ABBREVIATION = re.compile(r"[A-Z][^ ]*[A-Z]")  # two capitals in one word: HTN, AFib

# Words a note may leave out of a term ("COPD exacerbation" for "COPD with exacerbation").
OPTIONAL = frozenset(
    {"of", "the", "a", "an", "and", "in", "with", "to", "for", "on", "by", "at", "due"}
)
# Terms that say nothing on their own.
GENERIC = frozenset(
    {"disease", "disorder", "condition", "syndrome", "other", "unspecified", "status", "history",
     "abnormal", "finding", "findings", "problem", "complication", "complications", "type"}
)
_ROMAN = {"1": "i", "2": "ii", "3": "iii", "4": "iv", "5": "v"}

# Common clinical abbreviations and short forms, one phrase (as it appears in a term) a line:
# "phrase: form | form ...".
_ABBREVIATION_TABLE = """
essential hypertension: HTN
hypertension: HTN
hyperlipidemia: HLD
type 2 diabetes mellitus: T2DM | DM2 | type 2 DM | NIDDM | type 2 diabetes
type 1 diabetes mellitus: T1DM | DM1 | type 1 DM | IDDM | type 1 diabetes
diabetes mellitus: DM | diabetes
atrial fibrillation: AFib | AF | A-fib
congestive heart failure: CHF
heart failure: CHF | HF
chronic obstructive pulmonary disease: COPD
acute kidney failure: AKI | ARF | acute kidney injury
acute kidney injury: AKI
chronic kidney disease: CKD
end stage renal disease: ESRD
atherosclerotic heart disease of native coronary artery: CAD | coronary artery disease
coronary artery disease: CAD
gastro-esophageal reflux disease: GERD | reflux
gastroesophageal reflux disease: GERD
obstructive sleep apnea: OSA
urinary tract infection: UTI
non-st elevation myocardial infarction: NSTEMI
st elevation myocardial infarction: STEMI
myocardial infarction: MI
deep vein thrombosis: DVT
acute embolism and thrombosis of deep veins of lower extremity: DVT | acute DVT
pulmonary embolism: PE
benign prostatic hyperplasia: BPH
cerebral infarction: CVA | stroke
cerebrovascular accident: CVA
altered mental status: AMS
do not resuscitate: DNR
transient cerebral ischemic attack: TIA
transient ischemic attack: TIA
shortness of breath: SOB
major depressive disorder: MDD
generalized anxiety disorder: GAD
post-traumatic stress disorder: PTSD
human immunodeficiency virus: HIV
chronic viral hepatitis c: HCV | chronic hepatitis C
hepatitis c: HCV
rheumatoid arthritis: RA
systemic lupus erythematosus: SLE
acute respiratory distress syndrome: ARDS
peripheral vascular disease: PVD
peripheral arterial disease: PAD
diabetic ketoacidosis: DKA
irritable bowel syndrome: IBS
multiple sclerosis: MS
amyotrophic lateral sclerosis: ALS
urinary incontinence: UI
gastrointestinal hemorrhage: GI bleed | GI hemorrhage
methicillin resistant staphylococcus aureus: MRSA
clostridioides difficile: C. diff | C diff
"""
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    phrase: tuple(form.strip() for form in forms.split("|"))
    for phrase, forms in (line.split(": ", 1) for line in _ABBREVIATION_TABLE.strip().splitlines())
}

NEGATION_BEFORE = ("no", "not", "denies", "denied", "deny", "negative for", "without evidence of",
                   "no evidence of", "no history of", "ruled out", "rule out", "free of",
                   "absence of", "never")
NEGATION_AFTER = ("ruled out", "was negative", "excluded", "unlikely", "has resolved")
FAMILY = ("mother", "father", "brother", "sister", "sibling", "family history", "family hx",
          "fhx", "grandmother", "grandfather", "aunt", "uncle", "cousin", "son", "daughter",
          "maternal", "paternal", "parent")
# "brought in by daughter and found to have X": a relative after these words is not the subject.
NOT_SUBJECT = frozenset({"by", "with", "from", "to", "and"})
SCOPE_END = frozenset({"but", "however", "although", "though", "except", "yet"})
# Words a mention may not skip over: they join two conditions rather than qualify one.
NO_GAP = frozenset({"and", "or", "nor", "but", "versus", "v"})


@functools.lru_cache(maxsize=200_000)
def norm(word: str) -> str:
    """Lower case without a possessive or plural ``s`` ("Diseases" -> "disease")."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


# Prefix pairs that turn a word into its opposite with one or two edits.
_OPPOSITE_PREFIXES = (("hypo", "hyper"), ("inter", "intra"), ("ab", "ad"), ("ante", "anti"))


def _opposites(a: str, b: str) -> bool:
    return any(
        (a.startswith(x) and b.startswith(y)) or (a.startswith(y) and b.startswith(x))
        for x, y in _OPPOSITE_PREFIXES
    )


def _indel_distance(a: str, b: str, limit: int) -> int:
    """Insertions, deletions and adjacent transpositions turning ``a`` into ``b`` (no substitutions).

    Returns ``limit + 1`` as soon as the distance is known to exceed ``limit``.
    """
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                row[j] = prev[j - 1]
            else:
                row[j] = min(prev[j], row[j - 1]) + 1
                if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                    row[j] = min(row[j], prev2[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        prev2, prev = prev, row
    return prev[-1]


@functools.lru_cache(maxsize=500_000)
def similar(a: str, b: str, edits: int = 1) -> bool:
    """Equal, or (words of five letters or more) within ``edits`` typo edits.

    An edit is a missing, extra or swapped letter ("pnuemonia", "haemorrhage",
    "fibrilation"); a substituted letter counts twice, so with one edit
    "dysphagia" never matches "dysphasia", and "hypotension" never matches
    "hypertension" (opposite prefixes are refused outright).
    """
    if a == b:
        return True
    if edits <= 0 or min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > edits or a[0] != b[0]:
        return False
    if _opposites(a, b):
        return False
    return _indel_distance(a, b, edits) <= edits


def words(text: str) -> list[str]:
    return [norm(m.group()) for m in _WORD.finditer(text)]


def _phrase_sub(text: str, phrase: str, replacement: str) -> str | None:
    pattern = re.compile(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", re.IGNORECASE)
    out, n = pattern.subn(replacement, text)
    return out if n else None


def term_variants(
    term: str, abbreviations: Mapping[str, Sequence[str]] = ABBREVIATIONS
) -> list[str]:
    """Ways a clinician writes an ICD term, the term itself first (deduplicated, in order):
    its qualifier-free forms (:func:`ccl.icd.terms.plain_forms`), abbreviations, roman numerals."""
    forms = plain_forms(term)
    expanded = list(forms)
    for form in forms:
        for phrase, shorts in abbreviations.items():
            for abbreviation in shorts:
                replaced = _phrase_sub(form, phrase, abbreviation)
                if replaced:
                    expanded.append(replaced)
    for form in list(expanded):
        m = re.search(r"\b(type|stage|grade|class) ([1-5])\b", form, re.IGNORECASE)
        if m:
            expanded.append(form[: m.start(2)] + _ROMAN[m.group(2)].upper() + form[m.end(2) :])
    out: dict[str, None] = {}
    for form in expanded:
        form = tidy(form)
        if form and form.lower() not in {f.lower() for f in out}:
            out[form] = None
    return list(out)


@dataclass(frozen=True)
class Term:
    """A compiled term: normalised tokens, which ones a note may omit, and the source text."""

    tokens: tuple[str, ...]
    optional: tuple[bool, ...]
    text: str
    exact: bool  # short all-caps forms (abbreviations) match whole tokens only


def compile_term(text: str) -> Term | None:
    """Tokens of ``text`` without leading/trailing function words; ``None`` if nothing specific is left."""
    toks = words(text)
    while toks and toks[0] in OPTIONAL:
        toks.pop(0)
    while toks and toks[-1] in OPTIONAL:
        toks.pop()
    content = [t for t in toks if t not in OPTIONAL]
    if not content or all(t in GENERIC for t in content):
        return None
    if len(content) == 1 and len(content[0]) < 2:
        return None
    exact = len(toks) <= 2 and len(text) <= 8 and bool(_ABBREVIATION.search(text))
    return Term(tuple(toks), tuple(t in OPTIONAL for t in toks), text, exact)


@dataclass(frozen=True)
class Mention:
    """A term found in a note: ``text == note[start:end]``."""

    code: str
    start: int
    end: int
    text: str
    term: str


class _Note:
    """Tokens of one note with offsets, sentence numbers, headings and a first-letter index."""

    def __init__(self, text: str) -> None:
        self.text = text
        breaks = [m.start() for m in _BREAK.finditer(text)]
        self.norms: list[str] = []
        self.spans: list[tuple[int, int]] = []
        self.sentence: list[int] = []
        b = 0
        for m in _WORD.finditer(text):
            while b < len(breaks) and breaks[b] < m.start():
                b += 1
            self.norms.append(norm(m.group()))
            self.spans.append((m.start(), m.end()))
            self.sentence.append(b)
        self.positions: dict[str, list[int]] = {}
        for i, w in enumerate(self.norms):
            self.positions.setdefault(w, []).append(i)
        self.by_letter: dict[str, list[str]] = {}
        for w in self.positions:
            self.by_letter.setdefault(w[0], []).append(w)
        self.headings = [(m.start(), m.group(1).lower()) for m in _HEADING.finditer(text)]

    def starts(self, token: str, edits: int) -> list[int]:
        if len(token) < 5 or edits <= 0:
            return self.positions.get(token, [])
        hits = [
            p
            for w in self.by_letter.get(token[0], ())
            if similar(token, w, edits)
            for p in self.positions[w]
        ]
        return sorted(hits)

    def heading(self, offset: int) -> str:
        current = ""
        for start, name in self.headings:
            if start > offset:
                break
            current = name
        return current


def _match_at(term: Term, note: _Note, p: int, edits: int, max_gap: int) -> int | None:
    """Index of the last note token of ``term`` matched from position ``p``, or ``None``."""
    i, j, gaps, last = 0, p, 0, None
    sentence = note.sentence[p]
    n = len(note.norms)
    while i < len(term.tokens):
        here = j < n and note.sentence[j] == sentence
        if here and (
            note.norms[j] == term.tokens[i]
            or (not term.exact and similar(term.tokens[i], note.norms[j], edits))
        ):
            last, i, j = j, i + 1, j + 1
        elif term.optional[i]:
            i += 1
        elif last is not None and here and gaps < max_gap and note.norms[j] not in NO_GAP:
            gaps, j = gaps + 1, j + 1
        else:
            return None
    return last


def _cue_tokens(cues: Iterable[str]) -> list[tuple[str, ...]]:
    return [tuple(words(c)) for c in cues]


_NEG_BEFORE = _cue_tokens(NEGATION_BEFORE)
_NEG_AFTER = _cue_tokens(NEGATION_AFTER)
_FAMILY = _cue_tokens(FAMILY)


def _find_cue(
    seq: Sequence[str], cues: Sequence[tuple[str, ...]], from_end: bool, subject: bool = False
) -> bool:
    """True when a cue occurs in ``seq`` with no scope-ending word between it and the mention.

    With ``subject``, a cue right after a preposition ("by daughter") does not count.
    """
    n = len(seq)
    for k in range(n):
        for cue in cues:
            if tuple(seq[k : k + len(cue)]) != cue:
                continue
            if subject and k > 0 and seq[k - 1] in NOT_SUBJECT:
                continue
            between = seq[k + len(cue) :] if from_end else seq[:k]
            ends = SCOPE_END if from_end else SCOPE_END - {"but"}  # "considered but ruled out"
            if not ends.intersection(between):
                return True
    return False


class LexicalMiner:
    """Find the terms of given codes in notes (see the module docstring)."""

    def __init__(
        self,
        terms: Mapping[str, Iterable[str]],
        fuzzy_edits: int = 1,
        window: int = 6,
        max_gap: int = 1,
        abbreviations: Mapping[str, Sequence[str]] = ABBREVIATIONS,
    ) -> None:
        self.edits = fuzzy_edits
        self.window = window
        self.max_gap = max_gap
        self._raw = {code: list(ts) for code, ts in terms.items()}
        self._abbreviations = abbreviations
        self._compiled: dict[str, list[Term]] = {}
        self.skipped: Counter[str] = Counter()

    def terms_for(self, code: str) -> list[Term]:
        if code not in self._compiled:
            seen: dict[tuple[str, ...], Term] = {}
            for raw in self._raw.get(code, ()):
                for variant in term_variants(raw, self._abbreviations):
                    term = compile_term(variant)
                    if term is not None and term.tokens not in seen:
                        seen[term.tokens] = term
            self._compiled[code] = list(seen.values())
        return self._compiled[code]

    def context(self, note: _Note, first: int, last: int) -> str | None:
        """``"negated"`` / ``"family"`` when cues around tokens ``first..last`` say so, else None."""
        sentence = note.sentence[first]
        lo = first
        while lo > 0 and first - lo < self.window and note.sentence[lo - 1] == sentence:
            lo -= 1
        hi = last + 1
        while hi < len(note.norms) and hi - last <= self.window and note.sentence[hi] == sentence:
            hi += 1
        before, after = note.norms[lo:first], note.norms[last + 1 : hi]
        if _find_cue(before, _FAMILY, from_end=True, subject=True) or "family" in note.heading(
            note.spans[first][0]
        ):
            return "family"
        if _find_cue(before, _NEG_BEFORE, from_end=True) or _find_cue(
            after, _NEG_AFTER, from_end=False
        ):
            return "negated"
        return None

    def find(self, text: str, codes: Sequence[str]) -> list[Mention]:
        """Affirmed mentions of ``codes`` in ``text``, in document order."""
        note = _Note(text)
        found: list[tuple[int, int, str, str]] = []  # first token, last token, code, term
        for code in dict.fromkeys(codes):
            for term in self.terms_for(code):
                for p in note.starts(term.tokens[0], 0 if term.exact else self.edits):
                    last = _match_at(term, note, p, self.edits, self.max_gap)
                    if last is not None:
                        found.append((p, last, code, term.text))
        mentions: list[Mention] = []
        taken: list[tuple[int, int, str]] = []
        # Longest first; an identical span may serve several codes, a contained one may not.
        for first, last, code, term in sorted(found, key=lambda f: (f[0] - f[1], f[0], f[2])):
            start, end = note.spans[first][0], note.spans[last][1]
            if any(s < end and start < e and not (s == start and e == end) for s, e, _ in taken):
                continue
            if any(s == start and e == end and c == code for s, e, c in taken):
                continue
            reason = self.context(note, first, last)
            if reason:
                self.skipped[reason] += 1
                taken.append((start, end, code))
                continue
            taken.append((start, end, code))
            mentions.append(Mention(code, start, end, text[start:end], term))
        self.skipped["kept"] += len(mentions)
        return sorted(mentions, key=lambda m: (m.start, m.end, m.code))

    def extract(self, text: str, codes: Sequence[str]) -> dict[str, list[str]]:
        """``{code: [verbatim spans]}`` for every code with at least one affirmed mention."""
        out: dict[str, list[str]] = {}
        for m in self.find(text, codes):
            out.setdefault(m.code, []).append(m.text)
        return out


def locate(span: str, text: str, edits: int = 1, max_gap: int = 1) -> tuple[int, int] | None:
    """Where ``span`` (e.g. copied by an LLM) occurs in ``text``: exactly, ignoring case, or fuzzily."""
    span = tidy(span)
    if not span:
        return None
    i = text.find(span)
    if i < 0:
        i = text.lower().find(span.lower())
    if i >= 0:
        return i, i + len(span)
    toks = words(span)
    if not toks:
        return None
    term = Term(tuple(toks), tuple(t in OPTIONAL for t in toks), span, exact=False)
    if term.optional[0]:
        term = Term(term.tokens, (False,) + term.optional[1:], span, exact=False)
    note = _Note(text)
    for p in note.starts(toks[0], edits):
        last = _match_at(term, note, p, edits, max_gap)
        if last is not None:
            return note.spans[p][0], note.spans[last][1]
    return None
