"""ACI-Bench (Yim et al., 2023): doctor-patient dialogues with visit notes, CC BY 4.0.

``docs.path`` is the folder of the challenge CSVs (``dataset,encounter_id,dialogue,note``):
``train.csv`` -> train (67), ``valid.csv`` -> val (20), and the three test
sets ``clinicalnlp_taskB_test1.csv``, ``clinicalnlp_taskC_test2.csv``,
``clef_taskC_test3.csv`` -> test (120). Left null, the files are downloaded once,
at a pinned commit, from github.com/wyim/aci-bench (``data/challenge_data``).
``docs.aci_bench.text_field`` picks the document text: ``note`` (default) or ``dialogue``.

The release has no ICD codes. ``docs.labels_path`` points at a label file you
write, in one of two formats (chosen by the file suffix):

- CSV with a header ``encounter_id,code[,evidence]``: one row per code, or per
  evidence mention (repeat the code); e.g. ``D2N001,I50.9,congestive heart failure``;
- JSON lines: ``{"encounter_id": "D2N001", "codes": ["I50.9"],
  "evidence": [{"text": "congestive heart failure", "code": "I50.9"}]}``.

Text is read with :func:`ccl.data.sources.common.normalise_text` (no BOM, LF line
ends, NFC), the evidence text too. Codes go through the mapping rule of :mod:`ccl.data.sources.common`. An
evidence text becomes a span at its first case-insensitive occurrence in the
document text; one not found is counted and skipped (its code stays). An
encounter id the data lacks, or a malformed code, is an error naming the line.
Without ``docs.labels_path`` the documents have no codes: predict-only mode
(the pipeline writes evidence and codes but cannot score them).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ccl.data.sources import SourceData
from ccl.data.sources.common import (
    CodeMapper,
    IndexHints,
    MappingContext,
    check_losses,
    choice,
    download,
    normalise_text,
    read_text_file,
    require,
)
from ccl.icd.codes import canonical_code, is_well_formed
from ccl.icd.tabular import TabularList
from ccl.records import Document, RecordError, document_from_dict

COMMIT = "5d3cd4d8a25b4ebb5b2b87c3923a7b2b7150e33d"  # wyim/aci-bench
RAW_URL = f"https://raw.githubusercontent.com/wyim/aci-bench/{COMMIT}/data/challenge_data"
FILES = {
    "train": ("train.csv",),
    "val": ("valid.csv",),
    "test": ("clinicalnlp_taskB_test1.csv", "clinicalnlp_taskC_test2.csv", "clef_taskC_test3.csv"),
}
COLUMNS = ("dataset", "encounter_id", "dialogue", "note")
TEXT_FIELDS = ("note", "dialogue")
PREDICT_ONLY = "no labels: predict-only"
FIX = "Set docs.path to aci-bench's data/challenge_data folder (github.com/wyim/aci-bench, CC BY 4.0)."


def aci_root(cfg: Any, cache_dir: Path) -> Path:
    """``docs.path``, or the pinned challenge CSVs downloaded into the cache."""
    if cfg.path:
        return require(cfg.path, "ACI-Bench folder", FIX)
    root = Path(cache_dir) / "sources" / f"aci-bench-{COMMIT[:8]}"
    for names in FILES.values():
        for name in names:
            download(f"{RAW_URL}/{name}", root / name, f"ACI-Bench {name}", "docs.path")
    return root


def read_encounters(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Rows of one challenge CSV as ``(where, row)``, columns checked."""
    require(path, "ACI-Bench file", FIX)
    with path.open(encoding="utf-8-sig", newline="") as f:  # a BOM is not part of the header
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise RecordError(
                f"{path}: columns {sorted(missing)} missing (header {reader.fieldnames})"
            )
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            row = {k: normalise_text(v) if isinstance(v, str) else v for k, v in row.items()}
            if not (row.get("encounter_id") or "").strip():
                raise RecordError(f"{where}: empty encounter_id")
            rows.append((where, row))
    return rows


