"""How many real CodiEsp and MDACE labels map to another code than before (issue 23, item 6).

Maps every diagnosis label occurrence of the public CodiEsp (train + dev: D rows and X
DIAGNOSTICO rows) and MDACE (ICD-10-CM annotations of every subset) files with the
CodeMapper of the ``ccl`` on ``PYTHONPATH``, with the Alphabetic Index, in the context the
loaders give (CodiEsp: the Spanish text and the label's X evidence; MDACE: none, its
MIMIC-III text is credentialed), and writes one JSON line per occurrence:

    PYTHONPATH=/path/to/old python benchmarks/label_mapping_changes.py map DATA old.jsonl
    PYTHONPATH=$PWD python benchmarks/label_mapping_changes.py map DATA new.jsonl
    python benchmarks/label_mapping_changes.py compare old.jsonl new.jsonl

``DATA`` is the folder with ``codiesp/``, ``mdace/`` and ``icd10cm/``. Only codes are
written (no note text).
"""

from __future__ import annotations

import csv
import inspect
import json
import sys
from collections import Counter
from pathlib import Path


def _mapper():
    from ccl.data.sources import common
    from ccl.icd.index import parse_index_xml, validate_entries
    from ccl.icd.tabular import default_xml_path, load_tabular

    tab = load_tabular(default_xml_path())
    entries, _ = validate_entries(parse_index_xml(DATA / "icd10cm" / "icd10cm-index-2025-rebuilt.xml"), tab, "A")
    mapper = common.CodeMapper(tab, entries)
    contextual = "context" in inspect.signature(mapper.__call__).parameters
    return mapper, (common.MappingContext if contextual else None)


def map_all(out: Path) -> None:
    from ccl.icd.codes import canonical_code

    mapper, Context = _mapper()
    rows = []
    for split in ("train", "dev"):
        folder = DATA / "codiesp" / split
        evidence: dict[tuple[str, str], list[str]] = {}
        x_rows = []
        for doc, kind, code, given, _ in csv.reader(
            (folder / f"{split}X.tsv").open(encoding="utf-8", newline=""), delimiter="\t", quoting=csv.QUOTE_NONE
        ):
            if kind == "DIAGNOSTICO":
                evidence.setdefault((doc, canonical_code(code)), []).append(given)
                x_rows.append((doc, code))
        d_rows = [tuple(r) for r in csv.reader((folder / f"{split}D.tsv").open(encoding="utf-8"), delimiter="\t")]
        for kind, items in (("D", d_rows), ("X", x_rows)):
            for doc, code in items:
                path = folder / "text_files" / f"{doc}.txt"
                kwargs = {}
                if Context is not None:
                    text = path.read_text(encoding="utf-8") if path.exists() else ""
                    kwargs["context"] = Context(text, evidence.get((doc, canonical_code(code)), ()))
                new = mapper(code, **kwargs)
                rows.append({"data": f"codiesp_{kind}", "doc": doc, "label": code, "code": new})
    for path in sorted((DATA / "mdace" / "data").rglob("*-ICD-10.json")):
        chart = json.loads(path.read_text(encoding="utf-8"))
        for note in chart["notes"]:
            for ann in note["annotations"]:
                if ann["code_system"] == "ICD-10-CM":
                    rows.append({"data": "mdace", "doc": f"{path.parent.parent.parent.name}/{chart['hadm_id']}",
                                 "label": ann["code"], "code": mapper(ann["code"])})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} label occurrences mapped -> {out}")


def compare(old: Path, new: Path) -> None:
    a = [json.loads(line) for line in old.read_text().splitlines()]
    b = [json.loads(line) for line in new.read_text().splitlines()]
    assert [(r["data"], r["doc"], r["label"]) for r in a] == [(r["data"], r["doc"], r["label"]) for r in b]
    print("| data | occurrences | not billable as written | mapping changed | of which now dropped (ambiguous) "
          "| distinct labels changed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    changes: Counter[tuple[str, str, str]] = Counter()
    for data in sorted({r["data"] for r in a}):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x["data"] == data]
        remapped = sum(x["code"] != x["label"].upper() for x, _ in pairs)
        changed = [(x, y) for x, y in pairs if x["code"] != y["code"]]
        dropped = sum(y["code"] is None for _, y in changed)
        labels = {x["label"].upper() for x, _ in changed}
        print(f"| {data} | {len(pairs)} | {remapped} | {len(changed)} | {dropped} | {len(labels)} |")
        for x, y in changed:
            changes[(x["label"].upper(), str(x["code"]), str(y["code"]))] += 1
    print("\n| label | before | after | occurrences |\n| --- | --- | --- | ---: |")
    for (label, before, after), n in sorted(changes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"| {label} | {before} | {after} | {n} |")


if __name__ == "__main__":
    if sys.argv[1] == "map":
        DATA = Path(sys.argv[2])
        map_all(Path(sys.argv[3]))
    else:
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
