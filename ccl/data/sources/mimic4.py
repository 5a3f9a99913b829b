"""MIMIC-IV ICD-10 discharge summaries with their diagnosis codes (code-only documents).

Inputs (credentialed, PhysioNet):

- ``docs.notes_path``: MIMIC-IV-Note ``note/discharge.csv.gz`` (``note_id``,
  ``hadm_id``, ``text``; ``note_seq`` when present orders several notes of one
  admission, joined with a blank line);
- ``docs.labels_path``: MIMIC-IV ``hosp/diagnoses_icd.csv.gz`` (``hadm_id``,
  ``icd_code``, ``icd_version``; ``seq_num`` orders the codes). Only
  ``icd_version == 10`` rows are read; codes are written undotted there and come
  out canonical and billable in the Tabular List (mapping rule in
  :mod:`ccl.data.sources.common`);
- ``docs.split_path``: the public split by ``hadm_id`` (a feather file with
  ``_id`` and ``split`` in train/val/test, from medical-coding-reproducibility:
  89,099/13,378/19,802 admissions); left null, it is downloaded once into
  ``<cache_dir>/sources``.

Admissions of the split without a discharge note or without an ICD-10
diagnosis code are left out and counted. The corpus is the training split (the
silver-mining source and the document-level SFT data).
"""

from __future__ import annotations

from collections import Counter
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
    require,
)
from ccl.icd.tabular import TabularList
from ccl.records import Document, RecordError, document_from_dict

# JoakimEdin/medical-coding-reproducibility, the commit the split file was taken from.
SPLIT_COMMIT = "dc00ce020e74ea1a539b3a862b2f0854fae92fe7"
SPLIT_URL = (
    f"https://github.com/JoakimEdin/medical-coding-reproducibility/raw/{SPLIT_COMMIT}"
    "/files/data/mimiciv_icd10/mimiciv_icd10_split.feather"
)
SPLITS = ("train", "val", "test")
NOTE_SEPARATOR = "\n\n"
CHUNK_ROWS = 50_000
# Discharge notes are ~10 KB each: 50,000 of them in one pandas chunk held ~1.5 GB beside the
# texts already read (issue 24), so the notes file is read in smaller chunks.
NOTE_CHUNK_ROWS = 2_000
NOTES_FIX = (
    "Get note/discharge.csv.gz from MIMIC-IV-Note v2.2 (https://physionet.org/content/mimic-iv-note/) "
    "and set docs.notes_path to it."
)
LABELS_FIX = (
    "Get hosp/diagnoses_icd.csv.gz from MIMIC-IV v2.2 (https://physionet.org/content/mimiciv/) "
    "and set docs.labels_path to it."
)


def _need(value: str | None, key: str, what: str, fix: str) -> Path:
    if not value:
        raise MissingDataError(f"{key} is not set: docs=mimic4 needs the {what}. {fix}")
    return require(value, what, fix)


def read_split(path: Path) -> dict[int, str]:
    """``hadm_id -> split`` from the feather split file, validated."""
    import pandas as pd

    try:
        frame = pd.read_feather(path)
    except Exception as err:  # pyarrow raises several types for a non-feather file
        raise RecordError(f"{path}: not a readable feather file ({err})") from None
    missing = {"_id", "split"} - set(frame.columns)
    if missing:
        raise RecordError(f"{path}: columns {sorted(missing)} missing (has {list(frame.columns)})")
    bad = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if bad:
        raise RecordError(f"{path}: split values {bad} are not in {SPLITS}")
    return dict(
        zip(frame["_id"].astype(int).tolist(), frame["split"].astype(str).tolist(), strict=True)
    )


def _read_csv_chunks(
    path: Path, columns: set[str], optional: set[str], dtype: dict[str, Any], rows: int = CHUNK_ROWS
) -> Any:
    """Chunks of ``path`` restricted to ``columns`` (+ ``optional`` ones present); names missing ones."""
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception as err:
        raise RecordError(f"{path}: not a readable CSV file ({err})") from None
    missing = columns - set(header)
    if missing:
        raise RecordError(f"{path}: columns {sorted(missing)} missing (has {list(header)})")
    usecols = sorted(columns | (optional & set(header)))
    return pd.read_csv(path, usecols=usecols, dtype=dtype, chunksize=rows)


