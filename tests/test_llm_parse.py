"""Malformed LLM answers are parsed defensively: usable parts kept, the rest counted, never fatal."""

import pytest

from ccl.spans.llm.parse import parse_code_spans, parse_json, parse_string_list


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"E11.9": ["type 2 diabetes"]}', {"E11.9": ["type 2 diabetes"]}),
        ('Sure! Here is the JSON:\n```json\n{"I10": ["HTN", "hypertension"]}\n```\nHope it helps.',
         {"I10": ["HTN", "hypertension"]}),
        ('{"I10": ["HTN",], "e119": "T2DM",}', {"I10": ["HTN"], "E11.9": ["T2DM"]}),  # trailing commas, bare string
        ("{'N17.9': ['AKI']}", {"N17.9": ["AKI"]}),  # Python-style quotes
        ('The evidence is {"J18.9": ["pneumonia {left lower lobe}"]} as requested',
         {"J18.9": ["pneumonia {left lower lobe}"]}),
        ('{"I10": [], "E78.5": ["  high   cholesterol "]}', {"I10": [], "E78.5": ["high cholesterol"]}),
        ("{}", {}),
    ],
)
def test_code_span_objects(text, expected):
    parsed, lenient = parse_code_spans(text)
    assert parsed == expected and lenient is False


def test_code_span_lines_are_a_lenient_fallback():
    parsed, lenient = parse_code_spans('E11.9: "type 2 diabetes", "T2DM"\nI10: HTN; hypertension\nNotes: none')
    assert parsed == {"E11.9": ["type 2 diabetes", "T2DM"], "I10": ["HTN", "hypertension"]}
    assert lenient is True


@pytest.mark.parametrize(
    "text",
    ["", "I could not find any evidence.", '{"E11.9": ["unterminated', "[1, 2, 3]", '{"not a code": ["x"]}', None, 42],
)
def test_unusable_code_span_answers_are_none(text):
    parsed, _ = parse_code_spans(text)
    assert parsed is None


@pytest.mark.parametrize(
    ("text", "expected", "lenient"),
    [
        ('["HTN", "essential hypertension"]', ["HTN", "essential hypertension"], False),
        ('Answer:\n```\n["a b", "c"]\n```', ["a b", "c"], False),
        ('{"phrases": ["left femur fracture"]}', ["left femur fracture"], False),
        ('["x", 3, null, "  y  "]', ["x", "y"], False),
        ("- type 2 diabetes\n- T2DM\n2. \"DM2\"", ["type 2 diabetes", "T2DM", "DM2"], True),
    ],
)
def test_string_lists(text, expected, lenient):
    assert parse_string_list(text) == (expected, lenient)


@pytest.mark.parametrize("text", ["", "no idea", '["unterminated', None])
def test_unusable_lists_are_none(text):
    assert parse_string_list(text) == (None, False)


def test_parse_json_skips_non_matching_fragments():
    assert parse_json('first {"a": 1} then ["b"]', list) == ["b"]
    assert parse_json('["b"] then {"a": [1]}', dict) == {"a": [1]}
    assert parse_json("{broken} {\"ok\": true}", dict) == {"ok": True}
