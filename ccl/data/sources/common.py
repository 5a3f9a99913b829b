"""Helpers every document source shares: code mapping, text and offsets, span trimming, splits, files.

**Code mapping rule** (:class:`CodeMapper`). Datasets are coded in older
ICD-10-CM years (MDACE: FY2020-ish, MIMIC-IV: FY2015-2022, CodiEsp: CIE-10-ES
2018); the Tabular List of ``icd.year`` has since split some codes. A code is
kept as is when it is billable in the loaded Tabular List. Otherwise the
label's own meaning chooses its billable descendant:

1. the *anchor* is the code itself when the list has it (a category or
   subcategory that now needs more characters), else the code without its
   trailing ``X`` placeholders and 7th character (``W19.XXX`` -> ``W19``), else
   its longest existing prefix of at least 3 characters (the reason then starts
   with ``ancestor_``);
2. among the anchor's billable descendants (those with the same 7th character
   when the code had one; Tabular order otherwise puts ``A``, initial
   encounter, first), the replacement is, in this order of preference:

   * the only one (``unique_descendant``);
   * where the anchor's children are split by **sex** (each says "female" or
     "male": ``N35.9`` -> ``N35.91x`` male / ``N35.92`` female, ``C50.9``) or by
     **age** (each says "child" or "adult": ``T74.2``, ``T76.2``; child under 18,
     as the T74/T76 guideline), the document's own words decide
     (:class:`MappingContext`, :func:`document_sex`, :func:`document_age_group`:
     "Una mujer de 35 años" -> ``N35.92``; a 16-year-old -> ``T74.22XA``), and the
     default below is taken within that half (``sex_descendant``,
     ``age_descendant``); when the document does not say, the label is dropped
     and counted as ``ambiguous_sex`` / ``ambiguous_age``, never guessed;
   * the one the Alphabetic Index gives for the anchor's term
     (``index_descendant``, when an :class:`IndexHints` is given): the Index
     entries whose phrase, normalised, equals the anchor's description,
     normalised, and whose code is a candidate; the code most of them give,
     ties in Tabular order. ``G20`` *Parkinson's disease* -> ``G20.A1``, the
     code of the Index's "Disease, Parkinson's" (not ``G20.C`` *Parkinsonism,
     unspecified*);
   * the code of the Index entry that names the anchor's term with its
     nonessential modifiers and no further qualifier (``index_term_descendant``,
     :meth:`IndexHints.naming`): "Diabetes, diabetic (mellitus) (sugar), type 2"
     names ``E11`` *Type 2 diabetes mellitus* and gives ``E11.9``, its default
     (ties: the candidate that is the term's unspecified form);
   * the first whose description (less any 7th-character meaning) means the
     anchor's (``same_description_descendant``: ``I24.8`` -> ``I24.89``,
     ``T14.90`` -> ``T14.90XA``, ``K22.8`` *Other specified diseases of
     esophagus* -> ``K22.89`` *Other specified disease of esophagus*);
   * the anchor's ``.9``-style child when it keeps the anchor's term and adds
     "unspecified" or "without"/"not" (``unspecified_child_descendant``:
     ``E09`` -> ``E09.9`` *... without complications*, not ``E09.8`` *... with
     unspecified complications*), and the default within it;
   * among the children that keep the anchor's term (their description
     contains the anchor's, normalised), the one whose description adds
     "unspecified" most often, outside a "with" clause of its own
     (``unspecified_descendant``: ``E87.2`` -> ``E87.20`` *Acidosis,
     unspecified*; ``A04.7`` -> ``A04.72`` *..., not specified as recurrent*),
     then "without"/"not" right after the term (``without_descendant``: the
     default of a with/without split, as the coding conventions assign
     "without" when a complication is not documented: ``G20`` -> ``G20.A1``
     *Parkinson's disease without dyskinesia, without mention of fluctuations*,
     not ``G20.C`` *Parkinsonism, unspecified*, which is another term), then
     "other" (``other_descendant``: ``K83.0`` -> ``K83.09`` *Other
     cholangitis*), then "unspecified" anywhere (``L98.49`` -> ``L98.499`` *...
     with unspecified severity*); then the "unspecified" and "other" rules over
     all candidates. Ties (:func:`_most_added`): a "without" default, then
     "unspecified" most often, then the **fewest added qualifiers** (``Q75.0``
     -> ``Q75.009`` *Craniosynostosis, unspecified*, not ``Q75.001`` *...,
     unspecified type, unilateral*), then most words shared with the anchor's
     description, then the shortest code, then Tabular order;
   * else the first in Tabular order (``first_descendant``): a guess, counted
     under its own name and warned about with the codes it concerns.

   A default that names a **sibling concept** rather than the anchor's (it lacks
   a word of the anchor's description that another candidate keeps, and does not
   say "unspecified": ``I82.2`` *... of vena cava and other thoracic veins* ->
   ``I82.290`` *... of other thoracic veins*; ``R74.0`` *... transaminase and
   lactic acid dehydrogenase* -> ``R74.01``) is not taken: the label's own
   evidence text chooses the child whose own words it says
   (``evidence_descendant``, warned: "vena cava inferior" -> ``I82.220``,
   "hipertransaminasemia" -> ``R74.01``), else the label is dropped and counted
   as ``ambiguous_sibling``.

   "Means" compares *normalised* descriptions (:func:`normalise_term`): lower
   case, punctuation and parenthesised text dropped, plural nouns made singular
   (``diseases`` = ``disease``), "other specified" and "not elsewhere
   classified" read as "other", "not specified" and "NOS" as "unspecified",
   "uncomplicated" as "without complication";
3. a code with no anchor is dropped (``not_in_tabular``); a string that is not
   code-shaped is dropped (``malformed``).

Every decision is counted per occurrence and listed per distinct code in
:meth:`CodeMapper.report` (``remaps``: label, mapped code, rule, occurrences),
so a run's ``data_manifest.json`` says exactly what changed and
``python -m ccl.cli.stats`` prints it as a table.
"""

from __future__ import annotations

import functools
import random
import re
import string
import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ccl.icd.codes import canonical_code, is_well_formed
from ccl.icd.tabular import TabularList
from ccl.records import Document, RecordError
from ccl.utils.downloads import fetch_url, offline_reason

DOWNLOAD_TIMEOUT_S = 60
_UNSPECIFIED = re.compile(r"\bunspecified\b")


class MissingDataError(FileNotFoundError):
    """A data file or folder is missing; the message names it and says how to get it."""


class DownloadError(RuntimeError):
    """A public file could not be fetched; the message names the URL and the offline fix."""