def read_codes(
    path: Path, wanted: set[int], mapper: CodeMapper, texts: dict[int, str] | None = None
) -> dict[int, list[str]]:
    """ICD-10 diagnosis codes per admission in ``wanted``, in ``seq_num`` order, mapped.

    ``texts`` (admission -> note) is the context that decides codes split by sex or age.
    """
    rows: dict[int, list[tuple[int, str]]] = {}
    chunks = _read_csv_chunks(
        path, {"hadm_id", "icd_code", "icd_version"}, {"seq_num"}, {"icd_code": str}
    )
    for chunk in chunks:
        chunk = chunk[(chunk["icd_version"] == 10) & chunk["hadm_id"].isin(wanted)]
        seq = chunk["seq_num"] if "seq_num" in chunk else range(len(chunk))
        for hadm, code, order in zip(chunk["hadm_id"], chunk["icd_code"], seq, strict=True):
            rows.setdefault(int(hadm), []).append((int(order), str(code)))
    out: dict[int, list[str]] = {}
    for hadm, pairs in rows.items():
        context = MappingContext(texts.get(hadm, "")) if texts is not None else None
        codes = [mapper(code, context=context) for _, code in sorted(pairs)]
        out[hadm] = list(dict.fromkeys(c for c in codes if c is not None))
    return out


def read_notes(path: Path, wanted: set[int]) -> dict[int, str]:
    """Discharge text per admission in ``wanted``; several notes joined in ``note_seq`` order."""
    parts: dict[int, list[tuple[int, str]]] = {}
    chunks = _read_csv_chunks(
        path, {"hadm_id", "text"}, {"note_seq", "note_id"}, {"text": str, "note_id": str}, NOTE_CHUNK_ROWS
    )
    for chunk in chunks:
        chunk = chunk[chunk["hadm_id"].isin(wanted) & chunk["text"].notna()]
        seq = chunk["note_seq"] if "note_seq" in chunk else range(len(chunk))
        for hadm, text, order in zip(chunk["hadm_id"], chunk["text"], seq, strict=True):
            parts.setdefault(int(hadm), []).append((int(order), text))
    # No offsets index these notes: they are normalised as every source's text is (no BOM,
    # LF line ends, NFC; common.normalise_text).
    return {h: normalise_text(NOTE_SEPARATOR.join(t for _, t in sorted(p))) for h, p in parts.items()}


def split_path(cfg: Any, cache_dir: Path) -> Path:
    if cfg.split_path:
        return require(
            cfg.split_path,
            "MIMIC-IV ICD-10 split file",
            "Set docs.split_path to mimiciv_icd10_split.feather.",
        )
    dest = Path(cache_dir) / "sources" / "mimiciv_icd10_split.feather"
    return download(SPLIT_URL, dest, "the MIMIC-IV ICD-10 split", "docs.split_path")


def load_mimic4(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> SourceData:
    """MIMIC-IV ICD-10 admissions as code-only documents (see the module doc)."""
    notes_path = _need(
        cfg.notes_path, "docs.notes_path", "MIMIC-IV-Note discharge notes", NOTES_FIX
    )
    labels_path = _need(
        cfg.labels_path, "docs.labels_path", "MIMIC-IV diagnoses_icd table", LABELS_FIX
    )
    split_file = split_path(cfg, cache_dir)
    split_of = read_split(split_file)
    wanted = set(split_of)
    mapper = CodeMapper(tab, index)
    texts = read_notes(notes_path, wanted)
    codes = read_codes(labels_path, wanted, mapper, texts)
    counts: Counter[str] = Counter()
    docs: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for hadm, split in split_of.items():
        if hadm not in texts:
            counts["admissions_without_note"] += 1
        elif not codes.get(hadm):
            counts["admissions_without_icd10_codes"] += 1
        else:
            record = {
                "id": str(hadm),
                "text": texts[hadm],
                "codes": codes[hadm],
                "split": split,
                "source": "mimic4",
            }
            docs[split].append(document_from_dict(record, f"{notes_path} (hadm_id {hadm})"))
    # Admissions of the split file without a note are counted, not an error: the split file
    # lists every admission, and a notes file may hold a part of them (the MIMIC-IV demo).
    losses = check_losses(cfg, "mimic4", mapper, labels_path)
    stats = {
        "source": "mimic4",
        "losses": losses,
        "notes_path": str(notes_path),
        "labels_path": str(labels_path),
        "split_path": str(split_file),
        "split_sizes": dict(Counter(split_of.values())),
        "documents": {k: len(v) for k, v in docs.items()},
        "corpus": len(docs["train"]),
        "counts": dict(sorted(counts.items())),
        "codes": mapper.report(),
    }
    return SourceData(docs=docs, corpus=docs["train"], stats=stats)
