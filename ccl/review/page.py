"""The review page: one self-contained HTML file (inline CSS and JS, no network) that shows,
per note, its text with each evidence phrase highlighted in place (``<mark>`` at the
phrase's character offsets, ``data-start``/``data-end`` in Python string offsets), the codes
with probabilities, guideline flags and the phrases tied to them, evidence not found in the
note, and the gold codes beside them where known (missed and extra codes marked).

Input: records of :func:`ccl.review.explain.explain` (an ``id`` added).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.utils.atomic import write_text_atomic

PALETTE = ("#ffe08a", "#a8e6a1", "#9fd3ff", "#f7b2d9", "#ffc29e", "#c9b8ff", "#b8f0e6", "#e6d3a3")
UNLINKED = "#dddddd"

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:10px 18px;background:#263238;color:#fff}header h1{font-size:17px;margin:0}
header p{margin:4px 0 0;font-size:12px;color:#cfd8dc}
nav{padding:6px 18px;font-size:12px}nav a{margin-right:10px}
section.note{display:flex;gap:16px;padding:12px 18px;border-bottom:1px solid #ddd;background:#fff;margin:8px}
.text{flex:3;white-space:pre-wrap;font:13px/1.5 ui-monospace,monospace;margin:0;max-height:80vh;overflow:auto}
.side{flex:2;min-width:300px}h2{font-size:15px;margin:0 0 6px}
mark{border-radius:3px;padding:0 1px;cursor:pointer}mark.dim{opacity:.25}mark.on{outline:2px solid #d32f2f}
td:first-child{white-space:nowrap}table{border-collapse:collapse;width:100%;font-size:13px}\
td,th{border-bottom:1px solid #eee;padding:3px 4px;
text-align:left;vertical-align:top}tr.code{cursor:pointer}tr.code:hover{background:#f5f5f5}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.flag{color:#b71c1c;font-size:12px}.miss{color:#b71c1c;font-weight:600}.extra{color:#e65100;font-weight:600}
.ok{color:#2e7d32}.nf{color:#b71c1c}.ev{font-size:12px;color:#555}.warn{color:#8d6e00;font-size:12px}
"""

JS = """
document.querySelectorAll('tr.code').forEach(function(row){row.addEventListener('click',function(){
 var sec=row.closest('section'),code=row.dataset.code,on=!row.classList.contains('sel');
 sec.querySelectorAll('tr.code').forEach(function(r){r.classList.remove('sel')});
 sec.querySelectorAll('mark').forEach(function(m){m.classList.toggle('dim',on&&m.dataset.code!==code);
  m.classList.toggle('on',on&&m.dataset.code===code)});if(on){row.classList.add('sel');
  var first=sec.querySelector('mark[data-code="'+code+'"]');if(first)first.scrollIntoView({block:'center'})}});});
document.querySelectorAll('mark').forEach(function(m){m.addEventListener('click',function(){
 var row=m.closest('section').querySelector('tr.code[data-code="'+m.dataset.code+'"]');if(row)row.click()})});
"""


def colour(code: str | None) -> str:
    """The highlight colour of a code (stable across pages); grey for evidence tied to none."""
    if not code:
        return UNLINKED
    return PALETTE[int(hashlib.sha256(code.encode()).hexdigest(), 16) % len(PALETTE)]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def highlighted(note: str, evidence: Sequence[dict[str, Any]]) -> str:
    """The note as HTML with a ``<mark>`` over each found phrase (an overlapping later one is
    left unmarked: it is listed beside the note)."""
    spans = sorted((e["start"], e["end"], i, e) for i, e in enumerate(evidence) if e.get("found"))
    out, at = [], 0
    for start, end, i, e in spans:
        if start < at:
            continue
        out.append(_e(note[at:start]))
        code = e.get("code") or ""
        out.append(f'<mark data-start="{start}" data-end="{end}" data-ev="{i}" data-code="{_e(code)}" '
                   f'style="background:{colour(code)}" title="{_e(code or "not tied to a code")}">'
                   f"{_e(note[start:end])}</mark>")
        at = end
    out.append(_e(note[at:]))
    return "".join(out)