def _label_rows(path: Path) -> list[tuple[str, str, list[str], list[tuple[str, str]]]]:
    """``(where, encounter_id, codes, [(evidence text, code)])`` from a CSV or JSONL label file."""
    require(
        path,
        "ACI-Bench label file",
        "Set docs.labels_path to your label file, or null for predict-only.",
    )
    out = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for lineno, line in enumerate(read_text_file(path).splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("encounter_id"), str):
                raise RecordError(f"{where}: expected an object with a string 'encounter_id'")
            codes = obj.get("codes", [])
            evidence = obj.get("evidence", [])
            if not isinstance(codes, list) or not isinstance(evidence, list):
                raise RecordError(f"{where}: 'codes' and 'evidence' must be lists")
            pairs = []
            for i, ev in enumerate(evidence):
                if (
                    not isinstance(ev, dict)
                    or not isinstance(ev.get("text"), str)
                    or not isinstance(ev.get("code"), str)
                ):
                    raise RecordError(f"{where}: evidence[{i}] needs string 'text' and 'code'")
                pairs.append((ev["text"], ev["code"]))
            out.append((where, obj["encounter_id"], [str(c) for c in codes], pairs))
        return out
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not {"encounter_id", "code"} <= set(reader.fieldnames or []):
            raise RecordError(
                f"{path}: header must have encounter_id and code (got {reader.fieldnames})"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            code, text = (row.get("code") or "").strip(), (row.get("evidence") or "").strip()
            out.append(
                (
                    where,
                    (row.get("encounter_id") or "").strip(),
                    [code],
                    [(text, code)] if text else [],
                )
            )
    return out


def _checked(
    code: str, where: str, mapper: CodeMapper, count: bool = True, context: MappingContext | None = None
) -> str | None:
    if not is_well_formed(canonical_code(code)):
        raise RecordError(f"{where}: {code!r} is not an ICD-10-CM code")
    return mapper(code, count=count, context=context)


def _context(code: str, text: str, evidence: list[tuple[str, str]]) -> MappingContext:
    """The encounter's text and the evidence given for ``code`` (decides sex/age/sibling splits)."""
    return MappingContext(text, [t for t, c in evidence if canonical_code(c) == canonical_code(code)])


def read_labels(
    path: Path, texts: dict[str, str], mapper: CodeMapper, counts: Counter[str]
) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Codes and evidence spans per encounter from the user's label file."""
    labels: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    for where, enc, codes, evidence in _label_rows(path):
        if enc not in texts:
            raise RecordError(f"{where}: encounter_id {enc!r} is not in the ACI-Bench files")
        doc_codes, spans = labels.setdefault(enc, ([], []))
        for code in codes:
            mapped = _checked(code, where, mapper, context=_context(code, texts[enc], evidence))
            if mapped is not None and mapped not in doc_codes:
                doc_codes.append(mapped)
        for text, code in evidence:
            mapped = _checked(code, where, mapper, count=False, context=_context(code, texts[enc], evidence))
            text = normalise_text(text)  # NFC, as the document text is
            start = texts[enc].lower().find(text.lower())
            if mapped is None or start < 0:
                counts["evidence_not_found" if start < 0 else "evidence_with_dropped_code"] += 1
                continue
            if mapped not in doc_codes:
                doc_codes.append(mapped)
            span = {"start": start, "end": start + len(text), "code": mapped}
            if span not in spans:
                spans.append(span)
    return labels


def load_aci_bench(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> SourceData:
    """ACI-Bench encounters, labelled from ``docs.labels_path`` or predict-only."""
    field_name = choice(cfg, "aci_bench.text_field", "note", TEXT_FIELDS, "ACI-Bench has")
    root = aci_root(cfg, cache_dir)
    rows: dict[str, list[tuple[str, dict[str, str]]]] = {
        split: [r for name in names for r in read_encounters(root / name)]
        for split, names in FILES.items()
    }
    texts: dict[str, str] = {}
    for where, row in (r for split in rows.values() for r in split):
        if row["encounter_id"] in texts:
            raise RecordError(f"{where}: encounter_id {row['encounter_id']!r} appears twice")
        texts[row["encounter_id"]] = row[field_name] or ""
    mapper, counts = CodeMapper(tab, index), Counter()
    labels = read_labels(Path(cfg.labels_path), texts, mapper, counts) if cfg.labels_path else {}
    docs: dict[str, list[Document]] = {}
    for split, split_rows in rows.items():
        docs[split] = []
        for where, row in split_rows:
            enc = row["encounter_id"]
            codes, spans = labels.get(enc, ([], []))
            record = {
                "id": enc,
                "text": texts[enc],
                "codes": codes,
                "spans": spans,
                "split": split,
                "source": "aci_bench",
            }
            docs[split].append(document_from_dict(record, where))
    labelled = sum(bool(d.codes) for v in docs.values() for d in v)
    losses = check_losses(cfg, "aci_bench", mapper, cfg.labels_path) if cfg.labels_path else {}
    stats = {
        "source": "aci_bench",
        "losses": losses,
        "root": str(root),
        "text_field": field_name,
        "mode": f"labels from {cfg.labels_path}" if cfg.labels_path else PREDICT_ONLY,
        "documents": {k: len(v) for k, v in docs.items()},
        "labelled_documents": labelled,
        "evidence_spans": sum(len(d.spans) for v in docs.values() for d in v),
        "counts": dict(sorted(counts.items())),
        "codes": mapper.report(),
    }
    return SourceData(docs=docs, corpus=[], stats=stats)
