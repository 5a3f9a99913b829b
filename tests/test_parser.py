"""Tests of the model-output parser: hand cases, real data, and property tests."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import simple_icd_10_cm as icd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccl.data.prompts import (
    CODES_HEADER,
    EVIDENCE_HEADER,
    NO_EVIDENCE,
    code_line,
    document_answer,
    human_evidence_prefix,
)
from ccl.icd.codes import extract_codes, is_well_formed
from ccl.predict.parser import ParsedOutput, parse_output

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DESCRIPTIONS = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential (primary) hypertension",
}


def describe(code: str) -> str:
    return DESCRIPTIONS.get(code, "")


# --- hand cases -------------------------------------------------------------


def test_training_format_round_trips() -> None:
    answer = document_answer(
        "evidence", ["type 2  diabetes", "high blood pressure"], ["E11.9", "I10"], describe
    )
    assert parse_output(answer) == ParsedOutput(
        ["type 2 diabetes", "high blood pressure"], ["E11.9", "I10"]
    )


def test_codes_only_format() -> None:
    answer = document_answer("codes_only", [], ["I10", "E11.9"], describe)
    assert parse_output(answer) == ParsedOutput([], ["I10", "E11.9"])


def test_no_evidence_marker_gives_empty_list() -> None:
    text = (
        f"{EVIDENCE_HEADER}\n{NO_EVIDENCE}\n{CODES_HEADER}\nI10 - Essential (primary) hypertension"
    )
    assert parse_output(text) == ParsedOutput([], ["I10"])


def test_human_evidence_prefix_is_parsed_with_the_continuation() -> None:
    prefix = human_evidence_prefix(["sugar high", "BP 180/100"])
    out = parse_output("E11.9 - Type 2 diabetes mellitus\nI10 -\n", prefix=prefix)
    assert out == ParsedOutput(["sugar high", "BP 180/100"], ["E11.9", "I10"])


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("E11.9, I10, n18.3", ["E11.9", "I10", "N18.3"]),
        ("e119\nE11.9 -\nE119", ["E11.9"]),
        ("Codes: E11.9 I10 N18.3", ["E11.9", "I10", "N18.3"]),
        ("Codes: E11.9 (type 2 diabetes), I10 (hypertension)", ["E11.9", "I10"]),
        ("codes:\n* E11.9: Type 2 diabetes\n* i10", ["E11.9", "I10"]),
        ("### ICD-10-CM Codes:\n1. E11.9 - T2DM\n2. I10", ["E11.9", "I10"]),
        ("**Codes:** S72.001A - Fracture of right femur", ["S72.001A"]),
        ("Codes:\nnone", []),
        ("", []),
        ("I am not sure which codes apply.", []),
    ],
)
def test_code_lines_in_the_forms_models_write(text: str, codes: list[str]) -> None:
    assert parse_output(text).codes == codes


def test_code_shaped_words_in_descriptions_are_not_codes() -> None:
    text = (
        "Codes:\n"
        "D51.9 - Vitamin B12 deficiency anemia, unspecified\n"
        "S22.070A - Wedge compression fracture of T9-T10 vertebra, initial encounter\n"
        "E11.9 - T2DM"
    )
    assert parse_output(text).codes == ["D51.9", "S22.070A", "E11.9"]
    # The plain regular expression would read B12 and T10 as codes.
    assert {"B12", "T10"} <= set(extract_codes(text))


def test_codes_quoted_in_evidence_do_not_count_when_a_codes_section_exists() -> None:
    text = "Evidence:\n- diabetes (E11.9 per old chart)\nCodes:\nI10 - Essential hypertension"
    assert parse_output(text) == ParsedOutput(["diabetes (E11.9 per old chart)"], ["I10"])


def test_without_codes_header_codes_come_from_the_whole_text() -> None:
    # Truncated before 'Codes:': the whole text is all there is.
    out = parse_output("Evidence:\n- diabetes, on metformin (E11.9)\n- hypert")
    assert out == ParsedOutput(["diabetes, on metformin (E11.9)", "hypert"], ["E11.9"])


def test_chain_of_thought_with_headers() -> None:
    text = (
        "Let me think step by step. The note says I should list evidence after 'Evidence:'.\n"
        "The patient takes insulin; Z79.4 could apply but it is historical.\n\n"
        "Evidence:\n"
        "- poorly controlled diabetes\n"
        "Codes:\n"
        "E11.65 - Type 2 diabetes mellitus with hyperglycemia\n"
        "I hope this helps!"
    )
    assert parse_output(text) == ParsedOutput(["poorly controlled diabetes"], ["E11.65"])


def test_chain_of_thought_without_headers_reads_every_code() -> None:
    text = "The patient has diabetes (E11.9) and hypertension, coded I10 as well."
    assert parse_output(text).codes == ["E11.9", "I10"]


def test_repeated_sections_are_merged_and_codes_deduplicated() -> None:
    text = "Evidence:\n- a\nCodes:\nI10 - x\nEvidence:\n- b\n- a\nCodes:\nE11.9 - y\nI10 - x"
    assert parse_output(text) == ParsedOutput(["a", "b", "a"], ["I10", "E11.9"])


def test_evidence_bullets_and_inline_header_text() -> None:
    text = (
        "Evidence: - first\n* second\n• third\n1. fourth\n2) fifth\n2.5 cm mass\n\n   \n-\nCodes:"
    )
    assert parse_output(text).evidence == [
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "2.5 cm mass",
    ]


def test_truncated_code() -> None:
    assert parse_output("Codes:\nE11.9 - Type 2 diab\nI1").codes == ["E11.9"]


@pytest.mark.parametrize("value", [None, 12, b"E11.9"])
def test_non_string_input_does_not_raise(value: object) -> None:
    assert isinstance(parse_output(value), ParsedOutput)  # type: ignore[arg-type]


# --- real data ----------------------------------------------------------------


def test_every_tabular_list_code_line_parses_to_its_code() -> None:
    """Round trip ``CODE - description`` for code-shaped descriptions and a sample of the rest."""
    codes = list(
        dict.fromkeys(c for c in icd.get_all_codes(True) if icd.is_category_or_subcategory(c))
    )
    tricky = [c for c in codes if extract_codes(icd.get_description(c))]
    assert len(tricky) > 100  # e.g. "Vitamin B12 deficiency anemia" under D51
    for code in tricky + codes[::25]:
        line = code_line(code, icd.get_description)
        assert parse_output("Codes:\n" + line).codes == [code], line


def _codiesp_documents(limit: int) -> list[tuple[list[str], list[str]]]:
    folder = DATA / "codiesp" / "train"
    if not (folder / "trainX.tsv").exists():
        pytest.skip(f"CodiEsp data not found under {folder}")
    evidence: dict[str, list[tuple[int, str]]] = defaultdict(list)
    codes: dict[str, list[str]] = defaultdict(list)
    with open(folder / "trainX.tsv", encoding="utf-8", newline="") as f:
        for doc, kind, code, text, offsets in csv.reader(f, delimiter="\t"):
            if kind == "DIAGNOSTICO":
                evidence[doc].append((int(offsets.split()[0]), text))
                codes[doc].append(code)
    docs = sorted(evidence)[:limit]
    return [([t for _, t in sorted(evidence[d])], codes[d]) for d in docs]


def test_codiesp_answers_round_trip() -> None:
    for evidence, codes in _codiesp_documents(40):
        canonical = list(dict.fromkeys(c.upper() for c in codes))
        out = parse_output(document_answer("evidence", evidence, canonical, lambda _: ""))
        assert out.evidence == [" ".join(e.split()) for e in evidence]
        assert out.codes == canonical


# --- properties -----------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        EVIDENCE_HEADER,
        CODES_HEADER,
        NO_EVIDENCE,
        "Evidence",
        "Codes",
        "codes",
        ":",
        "\n",
        "\r\n",
        "\u2028",
        "\x1c",
        " ",
        "\t",
        "-",
        " - ",
        "*",
        "**",
        "#",
        "1.",
        "E11.9",
        "e119",
        "E11.",
        "I10",
        "B12",
        "Z",
        "9",
        ".",
        ",",
        ";",
        "(",
        "ICD-10-CM ",
        "none",
        "İ",
        "\ud800",
        "\x00",
        "é",
    ]
)


def _check_shape(out: ParsedOutput) -> None:
    assert isinstance(out, ParsedOutput)
    assert all(isinstance(c, str) and is_well_formed(c) for c in out.codes)
    assert len(out.codes) == len(set(out.codes))
    for phrase in out.evidence:
        assert phrase and phrase == " ".join(phrase.split())
        assert phrase.lower() != "none"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(), st.text(max_size=50))
def test_arbitrary_text_never_raises(text: str, prefix: str) -> None:
    out = parse_output(text, prefix=prefix)
    _check_shape(out)
    assert out == parse_output(prefix + text)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=60).map("".join))
def test_header_fragments_never_raise(text: str) -> None:
    _check_shape(parse_output(text))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters=":")))
def test_without_any_header_codes_are_the_regex_codes(text: str) -> None:
    """Without headers: the regex codes, less those in code lines' descriptions, in order."""
    out = parse_output(text)
    regex = extract_codes(text)
    assert out.evidence == [] and set(out.codes) <= set(regex)
    assert out.codes == [c for c in regex if c in out.codes]
    if not any("|" in line or "-" in line or "(" in line or "=" in line or "`" in line
               or "*" in line or "_" in line for line in text.splitlines()):
        assert out.codes == [c for c in regex if c in out.codes]


