import pytest

from ccl.icd.codes import canonical_code, extract_codes, is_well_formed


@pytest.mark.parametrize(
    "raw, canon",
    [("E11.9", "E11.9"), ("e119", "E11.9"), ("E11.9 -", "E11.9"), ("E119", "E11.9"),
     ("I10", "I10"), ("s72.001a", "S72.001A"), (" T51.3X1A ", "T51.3X1A"), ("C79.8-", "C79.8")],
)
def test_canonical_code(raw, canon):
    assert canonical_code(raw) == canon
    assert is_well_formed(canon)


def test_extract_codes_in_order_deduplicated():
    text = "Codes:\nI10 - Essential hypertension\ne119 diabetes\nI10 again, J45.909; N18.6."
    assert extract_codes(text) == ["I10", "E11.9", "J45.909", "N18.6"]


def test_extract_ignores_words_and_partial_tokens():
    assert extract_codes("vitamin B12vitamin, 3I10, ZZE11.9") == []
    assert extract_codes("") == []


def test_not_well_formed():
    for bad in ("E1", "11.9", "E11.99999", "E11.", ""):
        assert not is_well_formed(canonical_code(bad)) or bad == "E11."


def test_2026_letter_letter_digit_categories():
    # QA0 (2026) has a letter in second position; abbreviations such as BMI must not match.
    assert extract_codes("QA0.0101 and qa00101; BMI 31, CKD, HbA1c 8") == ["QA0.0101"]


def test_sentence_ending_in_a_code_keeps_the_code():
    assert extract_codes("hypertension, I10. The diabetes E11.9.") == ["I10", "E11.9"]
