"""Extra test sets per run (``test_sets``), Table 1's experiment configs and their report rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from test_run import compose_cfg, quiet

from ccl.config import register_configs
from ccl.records import read_documents
from ccl.report.collect import collect_runs, read_runs
from ccl.report.tables import ablation_table, efficiency_table, main_table, seen_unseen_table
from ccl.run import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = ROOT.parent / "shared" / "data"
TABLE1 = ["table1_cot", "table1_sft", "table1_ccl"]
# A second demo world (another seed, so other codes) as the extra test set "other".
OTHER = ["+docs@test_sets.other=demo", "test_sets.other.seed=7", "test_sets.other.demo.n_train=16",
         "test_sets.other.n_val=4", "test_sets.other.demo.n_test=5", "test_sets.other.demo.n_codes=12",
         "test_sets.other.demo.corpus_size=30"]
OUTSIDE = "Z99.89"  # a valid code in no demo world's label space


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --- configs -----------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["qwen3_4b", "llama31_8b"])
@pytest.mark.parametrize("experiment", TABLE1)
def test_table1_configs_compose_per_backbone_with_mdace_and_aci_bench(experiment, backbone):
    cfg = _compose(f"+experiment={experiment}", f"backbone={backbone}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # composed only: no source is loaded
    assert cfg.name == experiment and cfg.backbone.name == backbone
    assert {k: v["source"] for k, v in resolved["test_sets"].items()} == {"mdace": "mdace", "aci_bench": "aci_bench"}
    assert cfg.infer.split is None  # scored on the test sets only


def test_table1_methods_differ_as_in_the_paper():
    cot, sft, ccl = (_compose(f"+experiment={name}") for name in TABLE1)
    assert cot.train.mode == "none" and cot.task == "cot"
    assert sft.docs.source == "mimic4" and sft.task == "codes_only" and sft.spans.gold is None
    assert ccl.docs.source == "mdace" and ccl.task == "evidence" and ccl.spans.gold is not None
    # CCL + human evidence is scored from CCL's own model, as an extra evaluation.
    assert ccl.infer.also_human_evidence and not ccl.infer.human_evidence
    assert not (cot.infer.also_human_evidence or sft.infer.also_human_evidence)


def test_test_sets_compose_from_docs_configs_and_presets():
    cfg = _compose("+docs@test_sets.mdace=mdace", "+docs@test_sets.codiesp=codiesp_en")
    assert cfg.test_sets.mdace.source == "mdace" and cfg.test_sets.codiesp.codiesp.language == "en"
    assert dict(_compose().test_sets) == {}  # none by default
    cpu = _compose("+experiment=table1_sft", "test_sets=codiesp", "docs=codiesp_en")
    assert sorted(cpu.test_sets) == ["codiesp", "codiesp_en"] and cpu.docs.codiesp.language == "en"
    # The MDACE notes file is given once, for the test set; the CCL training docs follow it.
    ccl = _compose("+experiment=table1_ccl", "test_sets.mdace.notes_path=/x/NOTEEVENTS.csv.gz")
    assert OmegaConf.to_container(ccl, resolve=True)["docs"]["notes_path"] == "/x/NOTEEVENTS.csv.gz"
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):  # a test set is schema-checked like docs
        _compose("+docs@test_sets.mdace=mdace", "test_sets.mdace.n_trian=3")


def test_table1_has_a_column_per_test_set_and_a_row_for_human_evidence():
    import pandas as pd

    rows = [
        {"method": method, "recipe": recipe, "human_evidence": he, "test_set": test_set, "backbone": backbone,
         "overall_micro_f1": f1, "overall_macro_f1": f1 / 2}
        for method, recipe, he, f1 in (("zero-shot", "zero-shot CoT", False, 0.1),
                                       ("CCL", "doc SFT (evidence) + gold", False, 0.5),
                                       ("CCL", "doc SFT (evidence) + gold", True, 0.7))
        for test_set in ("mdace", "aci_bench") for backbone in ("qwen3_4b", "llama31_8b")
    ]
    frame = main_table(pd.DataFrame(rows)).frame
    assert list(frame["Method"]) == ["zero-shot CoT", "doc SFT (evidence) + gold",
                                     "doc SFT (evidence) + gold + human evidence"]
    assert len(frame.columns) == 1 + 2 * 2 * 2  # test sets x backbones x (micro, macro)
    assert frame["mdace / qwen3_4b micro F1"].tolist() == pytest.approx([10.0, 50.0, 70.0])


# --- runs --------------------------------------------------------------------------------

def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_test_set_is_scored_in_its_label_space_and_adding_it_keeps_the_model(tmp_path):
    folder = tmp_path / "run"
    run(compose_cfg(tmp_path, "+experiment=ablation_row4"), folder, quiet())
    adapter = next((folder / "model").glob("adapter_model.*"))
    stamps = adapter.stat().st_mtime_ns, (folder / "predictions.jsonl").stat().st_mtime_ns
    train_key = json.loads((folder / "stages.json").read_text())["train"]

    # Adding a test set: data and predictions of it, no retraining, own predictions cached.
    metrics = run(compose_cfg(tmp_path, "+experiment=ablation_row4", *OTHER), folder, quiet())
    assert "train" not in metrics["stages_run"] and "predict" in metrics["stages_run"]
    assert (adapter.stat().st_mtime_ns, (folder / "predictions.jsonl").stat().st_mtime_ns) == stamps
    ledger = json.loads((folder / "stages.json").read_text())
    assert ledger["train"] == train_key and "predict@other" in ledger

    test_docs = read_documents(folder / "data" / "test_sets" / "other.jsonl", need_text=False)
    gold = sorted({c for d in test_docs for c in d.codes})
    train_codes = {c for d in read_documents(folder / "data" / "train.jsonl", need_text=False) for c in d.codes}
    manifest = json.loads((folder / "data_manifest.json").read_text())["test_sets"]["other"]
    assert manifest["count"] == len(test_docs) == 5 and manifest["codes"] == len(gold)
    part = json.loads((folder / "test_sets" / "other" / "metrics.json").read_text())
    assert part["label_space"]["size"] == len(gold) == part["codes"]["overall"]["n_labels"]
    assert part["label_space"]["unseen"] == len(set(gold) - train_codes)  # relative to training codes
    assert part["test_set"]["name"] == "other" and part["n_docs"] == 5
    assert metrics["test_sets"]["other"]["codes"] == part["codes"]
    assert len(_rows(folder / "test_sets" / "other" / "predictions.jsonl")) == 5

    # Predictions outside the test set's label space are dropped and counted.
    preds = _rows(folder / "test_sets" / "other" / "predictions.jsonl")
    for i, row in enumerate(preds):
        row["codes"] = [row["gold_codes"][0], OUTSIDE] if i == 0 else []
    (folder / "test_sets" / "other" / "predictions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in preds))
    scored = run(compose_cfg(tmp_path, "+experiment=ablation_row4", *OTHER, "stage=eval"), folder, quiet())
    overall = scored["test_sets"]["other"]["codes"]["overall"]
    assert (overall["tp"], overall["fp"], overall["dropped_predictions"]) == (1, 0, 1)
    assert OUTSIDE not in gold

    # The report: one row for the run's own test split, one for the test set.
    rows = {r["test_set"]: r for r in read_runs(folder)}
    assert set(rows) == {"demo", "other"}
    assert rows["other"]["overall_tp"] == 1 and rows["other"]["overall_dropped_predictions"] == 1
    assert rows["other"]["predictions"].endswith("test_sets/other/predictions.jsonl")
    assert rows["other"]["test_hash"] == manifest["content_hash"] != rows["demo"]["test_hash"]
    assert len(efficiency_table(collect_runs([folder])).frame) == 1  # training cost: one row per run

    # Removing it: nothing is predicted again, and the run reports its own split only.
    again = run(compose_cfg(tmp_path, "+experiment=ablation_row4"), folder, quiet())
    assert "train" not in again["stages_run"] and "predict" not in again["stages_run"]
    assert "test_sets" not in again and [r["test_set"] for r in read_runs(folder)] == ["demo"]


@pytest.mark.skipif(not (DATA / "codiesp").exists() or not (DATA / "aci-bench").exists(),
                    reason="shared CodiEsp / ACI-Bench files not available")
def test_human_evidence_skips_a_test_set_without_evidence_and_unlabelled_sets_are_predict_only(tmp_path):
    console = Console(record=True, width=200)
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row1", "infer.limit=2", "infer.max_new_tokens=8",
                      "+docs@test_sets.codiesp_en=codiesp_en", f"test_sets.codiesp_en.path={DATA / 'codiesp'}",
                      "+docs@test_sets.aci_bench=aci_bench", f"test_sets.aci_bench.path={DATA / 'aci-bench'}",
                      "infer.human_evidence=true")
    metrics = run(cfg, tmp_path / "run", console)
    out = console.export_text()
    assert "test set codiesp_en: skipped" in out and "test set aci_bench: skipped" in out
    assert "codes" in metrics and "test_sets" not in metrics
    assert not (tmp_path / "run" / "test_sets").exists()
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())["test_sets"]
    assert manifest["codiesp_en"]["count"] == 250 and manifest["aci_bench"]["count"] == 120

    # Without human evidence: CodiEsp English is scored, ACI-Bench (no labels) predict-only.
    console = Console(record=True, width=200)
    metrics = run(compose_cfg(tmp_path, *cfg_overrides(cfg), "overwrite=true"), tmp_path / "run", console)
    assert "test set aci_bench has no gold codes (predict-only)" in console.export_text()
    assert list(metrics["test_sets"]) == ["codiesp_en"]
    assert len(_rows(tmp_path / "run" / "test_sets" / "aci_bench" / "predictions.jsonl")) == 2
    assert not (tmp_path / "run" / "test_sets" / "aci_bench" / "metrics.json").exists()
    assert "evidence" not in metrics["test_sets"]["codiesp_en"]  # no gold evidence to score
    assert sorted(r["test_set"] for r in read_runs(tmp_path / "run")) == ["codiesp_en", "demo"]


def cfg_overrides(cfg) -> list[str]:
    """The overrides of the human-evidence run above, with human evidence off."""
    return ["+experiment=ablation_row1", "infer.limit=2", "infer.max_new_tokens=8",
            "+docs@test_sets.codiesp_en=codiesp_en", f"test_sets.codiesp_en.path={cfg.test_sets.codiesp_en.path}",
            "+docs@test_sets.aci_bench=aci_bench", f"test_sets.aci_bench.path={cfg.test_sets.aci_bench.path}"]


@pytest.mark.skipif(not (DATA / "mdace").exists(), reason="shared MDACE annotations not available")
def test_a_test_set_that_cannot_load_stops_the_run_before_training(tmp_path):
    from ccl.data.sources.common import MissingDataError

    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "+docs@test_sets.mdace=mdace",
                      f"test_sets.mdace.path={DATA / 'mdace'}")
    with pytest.raises(MissingDataError, match=r"test_sets\.mdace.*test_sets\.mdace\.notes_path is not set"):
        run(cfg, tmp_path / "run", quiet())
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "stages.json").exists()


def test_table1_configs_smoke_run_on_the_demo_world(tmp_path):
    """The three methods on tiny, with the demo world standing in for the training docs and MDACE;
    CCL's run also scores CCL + human evidence."""
    demo = ["docs=demo", "docs@test_sets.mdace=demo", "~docs@test_sets.aci_bench",
            *(f"test_sets.mdace.{k}={v}" for k, v in
              (("demo.n_train", 16), ("n_val", 4), ("demo.n_test", 6), ("demo.n_codes", 12), ("demo.corpus_size", 30))),
            "infer.limit=3"]
    results = {}
    for name, folder in (("table1_cot", "cot"), ("table1_sft", "sft"), ("table1_ccl", "ccl")):
        metrics = run(compose_cfg(tmp_path, f"+experiment={name}", *demo), tmp_path / folder, quiet())
        assert "codes" not in metrics and metrics["test_sets"]["mdace"]["n_docs"] == 3  # test sets only
        assert not (tmp_path / folder / "predictions.jsonl").exists()
        assert not (tmp_path / folder / "human_evidence").exists()
        results[name] = metrics
    human = results["table1_ccl"]["human_evidence"]
    assert list(human) == ["test_sets"] and human["test_sets"]["mdace"]["n_docs"] == 3
    he_preds = _rows(tmp_path / "ccl" / "test_sets" / "mdace" / "human_evidence" / "predictions.jsonl")
    test_docs = {d.id: d
                 for d in read_documents(tmp_path / "ccl" / "data" / "test_sets" / "mdace.jsonl", need_text=False)}
    for row in he_preds:  # the gold evidence is the prompt's
        assert row["evidence"] == [" ".join(s.text.split()) for s in test_docs[row["id"]].spans]

    # Table 1 from these runs: one row per method, CCL + human evidence from CCL's own run.
    table = main_table(collect_runs([tmp_path / "cot", tmp_path / "sft", tmp_path / "ccl"])).frame
    assert list(table["Method"]) == ["zero-shot CoT", "doc SFT (codes only)", "doc SFT (evidence) + gold",
                                     "doc SFT (evidence) + gold + human evidence"]
    assert list(table.columns[1:]) == ["mdace / tiny micro F1", "mdace / tiny macro F1"]


