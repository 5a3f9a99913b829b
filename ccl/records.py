"""Record types shared by every room: documents with evidence, and span pairs.

Offsets are character offsets into ``Document.text`` (end exclusive). Evidence
is kept in document order. Codes are canonical (see :mod:`ccl.icd.codes`).
Loading from dicts validates every field and names the file, the record and the
field in the error, so a bad line in a 10,000-line file is found at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ccl.icd.codes import canonical_code, is_well_formed
from ccl.utils.atomic import atomic_file

TIERS = ("gold", "silver", "synthetic")
# The answer format's section headers: the prompts (ccl.data.prompts) ask for them; the parser,
# the repeated-line guard and restricted decoding read them. Here, on the bottom floor, so the
# generation layer reads them without importing the prompt room.
EVIDENCE_HEADER = "Evidence:"
CODES_HEADER = "Codes:"
NO_EVIDENCE = "- none"
# Spaces and the punctuation a span may carry at its edges (",", ";", ":", ".", "-").
EDGE_PUNCT = re.compile(r"^[\s,;:.\-]+|[\s,;:.\-]+$")


def phrase_key(text: str) -> str:
    """The key under which two evidence phrases count as the same span text: case-folded,
    whitespace runs collapsed, edge spaces and ``,;:.-`` dropped (``" Heart failure, "`` ->
    ``"heart failure"``). The span tiers dedup with it and the coverage report compares tiers'
    wording with it. (Evidence F1 has its own, wider rule: :func:`ccl.eval.evidence.normalise`.)
    """
    return EDGE_PUNCT.sub("", " ".join(text.split())).casefold()


class RecordError(ValueError):
    """A record failed validation; the message names file, record and field."""


@dataclass(frozen=True)
class EvidenceSpan:
    """One evidence mention: ``text == document.text[start:end]``, supporting ``code``."""

    start: int
    end: int
    text: str
    code: str


@dataclass
class Document:
    """A clinical note with its gold codes and (optionally) evidence spans."""

    id: str
    text: str
    codes: list[str]
    spans: list[EvidenceSpan] = field(default_factory=list)
    split: str | None = None
    source: str = "unknown"

    @property
    def has_evidence(self) -> bool:
        return bool(self.spans)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpanPair:
    """A short ``evidence -> code`` training pair from one span tier."""

    evidence: str
    code: str
    tier: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(where: str, record: str, fieldname: str, problem: str) -> RecordError:
    return RecordError(f"{where}: record {record}: field '{fieldname}': {problem}")


def _require(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, rid: str) -> Any:
    if key not in d:
        raise _fail(where, rid, key, "missing")
    value = d[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(where, rid, key, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _code(value: Any, where: str, rid: str, fieldname: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, rid, fieldname, f"code must be a string, got {type(value).__name__}")
    code = canonical_code(value)
    if not is_well_formed(code):
        raise _fail(where, rid, fieldname, f"not an ICD-10-CM code: {value!r}")
    return code


def document_from_dict(d: dict[str, Any], where: str = "<memory>") -> Document:
    """Validate and build a :class:`Document`; raise :class:`RecordError` naming the problem."""
    return _document(d, where, with_text=True)


def _document(d: dict[str, Any], where: str, with_text: bool) -> Document:
    """A document record (``with_text``: offsets checked against its ``text``) or a
    :func:`document_reference` record (empty text; each span's own ``text`` required, its
    offsets kept unchecked, which the empty text cannot check)."""
    if not isinstance(d, dict):
        raise RecordError(f"{where}: record is a {type(d).__name__}, expected an object")
    rid = str(d.get("id", "<no id>"))
    doc_id = _require(d, "id", (str, int), where, rid)
    text = _require(d, "text", str, where, rid) if with_text else ""
    codes = [_code(c, where, rid, "codes") for c in _require(d, "codes", list, where, rid)]
    spans = []
    for i, s in enumerate(d.get("spans") or []):
        name = f"spans[{i}]"
        if not isinstance(s, dict):
            raise _fail(where, rid, name, "expected an object")
        start = _require(s, "start", int, where, rid)
        end = _require(s, "end", int, where, rid)
        if with_text:
            if not 0 <= start < end <= len(text):
                raise _fail(where, rid, name, f"offsets {start}:{end} outside text of length {len(text)}")
            span_text = s.get("text", text[start:end])
            if span_text != text[start:end]:
                raise _fail(where, rid, name, f"text {span_text!r} != document text {text[start:end]!r}")
        else:
            span_text = _require(s, "text", str, where, rid)
        spans.append(EvidenceSpan(start, end, span_text, _code(s.get("code"), where, rid, f"{name}.code")))
    spans.sort(key=lambda s: (s.start, s.end))
    split = d.get("split")
    if split is not None and not isinstance(split, str):
        raise _fail(where, rid, "split", "expected a string")
    return Document(
        id=str(doc_id),
        text=text,
        codes=list(dict.fromkeys(codes)),
        spans=spans,
        split=split,
        source=str(d.get("source", "unknown")),
    )


def span_pair_from_dict(d: dict[str, Any], where: str = "<memory>") -> SpanPair:
    """Validate and build a :class:`SpanPair`."""
    if not isinstance(d, dict):
        raise RecordError(f"{where}: record is a {type(d).__name__}, expected an object")
    rid = repr(d.get("evidence", "<no evidence>"))[:60]
    evidence = _require(d, "evidence", str, where, rid)
    if not evidence.strip():
        raise _fail(where, rid, "evidence", "empty")
    tier = _require(d, "tier", str, where, rid)
    if tier not in TIERS:
        raise _fail(where, rid, "tier", f"{tier!r} is not one of {TIERS}")
    return SpanPair(
        evidence=evidence,
        code=_code(d.get("code"), where, rid, "code"),
        tier=tier,
        source=str(d.get("source", "unknown")),
    )


def text_hash(text: str) -> str:
    """SHA-256 of a note's UTF-8 text (hex): how a run folder refers to a note it does not copy."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_reference(doc: Document, with_text: bool = False) -> dict[str, Any]:
    """A document as a run folder keeps it: source, id, split, codes, evidence spans, the text's
    SHA-256 and length in characters; the text itself only ``with_text`` (``copy_notes``).
    :func:`read_documents` reads either form."""
    out = doc.to_dict()
    text = out.pop("text")
    out |= {"text_sha256": text_hash(text), "text_chars": len(text)}
    if with_text:
        out["text"] = text
    return out


