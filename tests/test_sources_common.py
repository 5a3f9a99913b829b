"""Shared source helpers: the code mapping rule, span trimming, splits, downloads, dispatch."""

import zipfile

import pytest

from ccl.config import CodiespDocsConfig, DocsConfig
from ccl.data.sources import SOURCES, load_source
from ccl.data.sources.common import (
    CodeMapper,
    DownloadError,
    MissingDataError,
    carve_validation,
    download,
    extract_zip,
    map_code,
    option,
    require,
    trim_span,
)
from ccl.records import Document, RecordError

# code, its mapping ("-": none), the rule that chose it  # why
MAP_CODE_CASES = """
E11.9     E11.9     valid
e119      E11.9     valid
E87.2     E87.20    unspecified_descendant       # FY2023 split E87.2 into E87.20-E87.29
I24.8     I24.89    same_description_descendant  # I24.81 is new; I24.89 keeps the old title
K83.0     K83.09    other_descendant             # K83.01 primary sclerosing, K83.09 other cholangitis
w19.xxx   W19.XXXA  same_description_descendant  # CodiEsp writes placeholders without a 7th character
T14.90    T14.90XA  same_description_descendant
E11.359   E11.3599  same_description_descendant  # the 7th character picks the eye; 9 = unspecified
T81.4XXA  T81.40XA  unspecified_descendant       # MDACE's T81.4XXA: T81.4 was split; keep the A
V29.9XXA  V29.99XA  other_descendant             # V29.91 e-bikes, V29.99 other motorcycles
B37.3     B37.31    first_descendant
Q9Z.9     -         not_in_tabular
0DT70ZZ   -         malformed
"""


def _cases(table: str) -> list[tuple[str, str | None, str]]:
    rows = [line.split("#")[0].split() for line in table.strip().splitlines()]
    return [(code, None if mapped == "-" else mapped, reason) for code, mapped, reason in rows]


@pytest.mark.parametrize(("code", "expected", "reason"), _cases(MAP_CODE_CASES))
def test_map_code_rule(tab, code, expected, reason):
    assert map_code(code, tab) == (expected, reason)
    if expected is not None:
        assert tab.is_billable(expected)


def test_code_mapper_counts_occurrences_and_lists_codes(tab):
    mapper = CodeMapper(tab)
    out = [mapper(c) for c in ["E11.9", "E87.2", "e87.2", "Q9Z.9", "E11.9"]]
    assert out == ["E11.9", "E87.20", "E87.20", None, "E11.9"]
    assert mapper("E87.2", count=False) == "E87.20"  # a second look is not counted
    report = mapper.report()
    assert report["valid"] == 2
    assert report["mapped"] == {"unspecified_descendant": 2}
    assert report["dropped"] == {"not_in_tabular": 1}
    assert report["mapped_codes"] == {"E87.2": "E87.20"}
    assert report["dropped_codes"] == {"Q9Z.9": "not_in_tabular"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  hypertension. ", "hypertension"),
        ("(IMC > 40 kg/m2", "IMC > 40 kg/m2"),
        ("(HTN)", "(HTN)"),
        ("history of CHF (", "history of CHF"),
        ("quemada del 20%,", "quemada del 20%"),
        ("HER2+;", "HER2+"),
        ("¿dolor?", "dolor"),
        (" .,- ", ""),
        # Issue 23: a sign after a test or antigen name is the finding ("Rh -" is Z67.11).
        ("Rh -", "Rh -"),
        (" Rh - ", "Rh -"),
        ("HIV +,", "HIV +"),
        ("VIH-", "VIH-"),
        ("HLA-B27 +", "HLA-B27 +"),
        ("grupo A \u2212", "grupo A \u2212"),
        # ... and a dash after an ordinary word is punctuation.
        ("diabetes -", "diabetes"),
        ("tipo 2 -", "tipo 2"),
    ],
)
def test_trim_span(text, expected):
    note = "xx" + text + "yy"
    start, end = trim_span(note, 2, 2 + len(text))
    assert note[start:end] == expected
    if not expected:
        assert start == end


def _docs(n):
    return [Document(id=f"d{i:02d}", text="t", codes=[]) for i in range(n)]


def test_carve_validation_is_seeded_and_keeps_order():
    train, val = carve_validation(_docs(20), 5, seed=13, salt="x")
    again, val2 = carve_validation(list(reversed(_docs(20))), 5, seed=13, salt="x")
    assert [d.id for d in val] == sorted(d.id for d in val2)  # same picks whatever the input order
    assert len(train) == 15 and len(val) == 5
    assert [d.id for d in train] == sorted(d.id for d in train)
    other = carve_validation(_docs(20), 5, seed=14, salt="x")[1]
    assert {d.id for d in other} != {d.id for d in val}
    with pytest.raises(ValueError, match="n_val=20"):
        carve_validation(_docs(20), 20, seed=13, salt="x")


def test_option_reads_declared_fields_and_falls_back():
    cfg = DocsConfig(name="x")
    assert option(cfg, "seed", 0) == 13
    assert option(cfg, "codiesp.language", "es") == "es"  # the block's default
    cfg.codiesp = CodiespDocsConfig(language="en")
    assert option(cfg, "codiesp.language", "es") == "en"


def test_require_names_the_missing_file(tmp_path):
    with pytest.raises(MissingDataError, match=r"nope\.csv: thing not found\. Do this\."):
        require(tmp_path / "nope.csv", "thing", "Do this.")


def test_download_offline_error_names_url_and_config_key(tmp_path, web):
    with pytest.raises(DownloadError) as err:
        download("https://example.org/f.zip", tmp_path / "f.zip", "the corpus", "docs.path")
    message = str(err.value)
    assert (
        "https://example.org/f.zip" in message and "docs.path" in message and "offline" in message
    )
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind


def test_download_writes_once(tmp_path, web):
    web.serve = lambda url: b"payload"
    dest = tmp_path / "sub" / "f.bin"
    url = "https://example.org/u"
    assert download(url, dest, "x", "docs.path").read_bytes() == b"payload"
    download(url, dest, "x", "docs.path")
    assert web.calls == [url]


def test_extract_zip_refuses_escaping_members(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(RecordError, match="outside"):
        extract_zip(archive, tmp_path / "out")
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(RecordError, match=r"notzip\.zip: not a zip archive"):
        extract_zip(tmp_path / "notzip.zip", tmp_path / "out")


def test_load_source_rejects_unknown_names(tab, tmp_path):
    with pytest.raises(ValueError) as err:
        load_source(DocsConfig(name="x", source="mimic3"), tab, tmp_path)
    for name in ["demo", *SOURCES]:
        assert name in str(err.value)