# --- human evidence as an extra evaluation (infer.also_human_evidence) ----------------------

def _spy_prompts(monkeypatch) -> list[tuple[bool, list[str], list[str], list[str]]]:
    """Record each predict call's (human evidence, prompts, answer prefixes, document ids)."""
    import ccl.stages.predict as predict

    calls = []
    original = predict.build_prompts

    def spy(tokenizer, docs, task, use_chat_template, human_evidence, *args):
        plan = original(tokenizer, docs, task, use_chat_template, human_evidence, *args)
        calls.append((human_evidence, plan.prompts, plan.prefixes, [d.id for d in docs]))
        return plan

    monkeypatch.setattr(predict, "build_prompts", spy)
    return calls


def test_also_human_evidence_scores_the_same_model_apart_from_its_predictions(tmp_path, monkeypatch):
    from ccl.data.prompts import CODES_HEADER, EVIDENCE_HEADER
    from ccl.report.unseen import unseen_code_tables

    overrides = ("+experiment=ablation_row4", *OTHER, "infer.max_new_tokens=8")
    switch = "infer.also_human_evidence=true"
    plain, both = tmp_path / "plain", tmp_path / "both"
    calls = _spy_prompts(monkeypatch)
    run(compose_cfg(tmp_path, *overrides), plain, quiet())
    assert [c[0] for c in calls] == [False, False]
    ledger = json.loads((plain / "stages.json").read_text())
    preds = {p: p.stat().st_mtime_ns for p in (plain / "predictions.jsonl", plain / "test_sets" / "other" /
                                                "predictions.jsonl")}

    # A fresh run with the switch: normal predictions first, byte-identical to a run without it.
    calls.clear()
    metrics = run(compose_cfg(tmp_path, *overrides, switch), both, quiet())
    assert [c[0] for c in calls] == [False, False, True, True]
    for part in ("", "test_sets/other/"):
        assert (both / part / "predictions.jsonl").read_bytes() == (plain / part / "predictions.jsonl").read_bytes()
        for folder in (part, part + "human_evidence/"):
            assert (both / folder / "metrics.json").is_file() and (both / folder / "predictions.jsonl").is_file()
    assert json.loads((both / "human_evidence" / "metrics.json").read_text())["codes"] == \
        metrics["human_evidence"]["codes"]
    assert json.loads((both / "test_sets" / "other" / "human_evidence" / "metrics.json").read_text())["codes"] == \
        metrics["human_evidence"]["test_sets"]["other"]["codes"]
    assert metrics["human_evidence"]["evidence"]["exact_f1"] == 1.0  # the gold evidence, copied

    # The human-evidence prompts end in the gold evidence and the codes header: the model
    # generates the codes only.
    # (Both are demo worlds: document ids repeat across the two sets.)
    sets = {part: {d.id: d for d in read_documents(both / "data" / f"{name}.jsonl", need_text=False)}
            for part, name in (("human_evidence", "test"), ("test_sets/other/human_evidence", "test_sets/other"))}
    for (_, prompts, prefixes, ids), docs in zip(calls[2:], sets.values(), strict=True):
        for prompt, prefix, doc_id in zip(prompts, prefixes, ids, strict=True):
            spans = docs[doc_id].spans
            assert spans and prompt.endswith(prefix) and prefix.endswith(CODES_HEADER + "\n")
            assert all(f"- {' '.join(s.text.split())}" in prefix for s in spans)
    for part, docs in sets.items():
        for row in _rows(both / part / "predictions.jsonl"):
            assert row["evidence"] == [" ".join(s.text.split()) for s in docs[row["id"]].spans]
            assert EVIDENCE_HEADER not in row["raw_output"]

    # Switching it on for the finished run: the human-evidence part only, no retraining.
    calls.clear()
    again = run(compose_cfg(tmp_path, *overrides, switch), plain, quiet())
    assert [c[0] for c in calls] == [True, True]
    assert set(again["stages_run"]) == {"data", "predict_human_evidence"}
    assert {p: p.stat().st_mtime_ns for p in preds} == preds
    now = json.loads((plain / "stages.json").read_text())
    assert {k: now[k] for k in ("data", "train", "predict", "predict@other")} == \
        {k: ledger[k] for k in ("data", "train", "predict", "predict@other")}
    assert {"human_evidence", "human_evidence@other"} <= set(now)
    for part in ("human_evidence", "test_sets/other/human_evidence"):
        assert (plain / part / "predictions.jsonl").read_bytes() == (both / part / "predictions.jsonl").read_bytes()
    calls.clear()
    cached = run(compose_cfg(tmp_path, *overrides, switch), plain, quiet())
    assert not calls and set(cached["stages_run"]) == {"data"} and cached["human_evidence"] == again["human_evidence"]

    # The report: a row per scored result, the human-evidence ones flagged, same backbone and test set.
    results = collect_runs([plain])
    assert sorted(zip(results["test_set"], results["human_evidence"], strict=True)) == \
        [("demo", False), ("demo", True), ("other", False), ("other", True)]
    he_rows = results[results["human_evidence"]]
    assert he_rows["predictions"].str.endswith("human_evidence/predictions.jsonl").all()
    assert (he_rows["evidence_exact_f1"] == 1.0).all() and (he_rows["backbone"] == "tiny").all()
    assert list(main_table(results).frame["Method"]) == ["doc SFT (evidence) + gold",
                                                         "doc SFT (evidence) + gold + human evidence"]
    # Recipe analyses keep the model coding on its own: one row per test set, not two.
    ablation = ablation_table(results)
    assert len(ablation.frame) == 2 and "Run" not in ablation.frame
    assert any("2 human-evidence results left out" in n for n in ablation.notes)
    assert len(seen_unseen_table(results).frame) == 2
    assert len(efficiency_table(results).frame) == 1
    # Unseen-code gains: the same as without the human-evidence rows (a fake no-span baseline).
    import pandas as pd

    own = results[~results["human_evidence"]]
    base = own.assign(spans="none", span_gold=False, run="base")
    gains = unseen_code_tables(pd.concat([results, base], ignore_index=True))[1].frame
    pd.testing.assert_frame_equal(gains, unseen_code_tables(pd.concat([own, base], ignore_index=True))[1].frame)

    # Switching it off: nothing predicted again, no human-evidence rows.
    calls.clear()
    off = run(compose_cfg(tmp_path, *overrides), plain, quiet())
    assert not calls and "human_evidence" not in off
    assert not read_runs(plain)[0]["human_evidence"] and len(read_runs(plain)) == 2