def _code_rows(rec: dict[str, Any]) -> str:
    rows = []
    for c in rec["codes"]:
        p = "" if c["probability"] is None else f"{c['probability']:.2f}"
        gold = "" if c["gold"] is None else ('<span class="ok">gold</span>' if c["gold"]
                                              else '<span class="extra">extra</span>')
        desc = _e(c["description"] or "") if c["billable"] else '<span class="flag">not billable</span>'
        ev = "".join(f'<div class="ev">"{_e(rec["evidence"][i]["text"])}" '
                     f"{_offsets(rec['evidence'][i])}</div>" for i in c["evidence"])
        flags = "".join(f'<div class="flag">&#9873; {_e(f["text"])}</div>' for f in c["flags"])
        rows.append(f'<tr class="code" data-code="{_e(c["code"])}"><td><span class="sw" '
                    f'style="background:{colour(c["code"])}"></span><b>{_e(c["code"])}</b></td>'
                    f"<td>{desc}{ev}{flags}</td><td>{p}</td><td>{gold}</td></tr>")
    return "".join(rows) or '<tr><td colspan="4">no codes</td></tr>'


def _offsets(e: dict[str, Any]) -> str:
    return f"[{e['start']}&ndash;{e['end']}]" if e["found"] else '<span class="nf">not found in the note</span>'


def section(rec: dict[str, Any], anchor: str) -> str:
    """One note's block of the page."""
    codes = {c["code"] for c in rec["codes"]}
    loose = [e for e in rec["evidence"] if not e.get("code") or e["code"] not in codes or not e["found"]]
    loose_html = "".join(
        f'<li>"{_e(e["text"])}" {_offsets(e)}'
        f'{" &rarr; " + _e(e["code"]) + " (not in the answer)" if e.get("code") and e["code"] not in codes else ""}'
        "</li>" for e in loose)
    gold_html = ""
    if rec.get("gold") is not None:
        items = "".join(f'<li>{_e(g["code"])} {_e(g["description"] or "")} '
                        f'{"<span class=ok>found</span>" if g["predicted"] else "<span class=miss>missed</span>"}</li>'
                        for g in rec["gold"])
        gold_html = f"<h2>Gold codes</h2><ul>{items or '<li>none</li>'}</ul>"
    warn = "".join(f'<p class="warn">{_e(w)}</p>' for w in rec.get("warnings", []))
    return (f'<section class="note" id="{_e(anchor)}"><pre class="text">{highlighted(rec["note"], rec["evidence"])}'
            f'</pre><div class="side"><h2>{_e(rec.get("id", "note"))}</h2>{warn}'
            "<table><tr><th>code</th><th>description, evidence, flags</th><th>p</th><th>gold</th></tr>"
            f"{_code_rows(rec)}</table>"
            + (f"<h2>Other evidence</h2><ul>{loose_html}</ul>" if loose else "") + gold_html + "</div></section>")


def render(records: Sequence[dict[str, Any]], title: str = "CCL review", subtitle: str = "") -> str:
    """The whole page as one HTML string (no external resource)."""
    anchors = [f"n{i}" for i in range(len(records))]
    nav = "".join(f'<a href="#{a}">{_e(r.get("id", a))}</a>' for a, r in zip(anchors, records, strict=True))
    body = "".join(section(r, a) for r, a in zip(records, anchors, strict=True))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><header><h1>{_e(title)}</h1>"
            f"<p>{_e(subtitle)}</p></header>" + (f"<nav>{nav}</nav>" if len(records) > 1 else "")
            + body + f"<script>{JS}</script></body></html>")


def write_page(path: Path, records: Sequence[dict[str, Any]], title: str = "CCL review", subtitle: str = "") -> Path:
    """Write the review page of ``records`` to ``path`` (atomically); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render(records, title, subtitle))
    return path
