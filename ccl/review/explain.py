"""A coded note as a coder reviews it: codes with their evidence and its offsets, flags in words.

:func:`explain` turns one prediction row (``predictions.jsonl`` or ``ccl.cli.predict``'s row) into
a plain dict (the ``--json`` output of ``ccl.cli.predict`` and the data of the review page):
each distinct evidence phrase with its character range in the note (``start``/``end``,
Python string offsets; ``found: false`` when the phrase is not in the note, as
:func:`ccl.eval.evidence.locate` matches: case, whitespace and edge punctuation aside) and
the code the model gives it under the span prompt (``links``:
:func:`ccl.predict.span_recode.recode_phrases`), each code with its description, score,
billable status, the phrases linked to it and its guideline flags with the code that is
missing (:func:`flag_texts`), and the gold codes when known (``missed``/``extra``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ccl.eval.evidence import locate
from ccl.eval.guidelines import GuidelineChecker
from ccl.icd.tabular import TabularList


def _ref_text(refs: Sequence[Any]) -> str:
    return ", ".join(r.low if r.low == r.high else f"{r.low}-{r.high}" for r in refs)


def flag_texts(checker: GuidelineChecker, codes: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """``code -> [{"kind", "label", "text"}]`` (``label``: :meth:`DocFlags.per_code`'s): each guideline flag of
    :meth:`GuidelineChecker.check` in words, naming the other code: ``excludes1`` (the code it excludes),
    ``code_first_missing`` / ``use_additional_code_missing`` (the codes the Tabular List's note asks for, ``one of``
    its alternatives) and ``missing_7th_character``."""
    flags = checker.check(codes)
    out: dict[str, list[dict[str, str]]] = {}
    for a, b in flags.excludes1_pairs:
        for one, other in ((a, b), (b, a)):
            out.setdefault(one, []).append(
                {"kind": "excludes1", "label": f"excludes1:{other}",
                 "text": f"Excludes1 with {other}: the two are not coded together"})
    for code in flags.missing_seventh_character:
        out.setdefault(code, []).append(
            {"kind": "missing_7th_character", "label": "missing_7th_character",
             "text": f"{code} needs a 7th character (encounter/sequela): pick a billable code under {code}"})
    for kind, key, verb in (("code_first", "code_first_missing", "code first"),
                            ("use_additional_code", "use_additional_code_missing", "use additional code")):
        for code in getattr(flags, key):
            wanted = [alt for req in checker.requirements(code, kind) if req.missing(code, list(codes))
                      for alt in req.alternatives]
            names = " or ".join(_ref_text(refs) for refs, _ in wanted) or "the code its note names"
            out.setdefault(code, []).append(
                {"kind": key, "label": key, "text": f"{verb}: {names} is missing (Tabular List note of {code})"})
    return out


def explain(note: str, row: Mapping[str, Any], tab: TabularList,
            links: Mapping[str, tuple[str, float | None]] | None = None,
            gold: Sequence[str] | None = None) -> dict[str, Any]:
    """The review record of one coded note (see the module docstring). ``row``: ``codes``,
    ``evidence`` and optionally ``code_scores`` (code -> log-probability); ``links``: phrase
    -> (code, log-probability) from the span prompt, or None (evidence not tied to codes)."""
    phrases = list(dict.fromkeys(" ".join(p.split()) for p in row.get("evidence") or [] if p.strip()))
    counts = {p: sum(1 for q in row.get("evidence") or [] if " ".join(q.split()) == p) for p in phrases}
    ranges = locate(note, phrases)
    codes = list(row.get("codes") or [])
    links = links or {}
    evidence = []
    for phrase, where in zip(phrases, ranges, strict=True):
        code, lp = links.get(phrase, (None, None))
        evidence.append({"text": phrase, "start": where[0] if where else None, "end": where[1] if where else None,
                         "found": where is not None, "note_text": note[where[0]:where[1]] if where else None,
                         "times": counts[phrase], "code": code, "code_in_answer": code in codes if code else None,
                         "link_logprob": lp})
    flags = flag_texts(GuidelineChecker(tab), codes)
    scores = row.get("code_scores") or {}
    gold_set = set(gold) if gold is not None else None
    out_codes = []
    for code in codes:
        lp = scores.get(code)
        out_codes.append({
            "code": code, "description": tab.description(code) if code in tab else None,
            "billable": bool(tab.is_billable(code)), "logprob": lp,
            "probability": None if lp is None else math.exp(lp),
            "evidence": [i for i, e in enumerate(evidence) if e["code"] == code],
            "flags": flags.get(code, []),
            "gold": None if gold_set is None else code in gold_set,
        })
    record: dict[str, Any] = {"note": note, "codes": out_codes, "evidence": evidence,
                              "linked": bool(links)}
    if gold_set is not None:
        record["gold"] = [{"code": c, "description": tab.description(c) if c in tab else None,
                           "predicted": c in codes} for c in gold]
        record["missed"] = [c for c in gold if c not in codes]
        record["extra"] = [c for c in codes if c not in gold_set]
    return record


def model_reach(run_dir: Path) -> dict[str, Any]:
    """What the run's model was trained on and the codes it can know, from the run folder:
    ``data_manifest.json`` (documents per split, span tiers) and the codes of ``data/train.jsonl``
    and the span pair files (``data/spans_*.jsonl``). Missing files give None fields."""
    run_dir = Path(run_dir)
    reach: dict[str, Any] = {"source": None, "train_documents": None, "span_pairs": {}, "codes": None}
    manifest = run_dir / "data_manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        train = (m.get("documents") or {}).get("train") or {}
        reach["train_documents"] = train.get("count")
        reach["span_pairs"] = {tier: t.get("pairs") for tier, t in (m.get("span_tiers") or {}).items()
                               if isinstance(t, dict)}
    config = run_dir / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        docs = OmegaConf.load(config).get("docs") or {}
        reach["source"] = docs.get("source") or docs.get("name")
    codes: set[str] = set()
    seen_any = False
    for path in [run_dir / "data" / "train.jsonl", *sorted((run_dir / "data").glob("spans_*.jsonl"))]:
        if not path.is_file():
            continue
        seen_any = True
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                codes.update(rec.get("codes") or ([rec["code"]] if rec.get("code") else []))
    reach["codes"] = sorted(codes) if seen_any else None
    return reach


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(["a", "an", "and", "the", "of", "with", "without", "in", "on", "to", "for", "or", "by", "as", "at",
                   "from", "not", "due", "other", "unspecified"])


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def lexical_links(phrases: Sequence[str], codes: Sequence[str], tab: TabularList) -> dict[str, tuple[str, None]]:
    """``phrase -> (code, None)``: each phrase tied to the code of ``codes`` whose Tabular List
    description shares the most words with it (stop words and words under 3 letters aside;
    ties: the earlier code); phrases sharing none are left out. Used where no model is at hand
    (a run's predictions reviewed without its weights); the page says the links are lexical."""
    described = [(c, _words(tab.description(c))) for c in codes if c in tab]
    out: dict[str, tuple[str, None]] = {}
    for phrase in phrases:
        words = _words(phrase)
        best = max(described, key=lambda cw: len(words & cw[1]), default=None)
        if best is not None and words & best[1]:
            out[" ".join(phrase.split())] = (best[0], None)
    return out