def option(cfg: Any, name: str, default: Any) -> Any:
    """``cfg.name`` when the config declares it, else ``default``; ``name`` may be dotted
    (``codiesp.language``: the source's own block; absent in a config older than the block).

    Lets a loader read an optional knob (e.g. ``codiesp.language``) from configs that
    predate it, whether ``cfg`` is a dataclass or an OmegaConf node.
    """
    value = cfg
    for part in name.split("."):
        value = getattr(value, part, None) if value is not None else None
    return default if value is None else value


def choice(cfg: Any, name: str, default: str, allowed: Sequence[str], what: str) -> str:
    """``docs.<name>`` (``default`` when unset) after checking it is one of ``allowed``.

    Raises ``ValueError`` ``docs.<name>='x': <what> ('a', 'b')``; ``what`` says whose
    options they are ("CodiEsp has").
    """
    value = str(option(cfg, name, default))
    if value not in allowed:
        raise ValueError(f"docs.{name}={value!r}: {what} {tuple(allowed)}")
    return value


# -- ICD-10-CM code mapping ------------------------------------------------------


def _anchor(code: str, tab: TabularList) -> tuple[str | None, bool]:
    """The Tabular node a non-billable code maps from, and whether it is a shortened prefix."""
    if code in tab:
        return code, False
    bare = code.replace(".", "")
    stem = bare[:6].rstrip("X") if len(bare) == 7 else bare.rstrip("X")
    if canonical_code(stem) in tab:
        return canonical_code(stem), False
    for n in range(len(stem) - 1, 2, -1):
        if canonical_code(stem[:n]) in tab:
            return canonical_code(stem[:n]), True
    return None, False


def _billable_descendants(anchor: str, seventh: str | None, tab: TabularList) -> list[str]:
    start, end = tab.subtree_span(anchor)
    found = [tab.code_at(i) for i in range(start, end)]
    found = [c for c in found if tab.is_billable(c)]
    if seventh:
        same = [c for c in found if len(c.replace(".", "")) == 7 and c.endswith(seventh)]
        found = same or found
    return found