def is_reference(d: dict[str, Any]) -> bool:
    """A record of :func:`document_reference` without the note text."""
    return "text" not in d and "text_sha256" in d


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write dataclass records (or dicts) as JSON lines, atomically."""
    with atomic_file(path) as f:
        for row in rows:
            obj = row.to_dict() if hasattr(row, "to_dict") else row
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where}: invalid JSON: {e.msg}") from None


def read_documents(path: Path, need_text: bool = True) -> list[Document]:
    """Read and validate documents from a JSON-lines file.

    A run folder's ``data/<split>.jsonl`` holds references without the note text unless the
    run had ``copy_notes=true`` (:func:`document_reference`). Those read as documents with
    empty ``text`` (codes and evidence spans intact) when ``need_text`` is false, and
    raise :class:`RecordError` naming the file and the key when it is true.
    """
    out = []
    for where, d in _read_jsonl(path):
        if not is_reference(d):
            out.append(document_from_dict(d, where))
        elif need_text:
            raise RecordError(f"{where}: a document reference without its note text (the run had "
                              "copy_notes=false); rerun the data stage with copy_notes=true to keep the text")
        else:
            out.append(_document(d, where, with_text=False))
    return out


def read_span_pairs(path: Path) -> list[SpanPair]:
    """Read and validate span pairs from a JSON-lines file."""
    return [span_pair_from_dict(d, where) for where, d in _read_jsonl(path)]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``predictions.jsonl`` (one dict per document, as the predict stage writes
    them). Raises :class:`RecordError` naming the file (and line) for a missing file, a broken
    line, or a row whose ``codes`` or ``gold_codes`` is not a list."""
    rows = []
    for where, row in _read_jsonl(path):
        if not isinstance(row.get("codes"), list) or not isinstance(row.get("gold_codes"), list):
            raise RecordError(f"{where}: 'codes' and 'gold_codes' must be lists")
        rows.append(row)
    return rows
