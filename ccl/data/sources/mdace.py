"""MDACE (Cheng et al., ACL 2023): ICD-10 code evidence on MIMIC-III admissions, MIT licence.

Inputs:

- ``docs.path``: the MDACE repository (``data/<subset>/ICD-10/1.0/<hadm>-ICD-10.json``
  and ``splits/<subset>/``); left null, the files are downloaded once, at a
  pinned commit, from github.com/3mcloud/MDACE into ``<cache_dir>/sources``;
- ``docs.mdace.subset``: ``Inpatient`` (default; the paper's, 302 admissions) or
  ``Profee`` (professional-fee coding, 52 admissions), each with its own split files;
- ``docs.split_path``: the folder with ``MDace-ev-{train,val,test}.csv``
  (default ``<path>/splits/<subset>``): for Inpatient the paper's *Evidence*
  split, 181/60/61 admissions;
- ``docs.notes_path``: MIMIC-III v1.4 ``NOTEEVENTS.csv`` or ``.csv.gz``
  (credentialed, PhysioNet). The annotation offsets index its ``TEXT`` column,
  joined on ``ROW_ID`` = ``note_id``. Notes are read as MDACE's own
  ``inject-note-text.py`` reads them (``csv`` module, universal newlines), so
  offsets agree (:func:`ccl.data.sources.common.normalise_text` with ``form=None``:
  LF line ends, no BOM, code points as stored). MDACE gives no evidence text beside
  its offsets, so they cannot be checked against one (CodiEsp's are); the annotated notes
  are cached under ``<cache_dir>/sources`` so later runs skip the 4 GB scan.

Conventions:

- one document per admission: its annotated notes, in the file's order,
  joined with :data:`NOTE_SEPARATOR`, offsets shifted accordingly
  (``docs.mdace.note_categories``, when set, keeps only notes of those categories);
- ICD-10-CM annotations only; ICD-10-PCS and ICD-9 ones are dropped and
  counted by code system;
- span edges trimmed of whitespace and punctuation
  (:func:`ccl.data.sources.common.trim_span`); codes not billable in the
  Tabular List mapped by the rule in :mod:`ccl.data.sources.common`;
- gold codes: the evidence codes, in order of first evidence.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccl.data.sources import SourceData
from ccl.data.sources.common import (
    CodeMapper,
    IndexHints,
    MappingContext,
    MissingDataError,
    check_losses,
    download,
    normalise_text,
    option,
    require,
    trim_span,
)
from ccl.icd.tabular import TabularList
from ccl.records import Document, RecordError, document_from_dict
from ccl.utils.atomic import write_text_atomic
from ccl.utils.hashing import hash_obj

NOTE_SEPARATOR = "\n\n"
COMMIT = "20eb8e50fafab6bf8b22a3a3cb45889c58abdfd1"  # 3mcloud/MDACE: data and splits as released
RAW_URL = f"https://raw.githubusercontent.com/3mcloud/MDACE/{COMMIT}"
SUBSETS = ("Inpatient", "Profee")  # docs.mdace.subset: MDACE's two annotation sets, each with its splits
ANNOTATION_DIR = "data/Inpatient/ICD-10/1.0"
SPLIT_DIR = "splits/Inpatient"


def subset_dirs(cfg: Any) -> tuple[str, str, str]:
    """``(subset, annotation dir, split dir)`` of ``docs.mdace.subset`` (default Inpatient)."""
    subset = str(option(cfg, "mdace.subset", "Inpatient"))
    match = {s.lower(): s for s in SUBSETS}.get(subset.lower())
    if match is None:
        raise ValueError(f"docs.mdace.subset={subset!r}: MDACE has the subsets {', '.join(SUBSETS)}")
    return match, f"data/{match}/ICD-10/1.0", f"splits/{match}"
SPLIT_FILES = {
    "train": "MDace-ev-train.csv",
    "val": "MDace-ev-val.csv",
    "test": "MDace-ev-test.csv",
}
CODE_SYSTEM = "ICD-10-CM"
NOTES_FIX = (
    "MDACE gives offsets only; the text is MIMIC-III v1.4 NOTEEVENTS.csv.gz (credentialed: "
    "https://physionet.org/content/mimiciii/1.4/). Set docs.notes_path to that file."
)
PATH_FIX = (
    "Set docs.path to a checkout of github.com/3mcloud/MDACE, or leave it null to download it."
)


@dataclass
class Annotation:
    begin: int
    end: int
    code: str | None  # mapped, canonical; None: decided with the note text (split by sex, age, sibling)
    label: str = ""  # the code as MDACE writes it


@dataclass
class ChartNote:
    note_id: int
    category: str
    annotations: list[Annotation] = field(default_factory=list)


@dataclass
class Chart:
    """One MDACE admission: its split, source file and ICD-10-CM-annotated notes."""

    hadm_id: str
    split: str
    path: Path
    notes: list[ChartNote]


# -- annotation files ------------------------------------------------------------


def mdace_root(cfg: Any, cache_dir: Path) -> Path:
    """``docs.path``, or the pinned MDACE files downloaded into the cache."""
    if cfg.path:
        return require(cfg.path, "MDACE folder", PATH_FIX)
    subset, annotation_dir, split_dir = subset_dirs(cfg)
    root = Path(cache_dir) / "sources" / f"mdace-{COMMIT[:8]}"
    for name in SPLIT_FILES.values():
        rel = f"{split_dir}/{name}"
        download(f"{RAW_URL}/{rel}", root / rel, f"the MDACE {subset} split {name}", "docs.path")
    for split in SPLIT_FILES:
        for hadm in _split_ids(root / split_dir / SPLIT_FILES[split]):
            rel = f"{annotation_dir}/{hadm}-ICD-10.json"
            download(
                f"{RAW_URL}/{rel}",
                root / rel,
                f"the MDACE annotations of admission {hadm}",
                "docs.path",
            )
    return root


def _split_ids(path: Path) -> list[str]:
    require(path, "MDACE split file", PATH_FIX + " Or set docs.split_path to the splits folder.")
    ids = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        value = line.strip()
        if not value:
            continue
        if not value.isdigit():
            raise RecordError(f"{path}:{lineno}: {value!r} is not a hospital admission id")
        ids.append(value)
    return ids


def _field(obj: dict, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise RecordError(f"{where}: field '{key}' missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(
            f"{where}: field '{key}' is {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def _read_chart(
    path: Path, hadm: str, split: str, mapper: CodeMapper, counts: Counter[str]
) -> Chart:
    require(path, f"MDACE annotations of admission {hadm}", PATH_FIX)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if str(_field(raw, "hadm_id", int, str(path))) != hadm:
        raise RecordError(f"{path}: hadm_id {raw['hadm_id']} does not match the file name")
    notes = []
    for i, note in enumerate(_field(raw, "notes", list, str(path))):
        where = f"{path}: notes[{i}]"
        out = ChartNote(_field(note, "note_id", int, where), str(note.get("category", "")))
        for j, ann in enumerate(_field(note, "annotations", list, where)):
            at = f"{where}.annotations[{j}]"
            begin, end = _field(ann, "begin", int, at), _field(ann, "end", int, at)
            code, system = _field(ann, "code", str, at), _field(ann, "code_system", str, at)
            if not 0 <= begin < end:
                raise RecordError(f"{at}: offsets {begin}:{end} are not a span")
            if system != CODE_SYSTEM:
                counts[f"dropped_{system}_annotations"] += 1
                continue
            if mapper.decide(code)[1].startswith("ambiguous_"):
                # Split by sex, age or sibling concept: the note's text and evidence decide
                # (chart_document), or without text the label counts as ambiguous.
                out.annotations.append(Annotation(begin, end, None, code))
                continue
            mapped = mapper(code)
            if mapped is None:
                counts["dropped_unmappable_code_annotations"] += 1
                continue
            out.annotations.append(Annotation(begin, end, mapped, code))
        notes.append(out)
    return Chart(hadm, split, path, notes)


def read_charts(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> tuple[list[Chart], CodeMapper, Counter[str], Path]:
    """Every admission of the split files with its ICD-10-CM annotations (no text needed)."""
    root = mdace_root(cfg, cache_dir)
    subset, annotation_dir, subset_split_dir = subset_dirs(cfg)
    split_dir = Path(cfg.split_path) if cfg.split_path else root / subset_split_dir
    if not cfg.split_path and not split_dir.is_dir():
        raise MissingDataError(
            f"{split_dir}: the MDACE {subset} splits are not in docs.path={root} (docs.mdace.subset={subset}); "
            f"the MDACE repository has {', '.join(f'splits/{s}' for s in SUBSETS)}. Set docs.path to a full "
            "checkout (or null to download it), or docs.split_path to the split folder."
        )
    mapper, counts = CodeMapper(tab, index), Counter()
    categories = {c.lower() for c in option(cfg, "mdace.note_categories", [])}
    charts = []
    for split, name in SPLIT_FILES.items():
        for hadm in _split_ids(split_dir / name):
            chart = _read_chart(
                root / annotation_dir / f"{hadm}-ICD-10.json", hadm, split, mapper, counts
            )
            if categories:
                kept = [n for n in chart.notes if n.category.lower() in categories]
                counts["notes_dropped_by_category"] += len(chart.notes) - len(kept)
                chart.notes = kept
            charts.append(chart)
    return charts, mapper, counts, root


def annotation_summary(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> dict[str, Any]:
    """What MDACE holds without note text: admissions, notes, spans and codes per split."""
    charts, mapper, counts, root = read_charts(cfg, tab, cache_dir, index)
    for chart in charts:  # no text: labels split by sex, age or sibling stay ambiguous
        for note in chart.notes:
            for ann in [a for a in note.annotations if a.code is None]:
                mapper(ann.label)
                counts["dropped_unmappable_code_annotations"] += 1
                note.annotations.remove(ann)
    splits: dict[str, dict[str, float]] = {}
    for split in SPLIT_FILES:
        mine = [c for c in charts if c.split == split]
        code_sets = [{a.code for n in c.notes for a in n.annotations} for c in mine]
        splits[split] = {
            "documents": len(mine),
            "notes": sum(len(c.notes) for c in mine),
            "evidence_spans": sum(len(n.annotations) for c in mine for n in c.notes),
            "distinct_codes": len(set().union(*code_sets)) if code_sets else 0,
            "code_assignments": sum(len(s) for s in code_sets),
        }
    subset, annotation_dir, _ = subset_dirs(cfg)
    losses = check_losses(cfg, "mdace", mapper, root / annotation_dir)
    return {
        "root": str(root),
        "subset": subset,
        "losses": losses,
        "splits": splits,
        "distinct_codes": len({a.code for c in charts for n in c.notes for a in n.annotations}),
        "counts": dict(sorted(counts.items())),
        "codes": mapper.report(),
    }


# -- note text -------------------------------------------------------------------


def _open_text(path: Path) -> Any:
    # newline=None (universal newlines), as MDACE's inject script reads NOTEEVENTS;
    # utf-8-sig: a byte-order mark is not part of the ROW_ID header.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def _scan_noteevents(path: Path, wanted: set[int]) -> Iterator[tuple[int, str]]:
    # Discharge summaries exceed the csv module's 128 kB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().upper() for h in next(reader)]
        except (StopIteration, OSError, UnicodeDecodeError) as err:
            raise RecordError(f"{path}: cannot read a CSV header ({err or 'empty file'})") from None
        if "ROW_ID" not in header or "TEXT" not in header:
            raise RecordError(
                f"{path}: not a MIMIC-III NOTEEVENTS file (header lacks ROW_ID or TEXT: {header[:11]})"
            )
        id_col, text_col = header.index("ROW_ID"), header.index("TEXT")
        remaining = set(wanted)
        for row in reader:
            if len(row) != len(header):
                raise RecordError(
                    f"{path}: line {reader.line_num}: {len(row)} columns, header has {len(header)}"
                )
            try:
                row_id = int(row[id_col])
            except ValueError:
                raise RecordError(
                    f"{path}: line {reader.line_num}: ROW_ID {row[id_col]!r} is not a number"
                ) from None
            if row_id in remaining:
                remaining.discard(row_id)
                # LF line ends (universal newlines already gave them); code points kept as
                # they are (form=None): MDACE's offsets count the text as MIMIC-III stores it.
                yield row_id, normalise_text(row[text_col], form=None)
                if not remaining:
                    return


def read_note_texts(path: Path, wanted: set[int], cache_dir: Path) -> dict[int, str]:
    """``ROW_ID -> TEXT`` for ``wanted`` notes, from NOTEEVENTS or the cache of an earlier scan."""
    stat = path.stat()
    key = hash_obj([str(path.resolve()), stat.st_size, stat.st_mtime_ns, sorted(wanted)])
    cached = Path(cache_dir) / "sources" / f"mdace-notes-{key}.json"
    if cached.exists():
        with contextlib.suppress(ValueError, AttributeError):  # a cut or foreign entry is rescanned
            texts = {int(k): v for k, v in json.loads(cached.read_text(encoding="utf-8")).items()}
            if set(texts) == wanted:
                return texts
    texts = dict(_scan_noteevents(path, wanted))
    missing = sorted(wanted - set(texts))
    if missing:
        raise RecordError(
            f"{path}: {len(missing)} annotated notes are not in this file (ROW_ID {missing[:5]}...); "
            "MDACE needs MIMIC-III v1.4 NOTEEVENTS"
        )
    write_text_atomic(cached, json.dumps({str(k): v for k, v in texts.items()}))
    return texts


# -- documents -------------------------------------------------------------------


def chart_document(
    chart: Chart,
    texts: dict[int, str],
    notes_path: Path,
    counts: Counter[str],
    mapper: CodeMapper | None = None,
) -> Document:
    """One admission as a :class:`Document`: notes joined, spans shifted and trimmed.

    Annotations whose label waits for its context (``code`` None: split by sex, age
    or sibling concept) are mapped by ``mapper`` with the admission's text and the
    label's evidence (:class:`ccl.data.sources.common.MappingContext`), or dropped and
    counted when it cannot tell.
    """
    parts: list[str] = []
    spans: dict[tuple[int, int, str], None] = {}
    offset = 0
    for note in chart.notes:
        text = texts[note.note_id]
        for ann in note.annotations:
            if ann.end > len(text):
                raise RecordError(
                    f"{chart.path}: note {note.note_id}: annotation {ann.begin}:{ann.end} runs past "
                    f"its text in {notes_path} ({len(text)} characters); is this MIMIC-III v1.4?"
                )
    whole = NOTE_SEPARATOR.join(texts[n.note_id] for n in chart.notes)
    evidence: dict[str, list[str]] = {}
    for note in chart.notes:
        for ann in note.annotations:
            evidence.setdefault(ann.label, []).append(texts[note.note_id][ann.begin : ann.end])
    for note in chart.notes:
        text = texts[note.note_id]
        for ann in note.annotations:
            code = ann.code
            if code is None:
                code = mapper(ann.label, context=MappingContext(whole, evidence[ann.label])) if mapper else None
                if code is None:
                    counts["dropped_unmappable_code_annotations"] += 1
                    continue
            start, end = trim_span(text, ann.begin, ann.end)
            if start == end:
                counts["spans_empty_after_trim"] += 1
                continue
            counts["spans_trimmed"] += (start, end) != (ann.begin, ann.end)
            spans[(start + offset, end + offset, code)] = None
        parts.append(text)
        offset += len(text) + len(NOTE_SEPARATOR)
    ordered = sorted(spans)
    record = {
        "id": chart.hadm_id,
        "text": NOTE_SEPARATOR.join(parts),
        "codes": list(dict.fromkeys(code for _, _, code in ordered)),
        "spans": [{"start": s, "end": e, "code": c} for s, e, c in ordered],
        "split": chart.split,
        "source": "mdace",
    }
    return document_from_dict(record, str(chart.path))


def load_mdace(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> SourceData:
    """MDACE admissions with text and evidence (see the module doc)."""
    if not cfg.notes_path:
        raise MissingDataError(f"docs.notes_path is not set. {NOTES_FIX}")
    notes_path = require(cfg.notes_path, "MIMIC-III NOTEEVENTS file", NOTES_FIX)
    charts, mapper, counts, root = read_charts(cfg, tab, cache_dir, index)
    wanted = {n.note_id for c in charts for n in c.notes}
    texts = read_note_texts(notes_path, wanted, cache_dir)
    docs: dict[str, list[Document]] = {split: [] for split in SPLIT_FILES}
    for chart in charts:
        docs[chart.split].append(chart_document(chart, texts, notes_path, counts, mapper))
    counts["documents_without_codes"] = sum(not d.codes for v in docs.values() for d in v)
    subset, annotation_dir, _ = subset_dirs(cfg)
    losses = check_losses(cfg, "mdace", mapper, root / annotation_dir)
    stats = {
        "source": "mdace",
        "subset": subset,
        "losses": losses,
        "root": str(root),
        "notes_path": str(notes_path),
        "documents": {k: len(v) for k, v in docs.items()},
        "notes": len(wanted),
        "evidence_spans": sum(len(d.spans) for v in docs.values() for d in v),
        "counts": dict(sorted(counts.items())),
        "codes": mapper.report(),
    }
    return SourceData(docs=docs, corpus=[], stats=stats)