_PLURAL_KEEP = ("ss", "us", "is", "ys", "as", "os")
# Singular nouns of the Tabular List that end in -s like a plural.
_SINGULAR_S = frozenset(
    ["diabetes", "herpes", "rabies", "scabies", "measles", "mumps", "series", "species", "feces",
     "lens", "pubes", "ascites", "caries", "rickets", "nates", "biceps", "triceps", "glans"]
)
_TERM_PHRASES = (
    (re.compile(r"\bother specified\b"), "other"),
    (re.compile(r"\bnot elsewhere classified\b"), "other"),
    (re.compile(r"\bnot otherwise specified\b"), "unspecified"),
    (re.compile(r"\bnot specified\b"), "unspecified"),
    (re.compile(r"\bnos\b"), "unspecified"),
    (re.compile(r"\bnec\b"), "other"),
    (re.compile(r"\buncomplicated\b"), "without complication"),
)
_TERM_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_TERM_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _singular(word: str) -> str:
    """A plural noun's singular by its ending (``diseases`` -> ``disease``, ``injuries`` -> ``injury``)."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_PLURAL_KEEP) or "'" in word:
        return word
    if word in _SINGULAR_S:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    return word[:-1]


@functools.lru_cache(maxsize=1 << 16)
def normalise_term(text: str) -> str:
    """A description or Index phrase reduced to its meaning's words (see the module doc).

    ``"Other specified diseases of esophagus"`` -> ``"other disease of esophagus"``;
    ``"Enterocolitis due to C. difficile, not specified as recurrent"`` ->
    ``"enterocolitis due to c difficile unspecified as recurrent"``.
    """
    low = _TERM_PARENS.sub(" ", text.lower().replace("\u2019", "'"))
    for pattern, word in _TERM_PHRASES:
        low = pattern.sub(word, low)
    return " ".join(_singular(w) for w in _TERM_WORD.findall(low))


class IndexHints:
    """What the Alphabetic Index codes a term as: normalised phrase -> codes, with counts.

    Built from :class:`ccl.icd.index.IndexEntry` records (validated against the
    Tabular List, :func:`ccl.icd.index.load_valid_entries`) of the Index to
    Diseases and Injuries and the External Cause index; the tables (drugs,
    neoplasms) code by column, not by term, and are left out. Besides the
    phrase, each code keeps the words of every entry that gives it (the phrase's
    and the nonessential modifiers', e.g. "Diabetes, diabetic (mellitus) (sugar),
    type 2" -> E11.9), for :meth:`naming`.
    """

    SOURCES = ("index", "eindex")

    def __init__(self, entries: Iterable[Any]) -> None:
        self._codes: dict[str, Counter[str]] = {}
        self._words: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = {}
        for e in entries:
            if getattr(e, "source", None) in self.SOURCES and getattr(e, "role", "code") in ("code", "see"):
                code = canonical_code(e.code)
                self._codes.setdefault(normalise_term(e.phrase), Counter())[code] += 1
                extra = " ".join(getattr(e, "nonessential", ()) or ())
                self._words.setdefault(code, []).append((_content(e.phrase), _content(extra)))
        self.size = len(self._codes)

    def codes_for(self, term: str) -> Counter[str]:
        """Codes the Index gives for ``term`` (any wording that normalises alike), with counts."""
        return self._codes.get(normalise_term(term), Counter())

    def naming(self, term: str, codes: Iterable[str]) -> Counter[str]:
        """Of ``codes``, those an Index entry gives for ``term`` itself, with counts.

        An entry names ``term`` when its phrase says nothing ``term`` does not and
        ``term`` says nothing the phrase and its nonessential modifiers do not (content
        words, :func:`normalise_term`, in any order): "type 2 diabetes (mellitus)
        (sugar)" names "Type 2 diabetes mellitus" and gives E11.9, its default.
        """
        want = _content(term)
        out: Counter[str] = Counter()
        for code in codes:
            for phrase, extra in self._words.get(code, ()):
                if phrase and phrase <= want and want <= phrase | extra:
                    out[code] += 1
        return out

    def __bool__(self) -> bool:
        return bool(self._codes)


# Words that join a description's terms without naming anything.
_STOP = frozenset(["a", "an", "and", "the", "of", "in", "on", "to", "or", "by", "for", "at", "as"])


def _content(text: str) -> frozenset[str]:
    return frozenset(normalise_term(text).split()) - _STOP


# -- the document's own context: sex, age and the label's evidence ------------------

_SEX_WORDS = {
    # No "Mr"/"Ms"/"MR": in notes "MR" is mitral regurgitation or magnetic resonance.
    "female": r"woman|female|girl|lady|she|her|pregnant|mujer|femenin[oa]|ni[nñ]a|"
              r"se[nñ]ora|embarazada|gestante|ella|la paciente|una paciente|chica",
    "male": r"man|male|boy|gentleman|he|his|him|var[oó]n|hombre|masculino|ni[nñ]o|"
            r"se[nñ]or|él|el paciente|un paciente|chico",
}
_SEX_PATTERNS = {k: re.compile(rf"\b(?:{v})\b", re.IGNORECASE) for k, v in _SEX_WORDS.items()}
_SEX_FIELD = re.compile(r"\bsex\s*:\s*([fm])\b", re.IGNORECASE)  # MIMIC's "Sex:   F"
# An age, not a duration: "mujer de 35 años" (not "hace 3 años", "durante 2 años", "después
# de 2 años"), "a 16-year-old", "16 y/o", "aged 70", "70 years of age".
_AGE_YEARS = re.compile(
    r"(?<!después )(?<!despues )(?<!antes )(?<!más )(?<!mas )(?<!menos )(?<!largo )"
    r"\b(?:de|con|tiene)\s+(\d{1,3})\s+años"
    r"|\b(\d{1,3})\s*-?\s*(?:year|yr)s?\s*-?\s*old\b"
    r"|\b(\d{1,3})\s*(?:y/o|yo|y\.o\.)(?!\w)"
    r"|\baged\s+(\d{1,3})\b"
    r"|\b(\d{1,3})\s+years?\s+of\s+age\b",
    re.IGNORECASE,
)
_AGE_FIELD = re.compile(r"\bage\s*:\s*(\d{1,3})\b", re.IGNORECASE)
_AGE_YOUNG = re.compile(r"\b\d{1,2}\s*(?:-\s*)?(?:meses|mes|semanas|días|dias|months?|weeks?|days?)"
                        r"(?:\s*(?:-\s*)?(?:de\s+(?:edad|vida)|old))", re.IGNORECASE)
_AGE_WORDS = {
    "child": re.compile(r"\b(?:child|infant|newborn|neonate|toddler|adolescent|teenager|niñ[oa]|"
                        r"lactante|recién nacid[oa]|neonato|adolescente|menor de edad)\b", re.IGNORECASE),
    "adult": re.compile(r"\b(?:adult|elderly|adult[oa]|ancian[oa])\b", re.IGNORECASE),
}
ADULT_AGE = 18  # T74/T76: "child" under 18 (ICD-10-CM Official Guidelines, I.C.19.f; CDC)


def document_sex(text: str) -> str | None:
    """``"female"``, ``"male"`` or ``None`` (undecided) from a note's own words (EN/ES).

    A ``Sex: F``/``M`` field decides; otherwise sex words and pronouns are counted
    ("mujer", "la paciente", "she" vs "varón", "el paciente", "he"): one sex decides
    when it has at least three times the other's count.
    """
    field = _SEX_FIELD.search(text)
    if field:
        return "female" if field.group(1).lower() == "f" else "male"
    counts = {k: len(p.findall(text)) for k, p in _SEX_PATTERNS.items()}
    female, male = counts["female"], counts["male"]
    if female and female >= 3 * male:
        return "female"
    if male and male >= 3 * female:
        return "male"
    return None


def document_age_group(text: str) -> str | None:
    """``"child"`` (under :data:`ADULT_AGE`), ``"adult"`` or ``None`` from a note's own words.

    The first age the note states ("Una mujer de 35 años", "a 16-year-old", "Age: 70";
    not a duration: "hace 10 años", "durante 2 años", "for 1 year") decides; an age in months, weeks or days is a
    child; else child/adult words ("niño", "lactante", "adolescent" vs "adulto",
    "elderly") counted as for :func:`document_sex`.
    """
    ages = [(m.start(), int(next(g for g in m.groups() if g)))
            for p in (_AGE_YEARS, _AGE_FIELD) for m in p.finditer(text)]
    young = _AGE_YOUNG.search(text)
    if young:
        ages.append((young.start(), 0))
    if ages:
        return "child" if min(ages)[1] < ADULT_AGE else "adult"
    child, adult = (len(_AGE_WORDS[k].findall(text)) for k in ("child", "adult"))
    if child and child >= 3 * adult:
        return "child"
    if adult and adult >= 3 * child:
        return "adult"
    return None


# Spanish words of CodiEsp's evidence for the qualifiers that tell ICD-10-CM siblings apart.
_GLOSSARY = {
    "derecho": "right", "derecha": "right", "izquierdo": "left", "izquierda": "left",
    "ambos": "bilateral", "ambas": "bilateral", "agudo": "acute", "aguda": "acute",
    "cronico": "chronic", "cronica": "chronic",
    "toracica": "thoracic", "toracico": "thoracic", "recurrente": "recurrent",
    "mujer": "female", "varon": "male", "hombre": "male", "nino": "child", "nina": "child",
    "adulto": "adult", "adulta": "adult", "superior": "superior", "inferior": "inferior",
    "anterior": "anterior", "posterior": "posterior", "primario": "primary", "primaria": "primary",
    "secundario": "secondary", "secundaria": "secondary", "maligno": "malignant", "maligna": "malignant",
    "benigno": "benign", "benigna": "benign", "profunda": "deep", "profundo": "deep",
    "superficial": "superficial", "cava": "cava", "pierna": "leg", "brazo": "arm", "ojo": "eye",
    "embarazo": "pregnancy", "trimestre": "trimester", "primer": "first", "segundo": "second",
    "tercer": "third", "abierta": "open", "cerrada": "closed", "desplazada": "displaced",
}


def _plain(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def evidence_words(texts: Iterable[str]) -> frozenset[str]:
    """The words of evidence texts, accents dropped, with English for Spanish qualifiers."""
    words: set[str] = set()
    for text in texts:
        for w in re.findall(r"\w+", _plain(text.lower())):
            for form in (w, _singular(w)):
                words.add(form)
                if form in _GLOSSARY:
                    words.add(_GLOSSARY[form])
    return frozenset(words)


class MappingContext:
    """What a document says that a label's mapping may need: its text and the label's evidence.

    ``text``: the note (sex and age words decide a split by sex or age);
    ``evidence``: the evidence texts given for this label in this note (they decide
    between siblings that name different things, e.g. superior / inferior vena cava).
    Sex and age are read once, on first use.
    """

    def __init__(self, text: str = "", evidence: Iterable[str] = ()) -> None:
        self.text = text
        self.evidence = tuple(evidence)
        self._sex: str | None | bool = False
        self._age: str | None | bool = False

    def value(self, axis: str) -> str | None:
        """The note's value of ``axis`` (``"sex"``: female/male; ``"age"``: child/adult)."""
        if axis == "sex":
            if self._sex is False:
                self._sex = document_sex(self.text)
            return self._sex  # type: ignore[return-value]
        if self._age is False:
            self._age = document_age_group(self.text)
        return self._age  # type: ignore[return-value]


_AXES = {"sex": ("female", "male"), "age": ("child", "adult")}


def _axis_groups(
    anchor: str, candidates: list[str], tab: TabularList
) -> tuple[str, dict[str, list[str]]] | None:
    """The sex or age split of ``anchor``'s children, or ``None``.

    A split: every child of the anchor that holds candidates says exactly one value
    of the axis in its description (``"female"``/``"male"``, ``"child"``/``"adult"``)
    and both values occur (``N35.9`` -> ``N35.91`` *..., male* / ``N35.92`` *...,
    female*; ``T74.2`` -> ``T74.21`` *Adult ...* / ``T74.22`` *Child ...*). Returns the
    axis and the candidates under each value.
    """
    kids = []
    for child in tab.children(anchor):
        start, end = tab.subtree_span(child)
        inside = {tab.code_at(i) for i in range(start, end)}
        held = [c for c in candidates if c in inside]
        if held:
            kids.append((set(normalise_term(tab.description(child)).split()), held))
    for axis, values in _AXES.items():
        groups: dict[str, list[str]] = {v: [] for v in values}
        for words, held in kids:
            said = [v for v in values if v in words]
            if len(said) != 1:
                break
            groups[said[0]].extend(held)
        else:
            if all(groups.values()):
                return axis, groups
    return None


def _common_ancestor(codes: list[str], tab: TabularList) -> str:
    chains = [[c, *tab.ancestors(c)] for c in codes]
    shared = set(chains[0]).intersection(*map(set, chains[1:]))
    return next(c for c in chains[0] if c in shared)


def _related(anchor: str, code: str, candidates: list[str], tab: TabularList) -> bool:
    """Whether ``code`` still means ``anchor`` rather than one sibling concept of several.

    Unrelated: it lacks a content word of the anchor's description that another
    candidate keeps, i.e. the children share the anchor's words out among them
    (``I82.2`` *... of vena cava and other thoracic veins* -> ``I82.290`` *... of other
    thoracic veins* lacks "vena cava", which ``I82.21x``/``I82.22x`` keep; ``R74.0``
    *... transaminase and lactic acid dehydrogenase* -> ``R74.01``). Words compare by
    their first six letters ("exophthalmic" = "exophthalmos"). A candidate that says
    "unspecified" where the anchor does not say it more often is the anchor's
    unspecified form, so related (``B99`` *Other and unspecified infectious diseases*
    -> ``B99.9`` *Unspecified infectious disease*).
    """
    desc = _base_description(code, tab)
    anchor_desc = normalise_term(tab.description(anchor))
    unspecified = _main_clause(desc, anchor_desc).split().count("unspecified")
    if unspecified and unspecified >= _main_clause(anchor_desc, anchor_desc).split().count("unspecified"):
        return True
    stems = {w[:6] for w in desc.split()}
    lacking = {w[:6] for w in _content(tab.description(anchor))} - stems
    if not lacking:
        return True
    kept_elsewhere = set()
    for other in candidates:
        if other != code:
            kept_elsewhere |= lacking & {w[:6] for w in _base_description(other, tab).split()}
    return not kept_elsewhere


def _adds_unspecified(anchor_desc: str, desc: str) -> bool:
    """``desc`` says "unspecified" more often than ``anchor_desc``, outside a "with" clause."""
    count = lambda d: _main_clause(d, anchor_desc).split().count("unspecified")  # noqa: E731
    return count(desc) > count(anchor_desc)


def _said(word: str, said: frozenset[str]) -> bool:
    """``word`` is in ``said``, or (6 letters or more) its first six letters are inside one
    of its words: Spanish and English share stems ("transaminasas" / "transaminase")."""
    if word in said or _singular(word) in said:
        return True
    return len(word) >= 6 and any(word[:6] in w for w in said)


def _by_evidence(
    anchor: str, candidates: list[str], tab: TabularList, evidence: Iterable[str]
) -> tuple[str, list[str]] | None:
    """The anchor's children whose own words the evidence says most, and their candidates.

    A child's own words are those of its description that not every sibling's has
    (``I82.22`` *... of inferior vena cava*: "inferior"; ``R74.01`` *Elevation of levels
    of liver transaminase levels*: "liver", "transaminase"); the evidence's words are
    :func:`evidence_words` ("vena cava inferior"). Returns the winning child (the anchor
    when several tie) and the candidates under the winners; ``None`` when the evidence
    says none of the children's own words.
    """
    said = evidence_words(evidence)
    if not said:
        return None
    words = {child: _content(tab.description(child)) for child in tab.children(anchor)}
    if len(words) < 2:
        return None
    common = frozenset.intersection(*words.values())
    scores = {child: sum(_said(w, said) for w in mine - common) for child, mine in words.items()}
    best = max(scores.values())
    winners = [c for c, n in scores.items() if n == best]
    if best == 0:
        return None
    inside: set[str] = set()
    for child in winners:
        start, end = tab.subtree_span(child)
        inside.update(tab.code_at(i) for i in range(start, end))
    subset = [c for c in candidates if c in inside]
    if not subset:
        return None
    return (winners[0] if len(winners) == 1 else anchor), subset


def map_code(
    code: str,
    tab: TabularList,
    index: IndexHints | None = None,
    context: MappingContext | None = None,
) -> tuple[str | None, str]:
    """Map ``code`` to a billable code of ``tab``: ``(new_code or None, reason)`` (see module doc).

    ``index`` (optional) lets the Alphabetic Index choose among descendants;
    ``context`` (optional) is the document's own text and the label's evidence,
    which decide splits by sex, age or named sibling (without it, or when it says
    nothing, such a label is ``None``, reason ``ambiguous_<sex|age|sibling>``).
    """
    canon = canonical_code(code)
    if not is_well_formed(canon):
        return None, "malformed"
    if tab.is_billable(canon):
        return canon, "valid"
    anchor, shortened = _anchor(canon, tab)
    if anchor is None:
        return None, "not_in_tabular"
    bare = canon.replace(".", "")
    seventh = bare[6] if len(bare) == 7 else None
    candidates = _billable_descendants(anchor, seventh, tab)
    if not candidates:
        return None, "no_billable_descendant"
    prefix = "ancestor_" if shortened else ""
    if len(candidates) == 1:
        return candidates[0], prefix + "unique_descendant"
    split = _axis_groups(anchor, candidates, tab)
    if split is not None:
        axis, groups = split
        value = context.value(axis) if context is not None else None
        if value is None:
            return None, f"ambiguous_{axis}"
        subset = groups[value]
        node = _common_ancestor(subset, tab)
        return _choose(node, subset, tab, index)[0], f"{prefix}{axis}_descendant"
    new, rule = _choose(anchor, candidates, tab, index)
    if rule.startswith("index") or _related(anchor, new, candidates, tab):
        return new, prefix + rule
    # The default names a sibling concept (I82.2 "vena cava and other thoracic veins" ->
    # I82.290 "other thoracic veins"): only the label's own evidence may choose one.
    picked = _by_evidence(anchor, candidates, tab, context.evidence if context else ())
    if picked is None:
        return None, "ambiguous_sibling"
    node, subset = picked
    return _choose(node, subset, tab, index)[0], prefix + "evidence_descendant"


def _choose(
    anchor: str, candidates: list[str], tab: TabularList, index: IndexHints | None
) -> tuple[str, str]:
    """The default among ``candidates`` (billable descendants of ``anchor``) and its rule."""
    if len(candidates) == 1:
        return candidates[0], "unique_descendant"
    anchor_term = tab.description(anchor)
    if index:
        given = index.codes_for(anchor_term)
        ranked = [(-given[c], i, c) for i, c in enumerate(candidates) if given[c]]
        if ranked:
            return min(ranked)[2], "index_descendant"
        named = index.naming(anchor_term, candidates)
        # Ties: the candidate that is the term's unspecified form (D51 -> D51.9, not D51.0).
        plain = normalise_term(anchor_term)
        ranked = [(-named[c], not _adds_unspecified(plain, _base_description(c, tab)), i, c)
                  for i, c in enumerate(candidates) if named[c]]
        if ranked:
            return min(ranked)[-1], "index_term_descendant"
    anchor_desc = normalise_term(anchor_term)
    same = [c for c in candidates if _base_description(c, tab) == anchor_desc]
    if same:
        # These differ by 7th character only: prefer its "unspecified" value, else Tabular order.
        flagged = [bool(_UNSPECIFIED.search(normalise_term(tab.description(c)))) for c in same]
        best = same[flagged.index(True)] if any(flagged) else same[0]
        return best, "same_description_descendant"
    nine = _unspecified_child(anchor, anchor_desc, candidates, tab)
    if nine is not None:
        node, subset = nine
        return _choose(node, subset, tab, index)[0], "unspecified_child_descendant"
    # Children that keep the anchor's term ("Parkinson's disease without dyskinesia" keeps
    # "Parkinson's disease"; "Parkinsonism, unspecified" does not) are asked first.
    keeping = [c for c in candidates if f" {anchor_desc} " in f" {_base_description(c, tab)} "]
    for group in (keeping, candidates) if keeping else (candidates,):
        for word in ("unspecified", "without", "other", "with_unspecified"):
            if word == "without" and group is not keeping:
                continue
            best = _most_added(word, anchor_desc, group, tab)
            if best is not None:
                return best, f"{word.removeprefix('with_')}_descendant"
    return candidates[0], "first_descendant"


def _unspecified_child(
    anchor: str, anchor_desc: str, candidates: list[str], tab: TabularList
) -> tuple[str, list[str]] | None:
    """The ``.9``-style child of a category, when it is its unspecified or "without" default.

    The anchor's child whose code ends in ``9`` and whose description keeps the
    anchor's and adds "unspecified" or "without" in its own words (not inside a
    "with ..." clause): ``E11`` -> ``E11.9`` *Type 2 diabetes mellitus without
    complications*, ``E09`` -> ``E09.9``. Returns it and the candidates under it.
    """
    for child in tab.children(anchor):
        if not child.endswith("9"):
            continue
        full = normalise_term(tab.description(child))
        if f" {anchor_desc} " not in f" {full} ":
            continue
        added = full.replace(anchor_desc, " ", 1).split()
        if _adds_unspecified(anchor_desc, full) or (added and added[0] in ("without", "not")):
            start, end = tab.subtree_span(child)
            inside = {tab.code_at(i) for i in range(start, end)}
            subset = [c for c in candidates if c in inside]
            if subset:
                return child, subset
    return None


def _main_clause(desc: str, anchor_desc: str = "") -> str:
    """A normalised description up to the first "with" that ``anchor_desc`` does not have
    (what qualifies the term itself: "type 2 diabetes mellitus | with unspecified
    complication"; "patient's noncompliance with other medical treatment ... due to
    unspecified reason" is whole, its anchor says "noncompliance with")."""
    keep = anchor_desc.split().count("with")
    parts = re.split(r"\bwith\b", desc)
    return "with".join(parts[: keep + 1])


def _base_description(code: str, tab: TabularList) -> str:
    """Normalised description without the 7th-character meaning (an extended code's parent's)."""
    info = tab.get(code)
    if info is not None and info.kind == "extended" and info.parent:
        return normalise_term(tab.description(info.parent))
    return normalise_term(tab.description(code))


_RULE_WORDS = {"unspecified": r"unspecified", "other": r"other", "without": r"without|not",
               "with_unspecified": r"unspecified"}


def _rule_scope(word: str, anchor_desc: str) -> Any:
    """The part of a description where ``word`` counts for its rule (see :func:`_most_added`)."""
    if word == "without":  # after the anchor's term, when it goes on with without/not
        def negated_tail(d: str) -> str:
            at = f" {d} ".find(f" {anchor_desc} ") if anchor_desc else -1
            tail = d[at + len(anchor_desc):] if at >= 0 else d
            return re.split(r"\bwith\b", tail, maxsplit=1)[0]
        return negated_tail
    if word == "with_unspecified":
        return lambda d: d
    # "unspecified", "other": in a description with no "with" clause of its own ("Other
    # nephrotic syndrome with diffuse membranous glomerulonephritis" names a complication).
    return lambda d: d if _main_clause(d, anchor_desc) == d else ""


def _most_added(word: str, anchor_desc: str, candidates: list[str], tab: TabularList) -> str | None:
    """The candidate whose description adds ``word`` most often to the anchor's.

    A word the anchor already says counts when a candidate keeps it and another
    drops it (``M79.60`` *Pain in limb, unspecified* -> ``M79.609`` *Pain in
    unspecified limb*, not ``M79.601`` *Pain in right arm*). Where it counts:
    "unspecified" and "other" in a description without a "with" clause the anchor does
    not have (``E11.8`` *... with unspecified complications* qualifies the complication,
    not the diabetes; ``N04.29`` *Other nephrotic syndrome with diffuse membranous
    glomerulonephritis* names one);
    "without" (or "not") as the first word after the anchor's term, the default of a
    with/without split (``E11.9`` *... without complications*, ``C90.00`` *... not having
    achieved remission*; not ``L98.495`` *... with muscle involvement without evidence of
    necrosis*); ``with_unspecified``: "unspecified" anywhere (``L98.499`` *... with
    unspecified severity*). Ties: a "without"/"not" default first (``C88.90`` *...,
    not having achieved remission* before ``C88.91`` *..., in remission*), then the
    one saying "unspecified" most, then the one adding the fewest other words
    (qualifiers: ``Q75.0`` -> ``Q75.009`` *Craniosynostosis, unspecified*, not
    ``Q75.001`` *..., unspecified type, unilateral*), then the one sharing most words
    with the anchor's description, then the shortest code, then Tabular order.
    """
    pattern = re.compile(rf"\b(?:{_RULE_WORDS.get(word, re.escape(word))})\b")
    negated = _rule_scope("without", anchor_desc)
    scope = _rule_scope(word, anchor_desc)
    base = len(pattern.findall(scope(anchor_desc)))
    words = set(anchor_desc.split())
    negation = re.compile(_RULE_WORDS["without"])
    scored = [
        (len(pattern.findall(scope(d))) - base, len(negation.findall(negated(d))),
         d.split().count("unspecified"), -len(set(d.split()) - words), len(words & set(d.split())),
         -len(c), -i, c)
        for i, c in enumerate(candidates)
        for d in (_base_description(c, tab),)
        if scope(d) or word in ("without", "with_unspecified")  # a "with" clause: not asked
    ]
    if not scored:
        return None
    best = max(scored)
    if best[0] > 0 or (best[0] == 0 and base > 0 and min(scored)[0] < 0):
        return best[-1]
    return None


class CodeMapper:
    """Maps codes with :func:`map_code`, counting every occurrence by reason.

    Decisions that need no context are memoised per label; a label whose mapping
    depends on the document (``ambiguous_*`` without context) is decided per call
    from the ``context`` given.
    """

    def __init__(self, tab: TabularList, index: IndexHints | Iterable[Any] | None = None) -> None:
        """``index``: an :class:`IndexHints`, the Index entries it is built from, or ``None``."""
        self.tab = tab
        self.index = index if index is None or isinstance(index, IndexHints) else IndexHints(index)
        self._memo: dict[str, tuple[str | None, str]] = {}
        self.counts: Counter[str] = Counter()
        self.changed: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.remapped: Counter[tuple[str, str, str]] = Counter()  # (label, code, rule) -> occurrences

    def decide(self, code: str, context: MappingContext | None = None) -> tuple[str | None, str]:
        """``(mapped code or None, reason)`` of ``code`` in ``context``, without counting."""
        key = code.strip()
        if key not in self._memo:
            self._memo[key] = map_code(key, self.tab, self.index)
        new, reason = self._memo[key]
        if reason.startswith("ambiguous_") and context is not None:
            return map_code(key, self.tab, self.index, context)
        return new, reason

    def __call__(
        self, code: str, count: bool = True, context: MappingContext | None = None
    ) -> str | None:
        """The mapped code (None: dropped); ``count=False`` for a second look at a counted code.

        ``context``: the document's text and the label's evidence (:class:`MappingContext`),
        for labels split by sex, age or named sibling.
        """
        key = code.strip()
        new, reason = self.decide(key, context)
        if not count:
            return new
        self.counts[reason] += 1
        if new is None:
            self.dropped[key] = reason
        elif reason != "valid":
            self.changed[canonical_code(key)] = new
            self.remapped[(canonical_code(key), new, reason)] += 1
        return new

    def remaps(self) -> list[dict[str, Any]]:
        """One row per remap (label, mapped code, rule): descriptions and occurrence count."""
        rows = []
        for (label, new, rule), n in sorted(self.remapped.items()):
            anchor = _anchor(label, self.tab)[0] if is_well_formed(label) else None
            described = self.tab.description(label) or self.tab.description(anchor or "")
            rows.append({"label": label, "label_description": described,
                         "code": new, "description": self.tab.description(new or ""),
                         "rule": rule, "count": n})
        return rows

    def report(self) -> dict[str, Any]:
        """Occurrence counts (valid, mapped by rule, dropped by reason) and per-code lists.

        Warned about, naming the labels: ``first_descendant`` remaps (no rule could
        read the label's meaning), ``evidence_descendant`` remaps (a sibling concept
        chosen by the label's evidence) and ``ambiguous_*`` labels (split by sex, age
        or sibling concept, and the document did not say which: dropped, not guessed).
        """
        mapped = {r: n for r, n in sorted(self.counts.items()) if r != "valid" and r in _MAPPED}
        dropped = {
            r: n for r, n in sorted(self.counts.items()) if r not in _MAPPED and r != "valid"
        }
        remaps = self.remaps()
        guessed = sorted({r["label"] for r in remaps if r["rule"].endswith("first_descendant")})
        if guessed:
            warnings.warn(
                f"{len(guessed)} labels were mapped to their first billable descendant because no "
                f"rule read their meaning (rule first_descendant): {', '.join(guessed[:10])}"
                + (" ..." if len(guessed) > 10 else ""),
                stacklevel=2,
            )
        chosen = sorted({f"{r['label']}->{r['code']}" for r in remaps if r["rule"].endswith("evidence_descendant")})
        if chosen:
            warnings.warn(
                f"{len(chosen)} labels were mapped to a sibling concept their evidence names "
                f"(rule evidence_descendant): {', '.join(chosen[:10])}" + (" ..." if len(chosen) > 10 else ""),
                stacklevel=2,
            )
        unclear = {k: r for k, r in sorted(self.dropped.items()) if r.startswith("ambiguous_")}
        if unclear:
            n = sum(self.counts[r] for r in set(unclear.values()))
            warnings.warn(
                f"{n} label occurrences were dropped as ambiguous: their code was split by sex, "
                "age or sibling concept and the document does not say which (" + ", ".join(
                    f"{canonical_code(k)} {r.removeprefix('ambiguous_')}" for k, r in list(unclear.items())[:10])
                + (" ..." if len(unclear) > 10 else "") + ")",
                stacklevel=2,
            )
        return {
            "tabular_year": self.tab.year,
            "index_terms": self.index.size if self.index else 0,
            "valid": self.counts.get("valid", 0),
            "mapped": mapped,
            "dropped": dropped,
            "mapped_codes": dict(sorted(self.changed.items())),
            "dropped_codes": dict(sorted(self.dropped.items())),
            "remaps": remaps,
        }


_MAPPED = {
    f"{p}{r}_descendant"
    for p in ("", "ancestor_")
    for r in ("unique", "index", "index_term", "same_description", "unspecified_child", "unspecified",
              "other", "without", "first", "sex", "age", "evidence")
}


# -- losses ----------------------------------------------------------------------

DEFAULT_MAX_DROPPED_LABEL_SHARE = 0.05
DEFAULT_MAX_DROPPED_RECORD_SHARE = 0.01
_DROPPED_LABEL_REASONS = ("not_in_tabular", "no_billable_descendant", "malformed",
                          "ambiguous_sex", "ambiguous_age", "ambiguous_sibling")


class DataLossError(RecordError):
    """A dataset lost more of its labels or records than ``docs.max_dropped_*_share`` allows."""


def check_losses(
    cfg: Any,
    source: str,
    mapper: CodeMapper | None = None,
    labels_file: str | Path | None = None,
    records: dict[str, tuple[int, int, str]] | None = None,
) -> dict[str, Any]:
    """Stop when a dataset loses too much; return what it lost, for the stats.

    Labels: the occurrences :class:`CodeMapper` dropped (``not_in_tabular``,
    ``no_billable_descendant``, ``malformed``) over all it saw; above
    ``docs.max_dropped_label_share`` (default 0.05) a :class:`DataLossError` names
    the share, the labels' file and the Tabular List (with what is short in it,
    :meth:`ccl.icd.tabular.TabularList.check`). Records: ``{name: (dropped,
    total, file)}`` (rows that could not be used, such as annotation rows of a
    document without text); above ``docs.max_dropped_record_share`` (default
    0.01) the same error. Every kind of dropped record goes through here, so none
    is dropped silently.
    """
    report: dict[str, Any] = {}
    if mapper is not None:
        seen = sum(mapper.counts.values())
        dropped = sum(mapper.counts.get(r, 0) for r in _DROPPED_LABEL_REASONS)
        share = dropped / seen if seen else 0.0
        limit = float(option(cfg, "max_dropped_label_share", DEFAULT_MAX_DROPPED_LABEL_SHARE))
        report["labels"] = {"seen": seen, "dropped": dropped, "share": round(share, 4), "limit": limit}
        if share > limit:
            reasons = ", ".join(f"{r} {mapper.counts[r]:,}" for r in _DROPPED_LABEL_REASONS if mapper.counts.get(r))
            check = mapper.tab.check()
            short = f" The Tabular List looks partial: {'; '.join(check['problems'])}." if not check["complete"] else ""
            examples = ", ".join(list(mapper.dropped)[:8])
            raise DataLossError(
                f"docs={source}: {share:.1%} of the label occurrences in {labels_file or 'its files'} "
                f"({dropped:,} of {seen:,}: {reasons}; e.g. {examples}) could not be mapped to "
                f"{mapper.tab.source} (Tabular List {mapper.tab.year}), over "
                f"docs.max_dropped_label_share={limit}.{short} Point icd.tabular_xml at a complete "
                "Tabular List of the dataset's coding year, or raise docs.max_dropped_label_share."
            )
    limit = float(option(cfg, "max_dropped_record_share", DEFAULT_MAX_DROPPED_RECORD_SHARE))
    for name, (dropped, total, file) in (records or {}).items():
        share = dropped / total if total else 0.0
        report[name] = {"dropped": dropped, "total": total, "share": round(share, 4), "limit": limit}
        if share > limit:
            raise DataLossError(
                f"docs={source}: {dropped:,} of {total:,} {name.replace('_', ' ')} in {file} ({share:.1%}) "
                f"were dropped, over docs.max_dropped_record_share={limit}: check the files, or raise "
                "docs.max_dropped_record_share."
            )
    return report


# -- evidence spans --------------------------------------------------------------

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_KEEP_AT_END = "%+"  # "20%", "HER2+": the sign is part of the finding
_SIGNS = "+-\u2212\u00b1"  # plus, hyphen-minus, minus sign, plus-minus
# A test or antigen name a sign qualifies: a word with a capital letter ("Rh", "HIV", "VIH",
# "HLA-B27", "PCR", "Ag") written just before it, with or without a space.
_SIGNED = re.compile(r"(?:^|\s)\S*[A-Z]\S*?\s?$")


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge whitespace and punctuation.

    A bracket stays when its partner is inside the span (``"(HTN)"`` is kept
    whole, ``"(IMC > 40"`` loses its ``(``); ``%`` and ``+`` stay at the end, and so
    does a sign that carries meaning: ``+``, ``-``, ``−`` or ``±`` after a test or
    antigen name (a word with a capital letter): ``"Rh -"`` (Rh negative, Z67.11),
    ``"HIV +"``, ``"VIH-"`` keep it, ``"diabetes -"`` does not. Returns
    ``(start, start)`` when nothing is left.
    """
    while start < end:
        ch = text[start]
        if ch.isspace() or (
            _is_punct(ch) and not (ch in _OPENERS and _OPENERS[ch] in text[start + 1 : end])
        ):
            start += 1
        else:
            break
    while end > start:
        ch = text[end - 1]
        keep = ch in _KEEP_AT_END or (ch in _CLOSERS and _CLOSERS[ch] in text[start : end - 1])
        keep = keep or (ch in _SIGNS and bool(_SIGNED.search(text[start : end - 1])))
        if ch.isspace() or (_is_punct(ch) and not keep):
            end -= 1
        else:
            break
    return start, end


# -- document text and evidence offsets ------------------------------------------

BOM = "\ufeff"
TEXT_FORM = "NFC"  # the Unicode form CCL keeps document and evidence text in
REPAIR_WINDOW = 100  # characters either side of a span searched for its given text


def normalise_text(text: str, form: str | None = TEXT_FORM) -> str:
    """``text`` as the sources' offsets count it: no BOM, LF line ends, Unicode ``form``.

    A leading UTF-8 byte-order mark (U+FEFF) is dropped; CRLF and lone CR become LF
    (the universal-newline reading of Python's ``open`` and of MDACE's own
    ``inject-note-text.py``); ``form`` (``"NFC"`` by default; ``None`` keeps the code
    points as they are) is applied with :func:`unicodedata.normalize`. The CodiEsp
    release is LF, BOM-less and NFC, and its ``X.tsv`` offsets count the code points
    of that text (10,904 of its 10,905 single-piece mentions slice to their given
    text, the last one starts a character early), so a copy saved with Windows line
    ends, a BOM or decomposed accents (NFD) reads back to the same string.
    """
    if text.startswith(BOM):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize(form, text) if form else text


def read_text_file(path: str | Path, form: str | None = TEXT_FORM) -> str:
    """A UTF-8 text file, read and passed through :func:`normalise_text`.

    Raises :class:`~ccl.records.RecordError` naming the file when it is not UTF-8.
    """
    try:
        raw = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as UTF-8") from None
    return normalise_text(raw, form)


def comparable(text: str) -> str:
    """An evidence string as offsets are checked against it: NFC, case-folded, whitespace
    runs collapsed, edge punctuation dropped (``"vesical R.T.U."`` = ``"vesical R.T.U"``)."""
    low = " ".join(unicodedata.normalize(TEXT_FORM, text).casefold().split())
    start, end = 0, len(low)
    while start < end and (low[start].isspace() or _is_punct(low[start])):
        start += 1
    while end > start and (low[end - 1].isspace() or _is_punct(low[end - 1])):
        end -= 1
    return low[start:end]


Pieces = list[tuple[int, int]]


def _agrees(text: str, pieces: Pieces, given: str) -> bool:
    if any(s < 0 or e > len(text) for s, e in pieces):
        return False
    return comparable(" ".join(text[s:e] for s, e in pieces)) == comparable(given)


def _repair(text: str, pieces: Pieces, given: str, window: int) -> Pieces | None:
    """Pieces moved to where ``given`` is, within ``window`` characters; ``None`` if not there.

    One piece: the occurrence of ``given`` (case-insensitive) nearest the offset; several:
    the smallest shift, the same for every piece, after which they read ``given``.
    """
    if len(pieces) == 1:
        start, end = pieces[0]
        needle = unicodedata.normalize(TEXT_FORM, given.strip()).lower()
        lo, hi = max(0, start - window), min(len(text), end + window)
        hay = text[lo:hi].lower()
        if not needle or len(hay) != hi - lo:  # lower-casing changed lengths: no safe search
            return None
        found = [lo + m.start() for m in re.finditer(re.escape(needle), hay)]
        if not found:
            return None
        at = min(found, key=lambda p: (abs(p - start), p))
        return [(at, at + len(needle))]
    for delta in sorted(range(-window, window + 1), key=lambda d: (abs(d), d)):
        moved = [(s + delta, e + delta) for s, e in pieces]
        if delta and _agrees(text, moved, given):
            return moved
    return None


class OffsetCheck:
    """Checks span offsets against the evidence text a source gives beside them.

    For each mention, :meth:`check` compares the text its pieces cover with the given
    text (:func:`comparable` on both, pieces joined by a space). Where they disagree it
    tries the repair: the given text located within ``window`` characters of the offsets
    (:func:`_repair`); a repaired mention is kept at the located offsets, one that cannot
    be repaired is dropped. Both are counted per file and :meth:`warn` says so in one
    line per file (never a silent shift). ``counts``: ``offsets_agree``,
    ``offsets_repaired``, ``offsets_wrong`` (dropped).
    """

    def __init__(self, source: str, window: int = REPAIR_WINDOW) -> None:
        self.source = source
        self.window = window
        self.counts: Counter[str] = Counter()
        self.per_file: dict[str, Counter[str]] = {}
        self.examples: dict[str, list[str]] = {}

    def check(self, text: str, pieces: Pieces, given: str, file: str, where: str) -> Pieces | None:
        """``pieces`` if they cover ``given``, else the repaired pieces, else ``None``."""
        if _agrees(text, pieces, given):
            self.counts["offsets_agree"] += 1
            return pieces
        fixed = _repair(text, pieces, given, self.window)
        outcome = "offsets_repaired" if fixed else "offsets_wrong"
        self.counts[outcome] += 1
        self.per_file.setdefault(file, Counter())[outcome] += 1
        shown = self.examples.setdefault(file, [])
        if len(shown) < 3:
            old = ";".join(f"{s} {e}" for s, e in pieces)
            new = ";".join(f"{s} {e}" for s, e in fixed) if fixed else "dropped"
            shown.append(f"{where.rsplit(':', 1)[-1]}: {given!r} at {old} -> {new}")
        return fixed

    def report(self) -> dict[str, Any]:
        """Counts over all mentions and per file (files with a disagreement only)."""
        return {**dict(sorted(self.counts.items())),
                "files": {f: dict(sorted(c.items())) for f, c in sorted(self.per_file.items())}}

    def warn(self) -> None:
        """One warning line per file whose offsets disagreed with their given text."""
        for file, c in sorted(self.per_file.items()):
            warnings.warn(
                f"docs={self.source}: {file}: {c['offsets_repaired'] + c['offsets_wrong']} evidence "
                f"offsets do not cover the text given beside them: {c['offsets_repaired']} repaired "
                f"(the text found within {self.window} characters), {c['offsets_wrong']} dropped "
                f"(e.g. line {'; line '.join(self.examples[file])}); check the file's line ends "
                "and encoding against the release.",
                stacklevel=2,
            )


# -- splits ----------------------------------------------------------------------


def carve_validation(
    docs: Sequence[Document], n_val: int, seed: int, salt: str
) -> tuple[list[Document], list[Document]]:
    """Split ``docs`` into (train, val) with ``n_val`` seeded picks; input order is kept in both."""
    if not 0 <= n_val < len(docs):
        raise ValueError(f"docs.n_val={n_val}: need 0 <= n_val < {len(docs)} training documents")
    ids = sorted(d.id for d in docs)
    chosen = set(random.Random(f"ccl-{salt}:{seed}").sample(ids, n_val))
    return [d for d in docs if d.id not in chosen], [d for d in docs if d.id in chosen]


def with_split(docs: Sequence[Document], split: str) -> list[Document]:
    for d in docs:
        d.split = split
    return list(docs)


# -- files -----------------------------------------------------------------------


def require(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a Path if it exists, else :class:`MissingDataError` naming it and the fix."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingDataError(f"{p}: {what} not found. {fix}")
    return p


def download(url: str, dest: Path, what: str, config_key: str) -> Path:
    """Fetch ``url`` to ``dest`` (atomically; kept if already there).

    Offline or failing: :class:`DownloadError` naming the URL, the file and the
    config key that points at a copy obtained by hand. ``CCL_OFFLINE=1`` skips the
    attempt (:mod:`ccl.utils.downloads`); a failure stops the run, so it is not remembered.
    """
    if dest.exists():
        return dest
    offline = offline_reason()  # CCL_OFFLINE=1 / HF_HUB_OFFLINE=1: no attempt, one line
    if offline:
        raise DownloadError(f"{what} not downloaded from {url} ({offline}). Download it elsewhere "
                            f"and set {config_key} to its local path.")
    try:
        fetch_url(url, dest, DOWNLOAD_TIMEOUT_S)
    except OSError as err:  # DownloadFailed: one short reason; the URL is said once here
        raise DownloadError(
            f"could not download {what} from {url} ({getattr(err, 'reason', err)}). If this machine is offline, "
            f"download it elsewhere and set {config_key} to its local path."
        ) from err
    return dest


def extract_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` (refusing members that would land outside it)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for name in zf.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise RecordError(f"{archive}: member {name!r} would unpack outside {dest}")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise RecordError(f"{archive}: not a zip archive ({err}); delete it and retry") from err
    return dest
