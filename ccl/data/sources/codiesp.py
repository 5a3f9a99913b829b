"""CodiEsp (CLEF eHealth 2020): Spanish clinical cases coded in CIE-10-ES, CC BY 4.0.

``docs.path`` is the folder holding ``train/`` and ``dev/`` as in the Zenodo
release (record 3837305, ``codiesp.zip`` -> ``final_dataset_v4_to_publish/``);
left null, the zip is downloaded once into ``<cache_dir>/sources/codiesp``.
Per split folder:

- ``text_files/<id>.txt``: the Spanish case; evidence offsets index this text;
- ``text_files_en/<id>.txt``: its sentence-split machine translation (no offsets);
- ``<split>D.tsv``: ``id<TAB>code`` diagnosis codes (CIE-10-ES diagnoses are
  ICD-10-CM codes, written lower case);
- ``<split>X.tsv``: ``id<TAB>DIAGNOSTICO|PROCEDIMIENTO<TAB>code<TAB>text<TAB>offsets``
  with offsets ``"start end"``, ``;``-separated when the mention is discontinuous.

Conventions (fixed, so runs compare):

- splits: ``train`` minus ``docs.n_val`` seeded picks is train, those picks are
  val; ``docs.codiesp.test_split=dev`` (default, as the paper's setting) makes ``dev`` the
  test split; ``docs.codiesp.test_split=test`` gives the three official splits: ``dev``
  as the split ``dev`` and the official ``test`` folder as ``test`` (its
  unlabelled background documents, which the release mixes in, are skipped and
  counted);
- every dropped record is counted alike: D and X rows of a document with no
  text file (``D_rows_without_text``, ``X_rows_without_text``) and label
  occurrences the Tabular List cannot take; above ``docs.max_dropped_record_share``
  or ``docs.max_dropped_label_share`` the load stops, naming the share and the file
  (:func:`ccl.data.sources.common.check_losses`);
- diagnoses only: procedure (ICD-10-PCS) mentions are dropped and counted;
  codes go through the mapping rule of :mod:`ccl.data.sources.common` in the
  document's context (its Spanish text, and the label's evidence texts from
  ``X.tsv``, for codes split by sex, age or sibling concept), and the ones not in
  ICD-10-CM or left ambiguous are counted and listed in ``stats["codes"]``;
- a discontinuous mention ``"a b;c d"`` becomes one evidence span per piece,
  each with the mention's code (pieces are what the text says; the gap between
  them may hold other findings); every piece is trimmed of edge whitespace and
  punctuation, and a piece left empty is skipped;
- text is read as the release's offsets count it (:func:`ccl.data.sources.common.normalise_text`:
  no BOM, LF line ends, NFC), so a copy saved with Windows line ends, a BOM or NFD
  accents loads the same spans; every mention's offsets are then checked against the
  evidence text ``X.tsv`` gives beside them (:class:`ccl.data.sources.common.OffsetCheck`):
  a disagreement is repaired by locating that text near the offsets, or the mention is
  dropped, counted in ``stats["offsets"]`` and warned about in one line naming the file
  (above ``docs.max_dropped_record_share`` dropped mentions the load stops);
- ``docs.codiesp.language``: ``es`` (default) gives Spanish documents with evidence and
  a corpus of the English translations of the training documents (code-only);
  ``en`` gives the English translations, code-only, for every split (the
  document-level SFT baseline on public data) and the same corpus.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from ccl.data.sources import SourceData
from ccl.data.sources.common import (
    CodeMapper,
    IndexHints,
    MappingContext,
    MissingDataError,
    OffsetCheck,
    carve_validation,
    check_losses,
    choice,
    download,
    extract_zip,
    normalise_text,
    read_text_file,
    require,
    trim_span,
    with_split,
)
from ccl.icd.codes import canonical_code
from ccl.icd.tabular import TabularList
from ccl.records import Document, RecordError, document_from_dict

ZENODO_URL = "https://zenodo.org/record/3837305/files/codiesp.zip?download=1"
SPLITS = {"train": "train", "test": "dev"}  # our split -> CodiEsp folder (val is carved from train)
# docs.codiesp.test_split=test: the three official splits (val still carved from train).
OFFICIAL_SPLITS = {"train": "train", "dev": "dev", "test": "test"}
TEST_SPLITS = ("dev", "test")
LANGUAGES = ("es", "en")
FIX = (
    "CodiEsp comes from Zenodo record 3837305 (codiesp.zip, CC BY 4.0); set docs.path "
    "to the folder holding its train/ and dev/ folders (final_dataset_v4_to_publish)."
)


def codiesp_root(cfg: Any, cache_dir: Path) -> Path:
    """The folder with ``train/`` and ``dev/``: ``docs.path``, or the downloaded release."""
    if cfg.path:
        return require(cfg.path, "CodiEsp folder", FIX)
    target = Path(cache_dir) / "sources" / "codiesp"
    found = sorted(target.glob("**/train/trainD.tsv"))
    if not found:
        archive = download(ZENODO_URL, target / "codiesp.zip", "the CodiEsp corpus", "docs.path")
        extract_zip(archive, target)
        found = sorted(target.glob("**/train/trainD.tsv"))
        if not found:
            raise RecordError(f"{archive}: no train/trainD.tsv inside; is it the CodiEsp release?")
    return found[0].parent.parent


def _read_tsv(path: Path, columns: int) -> list[tuple[str, list[str]]]:
    """Rows of a tab-separated file as ``(where, fields)``; a short or long row is an error."""
    require(path, "CodiEsp annotation file", FIX)
    rows = []
    # utf-8-sig: a byte-order mark is not part of the first document id; newline="" and
    # the strip below: a CRLF copy's "\r" is not part of the last field.
    with path.open(encoding="utf-8-sig", newline="") as f:
        # QUOTE_NONE: evidence text may contain quote characters.
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields or fields == [""]:
                continue
            where = f"{path}:{lineno}"
            fields = [normalise_text(v) for v in fields]
            fields[-1] = fields[-1].rstrip("\n")
            if len(fields) != columns:
                raise RecordError(
                    f"{where}: expected {columns} tab-separated columns, got {len(fields)}"
                )
            rows.append((where, fields))
    return rows


def _offsets(value: str, where: str) -> list[tuple[int, int]]:
    pieces = []
    for part in value.split(";"):
        bounds = part.split()
        try:
            start, end = (int(b) for b in bounds)
        except ValueError:
            raise RecordError(
                f"{where}: offsets {value!r} are not 'start end[;start end...]'"
            ) from None
        if start > end:
            raise RecordError(f"{where}: offsets {part!r} end before they start")
        pieces.append((start, end))
    return pieces


class _SplitReader:
    """Reads one CodiEsp split folder into Spanish (with evidence) and English documents."""

    def __init__(
        self, root: Path, folder: str, mapper: CodeMapper, counts: Counter[str], offsets: OffsetCheck
    ) -> None:
        self.dir = root / folder
        self.folder = folder
        self.mapper = mapper
        self.counts = counts
        self.rows: dict[str, int] = {}  # annotation rows read, per file kind (D, X)
        self.orphans: dict[str, int] = {}  # rows of a document without a text file, per kind
        self.offsets = offsets
        self.checked = 0  # mentions whose offsets were checked against their given text

    def ids(self) -> list[str]:
        text_dir = require(self.dir / "text_files", "CodiEsp text folder", FIX)
        return sorted(p.stem for p in text_dir.glob("*.txt"))

    def codes(self) -> dict[str, list[str]]:
        """The D file's codes per document, as written (mapped per document, with its context)."""
        out: dict[str, list[str]] = {}
        rows = _read_tsv(self.dir / f"{self.folder}D.tsv", 2)
        self.rows["D"] = len(rows)
        for _, (doc_id, code) in rows:
            out.setdefault(doc_id, []).append(code)
        return out

    def map_codes(self, codes: list[str], text: str, evidence: dict[str, list[str]]) -> list[str]:
        """A document's D codes mapped (and counted) in its context: its Spanish text and each
        label's evidence from X.tsv (they decide splits by sex, age or sibling concept)."""
        out: list[str] = []
        for code in codes:
            context = MappingContext(text, evidence.get(canonical_code(code), ()))
            mapped = self.mapper(code, context=context)
            if mapped is not None and mapped not in out:
                out.append(mapped)
        return out

    def mentions(self) -> dict[str, list[tuple[str, str, list[tuple[int, int]]]]]:
        out: dict[str, list[tuple[str, str, list[tuple[int, int]]]]] = {}
        rows = _read_tsv(self.dir / f"{self.folder}X.tsv", 5)
        self.rows["X"] = len(rows)
        for where, (doc_id, kind, code, given, offsets) in rows:
            if kind == "PROCEDIMIENTO":
                self.counts["procedure_mentions_dropped"] += 1
                continue
            if kind != "DIAGNOSTICO":
                raise RecordError(
                    f"{where}: type {kind!r} is neither DIAGNOSTICO nor PROCEDIMIENTO"
                )
            out.setdefault(doc_id, []).append((where, code, given, _offsets(offsets, where)))
        return out

    def read_text(self, doc_id: str, language: str) -> tuple[Path, str]:
        sub = "text_files" if language == "es" else "text_files_en"
        path = require(self.dir / sub / f"{doc_id}.txt", f"CodiEsp {language} text", FIX)
        # The release is LF, BOM-less and NFC and its offsets count that text's code points:
        # a copy saved with CRLF, a BOM or NFD reads back the same (common.normalise_text).
        return path, read_text_file(path)

    def spans(
        self, doc_id: str, text: str, text_path: Path, mentions: list, evidence: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        spans: dict[tuple[int, int, str], None] = {}
        for where, code, given, pieces in mentions:
            context = MappingContext(text, evidence.get(canonical_code(code), ()))
            mapped = self.mapper(code, count=False, context=context)
            if mapped is None:
                self.counts["mentions_with_dropped_code"] += 1
                continue
            self.counts["discontinuous_mentions"] += len(pieces) > 1
            for start, end in pieces:
                if end > len(text):
                    raise RecordError(
                        f"{where}: offsets {start}:{end} run past the end of {text_path} ({len(text)} characters)"
                    )
            self.checked += 1
            checked = self.offsets.check(text, pieces, given, where.rsplit(":", 1)[0], where)
            if checked is None:
                continue
            for start, end in checked:
                s, e = trim_span(text, start, end)
                if s == e:
                    self.counts["pieces_empty_after_trim"] += 1
                    continue
                if (s, e, mapped) in spans:
                    self.counts["duplicate_spans"] += 1
                spans[(s, e, mapped)] = None
        return [{"start": s, "end": e, "code": c} for s, e, c in spans]

    def documents(self, language: str) -> tuple[list[Document], list[Document]]:
        """(Spanish documents with evidence or [] when language=en, English code-only documents)."""
        codes, mentions = self.codes(), self.mentions()
        spanish, english = [], []
        ids = self.ids()
        known = set(ids)
        # Rows of a document with no text file: D and X rows alike are counted and reported,
        # and stop the load above docs.max_dropped_record_share (common.check_losses).
        self.orphans["D"] = self._orphan_rows(f"{self.folder}D.tsv", known, 0)
        self.orphans["X"] = self._orphan_rows(f"{self.folder}X.tsv", known, 0)
        self.counts["D_rows_without_text"] += self.orphans["D"]
        self.counts["X_rows_without_text"] += self.orphans["X"]
        if self.folder == "test":  # the test release also holds unlabelled background documents
            labelled = set(codes) | set(mentions)
            self.counts["test_background_documents_skipped"] += len([i for i in ids if i not in labelled])
            ids = [i for i in ids if i in labelled]
        for doc_id in ids:
            path_es, text_es = self.read_text(doc_id, "es")
            evidence: dict[str, list[str]] = {}
            for _, code, given, _ in mentions.get(doc_id, []):
                evidence.setdefault(canonical_code(code), []).append(given)
            doc_codes = self.map_codes(codes.get(doc_id, []), text_es, evidence)
            self.counts["documents_without_codes"] += not doc_codes
            if language == "es":
                spans = self.spans(doc_id, text_es, path_es, mentions.get(doc_id, []), evidence)
                record = {
                    "id": doc_id,
                    "text": text_es,
                    "codes": doc_codes,
                    "spans": spans,
                    "source": "codiesp",
                }
                spanish.append(document_from_dict(record, str(path_es)))
            path, text = self.read_text(doc_id, "en")
            record = {"id": doc_id, "text": text, "codes": doc_codes, "source": "codiesp_en"}
            english.append(document_from_dict(record, str(path)))
        for doc_id in sorted(set(codes) - known):  # D rows of a document without text: counted
            self.map_codes(codes[doc_id], "", {})
        return spanish, english

    def _orphan_rows(self, name: str, known: set[str], column: int) -> int:
        path = self.dir / name
        return sum(fields[column] not in known for _, fields in _read_tsv(path, 2 if name.endswith("D.tsv") else 5))

    def records(self) -> dict[str, tuple[int, int, str]]:
        """Dropped rows for :func:`check_losses`: ``{name: (dropped, total, file)}``."""
        return {
            f"{self.folder}{kind}_rows_of_documents_without_text": (
                self.orphans.get(kind, 0), self.rows.get(kind, 0), str(self.dir / f"{self.folder}{kind}.tsv"))
            for kind in ("D", "X")
        }


def load_codiesp(
    cfg: Any, tab: TabularList, cache_dir: Path, index: IndexHints | None = None
) -> SourceData:
    """CodiEsp documents (see the module doc for splits, spans and languages)."""
    language = choice(cfg, "codiesp.language", "es", LANGUAGES, "CodiEsp has")
    test_split = choice(cfg, "codiesp.test_split", "dev", TEST_SPLITS, "CodiEsp's test split is one of")
    root = codiesp_root(cfg, cache_dir)
    splits = SPLITS if test_split == "dev" else OFFICIAL_SPLITS
    if test_split == "test" and not (root / "test" / "testD.tsv").is_file():
        raise MissingDataError(
            f"{root / 'test' / 'testD.tsv'}: docs.codiesp.test_split=test needs the official CodiEsp test split "
            "(test/ with testD.tsv, testX.tsv and text_files/, as in the Zenodo release). "
            "Set docs.codiesp.test_split=dev to test on the dev split instead."
        )
    mapper = CodeMapper(tab, index)
    counts: Counter[str] = Counter()
    offsets = OffsetCheck("codiesp")
    by_split: dict[str, tuple[list[Document], list[Document]]] = {}
    records: dict[str, tuple[int, int, str]] = {}
    for split, folder in splits.items():
        reader = _SplitReader(root, folder, mapper, counts, offsets)
        by_split[split] = reader.documents(language)
        records.update(reader.records())
        if language == "es":
            wrong = offsets.per_file.get(str(reader.dir / f"{folder}X.tsv"), Counter())["offsets_wrong"]
            records[f"{folder}X_mentions_with_wrong_offsets"] = (
                wrong, reader.checked, str(reader.dir / f"{folder}X.tsv"))
    offsets.warn()
    pick = 0 if language == "es" else 1
    train_es, val_es = carve_validation(
        by_split["train"][pick], int(cfg.n_val), int(cfg.seed), "codiesp"
    )
    val_ids = {d.id for d in val_es}
    corpus = [d for d in by_split["train"][1] if d.id not in val_ids]
    docs = {
        "train": with_split(train_es, "train"),
        "val": with_split(val_es, "val"),
        "test": with_split(by_split["test"][pick], "test"),
    }
    if "dev" in by_split:
        docs["dev"] = with_split(by_split["dev"][pick], "dev")
    losses = check_losses(cfg, "codiesp", mapper, root / "train" / "trainD.tsv", records)
    if language == "es":  # with en the corpus is the train split itself
        corpus = with_split(corpus, "corpus")
    stats = {
        "source": "codiesp",
        "language": language,
        "root": str(root),
        "splits": {
            "train": f"train minus {cfg.n_val} seeded picks",
            "val": "picked from train",
            **({"dev": "dev"} if "dev" in docs else {}),
            "test": test_split,
        },
        "losses": losses,
        "documents": {k: len(v) for k, v in docs.items()},
        "corpus": len(corpus),
        "evidence_spans": sum(len(d.spans) for v in docs.values() for d in v),
        "counts": dict(sorted(counts.items())),
        "offsets": offsets.report(),
        "codes": mapper.report(),
    }
    return SourceData(docs=docs, corpus=corpus, stats=stats)
