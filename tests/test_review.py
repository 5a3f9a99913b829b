"""Issue 26: a run folder that moves, ccl.cli.predict that states its model and ties evidence to
codes (offsets, --json), the review page (checked in a real headless browser when one is
installed) and human-evidence mode from a coder's spans. One tiny trained run is shared."""

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ccl.config import register_configs
from ccl.eval.guidelines import GuidelineChecker
from ccl.review.explain import explain, flag_texts
from ccl.review.page import render
from ccl.run import run
from tests.test_run import CONF, FAST, quiet

NOTE = ("Assessment: essential hypertension, stable. Type 2 diabetes mellitus without complications.\n"
        "Denies chest pain. Plan: continue lisinopril.")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A trained tiny run with its backbone cache beside it: ``site/run``, ``site/cache``."""
    root = tmp_path_factory.mktemp("site")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, f"paths.cache_dir={root / 'cache'}",
                                           "+experiment=ablation_row4", "stage=data+train"])
    run(cfg, root / "run", quiet())
    (root / "note.txt").write_text(NOTE)
    return root


def predict_json(capsys, *args):
    from ccl.cli.predict import main

    assert main([*map(str, args), "--max-new-tokens", "16", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_moved_run_folder_with_its_cache_predicts_the_same_codes(site, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CCL_CACHE", raising=False)
    before = predict_json(capsys, site / "run", site / "note.txt")
    meta = json.loads((site / "run" / "model" / "ccl_model.json").read_text())
    assert meta["base"]["cache_relative"].startswith("backbones/tiny-") and meta["base"]["fingerprint"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(site, moved, symlinks=True)
    shutil.move(str(site / "cache"), str(tmp_path / "gone"))  # the recorded absolute path is gone
    try:
        after = predict_json(capsys, moved / "run", moved / "note.txt")
        assert [c["code"] for c in after["codes"]] == [c["code"] for c in before["codes"]]
        assert after["evidence"] == before["evidence"]
        assert after["model"]["base_model"].startswith(str(moved / "cache"))
        # The run alone, its cache elsewhere: named in one line with what to do ...
        alone = tmp_path / "alone"
        shutil.copytree(moved / "run", alone / "run")
        from ccl.cli.predict import main

        with pytest.raises(SystemExit):
            main([str(alone / "run"), str(site / "note.txt")])
        err = capsys.readouterr().err.strip()
        assert "the base model backbones/tiny-" in err and "--cache-dir" in err and len(err.splitlines()) == 1
        # ... and found through --cache-dir, or after --pack without any cache.
        given = predict_json(capsys, alone / "run", site / "note.txt", "--cache-dir", moved / "cache")
        assert [c["code"] for c in given["codes"]] == [c["code"] for c in before["codes"]]
        assert main([str(alone / "run"), "--pack", "--cache-dir", str(moved / "cache")]) == 0
        capsys.readouterr()
        shutil.rmtree(moved / "cache")
        packed = predict_json(capsys, alone / "run", site / "note.txt")
        assert [c["code"] for c in packed["codes"]] == [c["code"] for c in before["codes"]]
    finally:
        shutil.move(str(tmp_path / "gone"), str(site / "cache"))


def test_predict_states_its_model_ties_evidence_to_codes_and_writes_json(site, tmp_path, capsys):
    page = tmp_path / "note.html"
    out = predict_json(capsys, site / "run", site / "note.txt", "--html", page)
    assert "Type 2 diabetes mellitus without complications." in page.read_text()
    model = out["model"]
    assert model["backbone"] == "tiny" and model["trained_on"]["train_documents"] == 16
    assert model["code_vocabulary"] == len(model["trained_on"]["codes"]) > 0
    for e in out["evidence"]:  # offsets are the note's, or the phrase is marked not found
        if e["found"]:
            assert NOTE[e["start"]:e["end"]] == e["note_text"]
        else:
            assert e["start"] is None
    for c in out["codes"]:
        assert {"code", "description", "probability", "evidence", "flags"} <= set(c)
    from ccl.cli.predict import main

    assert main([str(site / "run"), str(site / "note.txt"), "--max-new-tokens", "16"]) == 0
    text = capsys.readouterr().out
    assert "reach: trained on 16 demo training documents" in text and "it knows" in text


def test_explain_marks_missing_evidence_and_names_the_missing_code(tab):
    row = {"codes": ["E11.9", "I10"], "evidence": ["essential hypertension", "essential hypertension",
                                                  "heart on fire"],
           "code_scores": {"I10": -0.1}}
    rec = explain(NOTE, row, tab, {"essential hypertension": ("I10", -0.2), "heart on fire": ("R07.9", None)},
                  gold=["I10", "J45.909"])
    hyper, fire = rec["evidence"]
    assert hyper["times"] == 2 and NOTE[hyper["start"]:hyper["end"]] == "essential hypertension"
    assert fire["found"] is False and fire["code_in_answer"] is False
    by_code = {c["code"]: c for c in rec["codes"]}
    assert by_code["I10"]["evidence"] == [0] and by_code["E11.9"]["evidence"] == []
    assert rec["missed"] == ["J45.909"] and rec["extra"] == ["E11.9"]
    checker = GuidelineChecker(tab)
    needing = next((c for c in ("E08.9", "E09.9", "N18.30", "D63.1", "E87.70") if c in tab
                    and checker.requirements(c, "code_first") + checker.requirements(c, "use_additional_code")), None)
    if needing is None:
        pytest.skip("no code with a code-first/use-additional note in this Tabular List")
    texts = [f["text"] for f in flag_texts(checker, [needing])[needing]]
    assert texts and all("is missing" in t and len(t) > 40 for t in texts)  # names the code, no cut


def test_review_page_highlights_sit_on_their_offsets_static(tab):
    rec = explain(NOTE, {"codes": ["I10"], "evidence": ["Essential hypertension", "chest pain", "nowhere"]},
                  tab, {"Essential hypertension": ("I10", None)}, gold=["I10", "E11.9"])
    page = render([dict(rec, id="note <1>")])
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "note &lt;1&gt;" in page and "missed" in page and "not found in the note" in page


def test_human_evidence_mode_codes_from_a_coders_spans(site, tmp_path, capsys, monkeypatch):
    import ccl.stages.predict as stages_predict

    seen = {}
    original = stages_predict.build_prompts

    def spy(tokenizer, docs, task, chat, human, limits):  # the prompt carries the coder's phrases
        seen["human"], seen["spans"] = human, [s.text for s in docs[0].spans]
        return original(tokenizer, docs, task, chat, human, limits)

    monkeypatch.setattr(stages_predict, "build_prompts", spy)
    spans = tmp_path / "spans.txt"
    spans.write_text("# corrected by a coder\nessential hypertension\n\nType 2 diabetes mellitus\n")
    out = predict_json(capsys, site / "run", site / "note.txt", "--evidence", spans)
    assert seen == {"human": True, "spans": ["essential hypertension", "Type 2 diabetes mellitus"]}
    assert out["mode"] == "human_evidence"
    assert [e["text"] for e in out["evidence"]] == ["essential hypertension", "Type 2 diabetes mellitus"]
    assert all(NOTE[e["start"]:e["end"]] == e["text"] for e in out["evidence"])
    from ccl.cli.predict import read_evidence_file

    as_json = tmp_path / "spans.json"  # offsets into the note, e.g. edited from --json output
    as_json.write_text(json.dumps({"evidence": [{"start": 12, "end": 34}, {"text": "chest pain"}]}))
    assert read_evidence_file(as_json, NOTE) == ["essential hypertension", "chest pain"]
    from ccl.cli.predict import main

    as_json.write_text(json.dumps([{"start": 5, "end": 9999}]))
    with pytest.raises(SystemExit):
        main([str(site / "run"), str(site / "note.txt"), "--evidence", str(as_json)])
    assert "lies outside the note" in capsys.readouterr().err


DEMO_RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "table3_cpu" / "ablation_row4_s0"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def test_review_page_renders_in_a_headless_browser_with_highlights_on_their_text(tmp_path, capsys):
    """The review page of a run's predictions (the committed demo run, lexical links: no weights),
    opened in Chromium: it renders, and every <mark> holds the note's text at its offsets."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from ccl.cli.review import main

    assert main([str(DEMO_RUN), "--out", str(tmp_path), "--limit", "4", "--link", "lexical"]) == 0
    capsys.readouterr()
    records = json.loads((tmp_path / "review.json").read_text())
    assert len(records) == 4 and all(r["link"] == "lexical" for r in records)
    notes = {}
    for line in (DEMO_RUN / "data" / "test.jsonl").read_text().splitlines():
        doc = json.loads(line)
        notes[doc["id"]] = doc["text"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
        page.goto((tmp_path / "review.html").as_uri())
        sections = page.eval_on_selector_all("section.note", "ss => ss.map(s => s.querySelector('h2').textContent)")
        marks = page.eval_on_selector_all(
            "mark", "ms => ms.map(m => [m.closest('section').querySelector('h2').textContent, "
                    "+m.dataset.start, +m.dataset.end, m.textContent, m.getBoundingClientRect().width])")
        row = page.locator("tr.code").first
        code = row.get_attribute("data-code")
        row.click()  # the code's marks are lit, the others dimmed
        lit = page.eval_on_selector_all("section.note:first-of-type mark", "ms => ms.map(m => "
                                        "[m.dataset.code, m.classList.contains('on'), m.classList.contains('dim')])")
        browser.close()
    assert len(sections) == 4 and not requests
    assert len(marks) >= 4
    for doc_id, start, end, text, width in marks:
        assert text == notes[doc_id][start:end] and width > 0
    assert lit and all(on == (c == code) and dim == (c != code) for c, on, dim in lit)


def test_cut_warning_names_the_answer_bound_in_use(site, tmp_path, capsys):
    """infer.max_new_tokens null: the bound is the run's derived one, and the warning says it
    (it said "with room for None answer tokens")."""
    from omegaconf import OmegaConf

    from ccl.cli.predict import main
    from ccl.stages.predict import answer_bound

    run_copy = tmp_path / "run"
    shutil.copytree(site / "run", run_copy, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = OmegaConf.load(run_copy / "config.yaml")
    cfg.infer.max_new_tokens = None
    OmegaConf.save(cfg, run_copy / "config.yaml")
    long_note = tmp_path / "long.txt"
    long_note.write_text(" ".join([NOTE] * 60))
    assert main([str(run_copy), str(long_note), "--json", "--no-link"]) == 0
    out = json.loads(capsys.readouterr().out)
    bound = answer_bound(cfg, run_copy)
    assert out["warnings"] and f"with room for {bound} answer tokens" in out["warnings"][0]
    assert "None" not in out["warnings"][0]


def test_progress_counts_what_the_prompts_are(capsys):
    """Span re-coding counts evidence phrases, windows count windows (not "6/6 documents")."""
    import io

    from ccl.generation.progress import doc_progress
    from ccl.generation.record import Generation
    from ccl.predict.span_recode import recode_phrases

    stream = io.StringIO()
    with doc_progress(3, stream=stream, unit="evidence phrases") as advance:
        advance(3)
    assert "3/3 evidence phrases" in stream.getvalue() and "documents" not in stream.getvalue()

    class Engine:
        progress_unit = "documents"

        def complete(self, prompts, max_new_tokens):
            self.seen = self.progress_unit
            return [Generation("I10 - Essential hypertension", [], "stop", None) for _ in prompts]

    class Tok:
        def apply_chat_template(self, *a, **k):
            raise AssertionError

    engine = Engine()
    assert recode_phrases(engine, Tok(), ["high blood pressure"], False) == {"high blood pressure": ("I10", None)}
    assert engine.seen == "evidence phrases" and engine.progress_unit == "documents"


def test_base_reference_resolves_by_fingerprint_not_by_path_alone(tmp_path, monkeypatch):
    """Unit: a model at the recorded place whose files differ is not taken; an old record's
    hub id is kept; a missing absolute base is named in one line with what to do."""
    from ccl.utils.base_model import base_reference, resolve_base

    monkeypatch.delenv("CCL_CACHE", raising=False)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    base = cache / "backbones" / "tiny-abc"
    base.mkdir(parents=True)
    run_dir.mkdir()
    (base / "config.json").write_text('{"hidden_size": 8}')
    (base / "model.safetensors").write_bytes(b"x" * 10)
    meta = {"mode": "lora", "backbone": "tiny", "base_dir": str(base),
            "base": base_reference(str(base), "tiny", cache, run_dir)}
    assert meta["base"]["cache_relative"] == "backbones/tiny-abc"
    assert meta["base"]["run_relative"] == "../cache/backbones/tiny-abc"
    assert resolve_base(meta, run_dir) == str(base)
    other = tmp_path / "other" / "backbones" / "tiny-abc"  # same name, other weights
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"hidden_size": 8}')
    (other / "model.safetensors").write_bytes(b"y" * 11)
    assert resolve_base(meta, run_dir, cache_dir=tmp_path / "other") == str(base)
    shutil.rmtree(cache)
    with pytest.raises(FileNotFoundError, match="backbones/tiny-abc .*--cache-dir") as err:
        resolve_base(meta, run_dir, cache_dir=tmp_path / "other")
    assert "\n" not in str(err.value)
    assert resolve_base({"mode": "lora", "base_dir": "HuggingFaceTB/SmolLM2-135M"}, run_dir) == \
        "HuggingFaceTB/SmolLM2-135M"
