"""ICD-10-CM term cleaning (ccl/icd/terms.py): natural_phrase and plain_forms share the cuts of
"Other"/"Unspecified", a trailing "unspecified" and a "without ..." tail."""

import pytest

from ccl.icd.terms import natural_phrase, plain_forms


@pytest.mark.parametrize(("term", "phrase"), [
    ("Pneumonia, unspecified organism", "pneumonia"),
    ("Gout (acute) NOS", "gout"),
    ("Other specified disorders of kidney and ureter", "specified disorders of kidney and ureter"),
    ("Unspecified dementia without behavioral disturbance", "dementia"),
    ("Chronic kidney disease, stage 3 unspecified", "chronic kidney disease, stage 3"),
    ("Malignant neoplasm of unspecified part of bronchus or lung", "malignant neoplasm of bronchus or lung"),
    ("Attention-deficit hyperactivity disorder [ADHD], combined type",
     "attention-deficit hyperactivity disorder, combined type"),
    ("Type 2 diabetes mellitus without complications", "type 2 diabetes mellitus"),
    ("Escherichia coli [E. coli] as the cause of diseases classified elsewhere",
     "Escherichia coli as the cause of diseases classified elsewhere"),
])
def test_natural_phrase(term, phrase):
    assert natural_phrase(term) == phrase


def test_plain_forms_drop_the_same_qualifiers():
    forms = plain_forms("Unspecified dementia without behavioral disturbance")
    assert forms[0] == "Unspecified dementia without behavioral disturbance"
    assert "dementia without behavioral disturbance" in forms and "Unspecified dementia" in forms