def test_also_human_evidence_skips_a_set_without_gold_evidence(tmp_path, monkeypatch):
    """The run's own split with a note without evidence: its human-evidence copy is skipped."""
    import ccl.pipeline as ccl_run

    original = ccl_run.build_data

    def one_note_without_evidence(cfg, run_dir, console):
        bundle = original(cfg, run_dir, console)
        bundle.docs["test"][0].spans = []
        return bundle

    monkeypatch.setattr(ccl_run, "build_data", one_note_without_evidence)
    folder = tmp_path / "run"
    (folder / "human_evidence").mkdir(parents=True)  # stale outputs of an earlier run go
    (folder / "human_evidence" / "metrics.json").write_text("{}")
    console = Console(record=True, width=200)
    metrics = run(compose_cfg(tmp_path, "+experiment=ablation_row1", "infer.max_new_tokens=4", "infer.limit=2",
                              "infer.also_human_evidence=true"), folder, console)
    assert "the test split (human evidence): skipped: infer.also_human_evidence=true needs gold evidence " \
           "on every document; 1 of 2 have none" in console.export_text()
    assert "codes" in metrics and "human_evidence" not in metrics
    assert not (folder / "human_evidence").exists()
    assert [r["human_evidence"] for r in read_runs(folder)] == [False]