PHRASE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789 ,()/'", max_size=30).filter(
    lambda p: p.strip()[:1].isalpha() and " ".join(p.split()).lower() != "none"
)
REAL_CODES = st.sampled_from(
    ["E11.9", "I10", "N18.3", "S72.001A", "T51.3X1A", "Z79.4", "J45.909", "F32.A"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(PHRASE, max_size=6), st.lists(REAL_CODES, max_size=6, unique=True), st.booleans())
def test_generated_answers_round_trip(
    evidence: list[str], codes: list[str], with_desc: bool
) -> None:
    answer = document_answer("evidence", evidence, codes, describe if with_desc else (lambda _: ""))
    assert parse_output(answer) == ParsedOutput([" ".join(e.split()) for e in evidence], codes)


@pytest.mark.parametrize(
    "text",
    [
        " " * 1_000_000 + "x",
        "Codes:" * 200_000,
        "E" * 1_000_000,
        "\n-" * 300_000,
        "Evidence:\n" + "- chest pain\n" * 100_000 + "Codes:\n" + "E11.9 - T2DM, I10\n" * 50_000,
        "*" * 500_000 + "Codes",
        "E11.9" + " - " * 300_000,
    ],
    ids=["spaces", "headers", "letters", "bullets", "long-answer", "stars", "separators"],
)
def test_huge_inputs_are_parsed(text: str) -> None:
    # A regex with catastrophic backtracking would not return here (the suite would time out);
    # no wall-clock assertion (unit tests never assert times).
    _check_shape(parse_output(text))


# --- Markdown decoration; descriptions are never mined (issue 14, kind 2) -------------


def test_issue_example_bold_code_with_code_shaped_description() -> None:
    assert parse_output("Codes:\n- **E11.65** - T2DM with hyperglycemia").codes == ["E11.65"]


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("Codes:\n- **E11.65** - T2DM with hyperglycemia\n- **I10** - HTN", ["E11.65", "I10"]),
        ("Codes:\n1. **E11.65**: T2DM\n2. **N18.3** – CKD3 (stage G3)", ["E11.65", "N18.3"]),
        ("Codes:\n1) `E11.65` — T2DM", ["E11.65"]),
        ("Codes:\n* _E11.65_ (T2DM with hyperglycemia)", ["E11.65"]),
        ("Codes:\n+ __E11.65__ = T2DM", ["E11.65"]),
        ("Codes:\n    - nested:\n        - **E11.65** - T2DM", ["E11.65"]),
        ("Codes:\n- [x] E11.65 - T2DM\n- [ ] I10 - HTN", ["E11.65", "I10"]),
        ("> **Codes:**\n> 1. *E11.65* — T2DM", ["E11.65"]),
        ("## ICD-10-CM Codes:\n### E11.65 - T2DM\n### I10 - HTN", ["E11.65", "I10"]),
        ("**Codes:**\n- Code: E11.65 - T2DM\n- ICD-10: I10 - HTN, B12 low", ["E11.65", "I10"]),
        ("Codes:\n- E11.65 (T2DM, B12 deficiency), I10 (HTN)", ["E11.65", "I10"]),
        ("Codes:\n| Code | Description |\n|:----|------:|\n| **E11.65** | T2DM with hyperglycemia |\n"
         "| `I10` | HTN, T2DM |", ["E11.65", "I10"]),
        ("Codes:\n| Evidence | Code | Description |\n|---|---|---|\n| sugars high, T2DM | E11.65 | T2DM |",
         ["E11.65"]),
        ("Codes:\n| # | Code |\n|---|---|\n| 1 | E11.65, I10 |", ["E11.65", "I10"]),
        ("Codes:\nThe codes are E11.65 (T2DM with hyperglycemia) and I10.", ["E11.65", "I10"]),
        # without a codes header: code lines keep their descriptions out too
        ("1. **E11.65** - T2DM with hyperglycemia\n2. **I10** - HTN", ["E11.65", "I10"]),
        ("| Code | Description |\n|---|---|\n| E11.65 | T2DM |", ["E11.65"]),
        ("The patient has T2DM; I would code E11.65.", ["T2D.M", "E11.65"]),  # prose: the paper's regex
    ],
)
def test_markdown_code_lines(text: str, codes: list[str]) -> None:
    assert parse_output(text).codes == codes


@settings(max_examples=150, deadline=None)
@given(
    st.lists(REAL_CODES, min_size=1, max_size=5, unique=True),
    st.sampled_from(["- ", "* ", "1. ", "+ ", "> ", "### ", "- [ ] ", ""]),
    st.sampled_from(["**{}**", "`{}`", "*{}*", "__{}__", "{}"]),
    st.sampled_from([" - ", ": ", " — ", " (", " = "]),
)
def test_decorated_code_lines_never_yield_description_codes(codes, bullet, wrap, sep) -> None:
    """Descriptions full of code-shaped words (T2DM, B12, T9-T10) add nothing."""
    lines = [f"{bullet}{wrap.format(c)}{sep}T2DM with B12 deficiency, T9-T10 fracture" for c in codes]
    assert parse_output("Codes:\n" + "\n".join(lines)).codes == codes
    assert parse_output("\n".join(lines)).codes == codes
