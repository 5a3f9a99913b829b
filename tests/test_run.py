"""End to end: every experiment composes and fast-runs on `tiny`; reruns resume."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from rich.console import Console

from ccl.config import register_configs
from ccl.run import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
INDEX = ROOT.parent / "shared" / "data" / "icd10cm" / "icd10cm-index-2025-rebuilt.xml"
# Experiments on real corpora need their files: they have their own tests (below, and Table 1's
# in tests/test_test_sets.py, on the demo world).
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")
                     if not p.stem.startswith(("codiesp", "table1_")))

FAST = [
    "backbone=tiny", "logger=none", "icd.download=false",
    "docs.demo.n_train=16", "docs.n_val=4", "docs.demo.n_test=6", "docs.demo.n_codes=12", "docs.demo.corpus_size=30",
    "train.max_steps=3", "train.batch_size=4", "train.save_every_n_steps=2", "mix.span_warmup_steps=1",
    "infer.max_new_tokens=24", "infer.batch_size=6",
]


def compose_cfg(tmp_path: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"paths.cache_dir={tmp_path.parent / 'ccl-cache'}",
                                            *overrides])


def quiet() -> Console:
    return Console(quiet=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_fast_runs_on_tiny(tmp_path, experiment):
    cfg = compose_cfg(tmp_path, f"+experiment={experiment}")
    metrics = run(cfg, tmp_path / "run", quiet())
    folder = tmp_path / "run"
    for name in ("config.yaml", "data_manifest.json", "predictions.jsonl", "metrics.json", "stages.json"):
        assert (folder / name).exists(), name
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"id", "raw_output", "evidence", "codes", "gold_codes"} <= set(rows[0])
    for subset in ("overall", "seen", "unseen"):
        m = metrics["codes"][subset]
        assert 0.0 <= m["micro_f1"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    manifest = json.loads((folder / "data_manifest.json").read_text())
    assert manifest["documents"]["train"]["count"] == 16
    assert manifest["index"]["fallback"] is True  # icd.download=false and no index file
    assert (folder / "model").exists() == (cfg.train.mode != "none")


def test_rerun_skips_finished_stages_and_changes_rerun_them(tmp_path):
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4")
    folder = tmp_path / "run"
    first = run(cfg, folder, quiet())
    adapter = next((folder / "model").glob("adapter_model.*"))
    stamp = adapter.stat().st_mtime_ns
    second = run(cfg, folder, quiet())
    assert adapter.stat().st_mtime_ns == stamp, "cached train stage must not retrain"
    assert "train" not in second["stages_run"] and "predict" not in second["stages_run"]
    assert first["codes"] == second["codes"]
    assert second["timings_s"]["train"] == first["timings_s"]["train"] > 0  # cached stages keep their time
    changed = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer.max_new_tokens=8", "overwrite=true")
    third = run(changed, folder, quiet())
    assert "predict" in third["stages_run"] and "train" not in third["stages_run"]


def test_stage_data_only_writes_manifest_with_index(tmp_path):
    if not INDEX.exists():
        pytest.skip(f"{INDEX} not available")
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data", f"icd.index_xml={INDEX}")
    assert run(cfg, tmp_path / "run", quiet()) == {}
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())
    assert manifest["index"]["fallback"] is False
    gold = manifest["span_tiers"]["gold"]
    assert gold["by_source"].get("index:main", 0) > 0 and gold["codes"] == 12
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_human_evidence_mode_prefixes_gold_evidence(tmp_path):
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer.human_evidence=true")
    run(cfg, tmp_path / "run", quiet())
    test_docs = {json.loads(x)["id"]: json.loads(x)
                 for x in (tmp_path / "run" / "data" / "test.jsonl").read_text().splitlines()}
    for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold_evidence = [" ".join(s["text"].split()) for s in test_docs[row["id"]]["spans"]]
        assert row["evidence"] == gold_evidence


def test_predict_cli_codes_a_note(tmp_path, capsys):
    from ccl.cli.predict import main as predict_main

    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data+train")
    run(cfg, tmp_path / "run", quiet())
    note = tmp_path / "note.txt"
    note.write_text("Assessment: essential hypertension, stable. Denies chest pain.")
    assert predict_main([str(tmp_path / "run"), str(note), "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "Evidence" in out and "ICD-10-CM codes" in out
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path), str(note)])
    assert f"ccl.cli.predict: error: {tmp_path}: not a CCL run folder" in capsys.readouterr().err


def test_interrupted_run_resumes_to_identical_weights_and_metrics(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ccl.model.module import SFTModule

    overrides = ("+experiment=ablation_row4", "train.max_steps=4", "train.save_every_n_steps=2")
    whole = run(compose_cfg(tmp_path, *overrides), tmp_path / "whole", quiet())

    original = SFTModule.training_step

    def crash_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SFTModule, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_cfg(tmp_path, *overrides), tmp_path / "resumed", quiet())
    assert list((tmp_path / "resumed" / "checkpoints").glob("*/last.ckpt")), "no checkpoint to resume from"
    monkeypatch.setattr(SFTModule, "training_step", original)
    resumed = run(compose_cfg(tmp_path, *overrides), tmp_path / "resumed", quiet())

    weights = [load_file(next((tmp_path / r / "model").glob("adapter_model.safetensors")))
               for r in ("whole", "resumed")]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert whole["codes"] == resumed["codes"]


def test_packed_training_runs_end_to_end(tmp_path):
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", "train.packing=true", "train.batch_size=16")
    metrics = run(cfg, tmp_path / "run", quiet())
    meta = json.loads((tmp_path / "run" / "model" / "ccl_model.json").read_text())
    assert meta["steps"] == 3 and metrics["n_docs"] == 6


def test_later_stage_alone_refuses_outputs_of_another_config(tmp_path):
    folder = tmp_path / "run"
    run(compose_cfg(tmp_path, "+experiment=ablation_row4"), folder, quiet())
    changed = compose_cfg(tmp_path, "+experiment=ablation_row4", "train.lr=0.01", "stage=predict+eval",
                          "overwrite=true")
    with pytest.raises(RuntimeError, match="not made by the current config's train stage"):
        run(changed, folder, quiet())
    reparsed = compose_cfg(tmp_path, "+experiment=ablation_row4", "infer.max_new_tokens=9", "stage=eval",
                           "overwrite=true")
    with pytest.raises(RuntimeError, match="not made by the current config's predict stage"):
        run(reparsed, folder, quiet())


def test_data_key_is_stable_across_reruns_and_split_choice(tmp_path):
    first = run(compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data"), tmp_path / "a", quiet())
    assert first == {}
    keys = [json.loads((tmp_path / r / "data_manifest.json").read_text())["key"] for r in ("a",)]
    run(compose_cfg(tmp_path, "+experiment=ablation_row4", "stage=data", "infer.split=val"), tmp_path / "b", quiet())
    keys.append(json.loads((tmp_path / "b" / "data_manifest.json").read_text())["key"])
    assert keys[0] == keys[1]


CODIESP = ROOT.parent / "shared" / "data" / "codiesp"


def test_codiesp_runs_end_to_end_on_real_files(tmp_path):
    if not CODIESP.exists():
        pytest.skip(f"{CODIESP} not available")
    cfg = compose_cfg(tmp_path, "+experiment=codiesp_ccl", f"docs.path={CODIESP}", "infer.limit=4")
    metrics = run(cfg, tmp_path / "run", quiet())
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())
    # 500 training cases minus docs.n_val=4 (FAST) carved out for validation
    assert manifest["documents"]["train"]["count"] == 496 and manifest["documents"]["test"]["count"] == 250
    assert manifest["span_tiers"]["gold"]["pairs"] > 1000
    assert metrics["n_docs"] == 4 and "evidence" in metrics


@pytest.mark.parametrize(("row", "tiers"), [(3, set()), (4, {"gold"})])
def test_codiesp_cpu_rows_run_on_their_code_subset(tmp_path, row, tiers):
    """codiesp_row3/row4 (benchmarks/codiesp_cpu.md): 90 training notes, a 53-code label space
    of 12 frequent seen codes and 41 unseen ones; row 4 adds gold pairs for those codes only."""
    if not CODIESP.exists():
        pytest.skip(f"{CODIESP} not available")
    # docs.n_val=50 as in conf/docs/codiesp.yaml (FAST sets 4): the unseen codes are unseen in that split
    cfg = compose_cfg(tmp_path, f"+experiment=codiesp_row{row}", f"docs.path={CODIESP}", "docs.n_val=50",
                      "infer.limit=4")
    metrics = run(cfg, tmp_path / "run", quiet())
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())
    assert manifest["documents"]["train"]["count"] == 90 and manifest["documents"]["train"]["codes"] == 12
    assert manifest["label_space"] == {"split": "test", "codes": 53, "seen": 12, "unseen": 41}
    assert manifest["documents_stats"]["codiesp"]["subset"]["code_pool"] == 53
    assert set(manifest["span_tiers"]) == tiers
    if tiers:
        assert manifest["span_tiers"]["gold"]["codes"] == 53
    assert metrics["n_docs"] == 4 and "evidence" in metrics


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_3"])
def test_sharded_strategies_are_refused_before_any_work(tmp_path, strategy):
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4", f"train.strategy={strategy}")
    with pytest.raises(ValueError, match=f"train.strategy={strategy}: the model is sharded"):
        run(cfg, tmp_path / "run", quiet())
    assert not (tmp_path / "run" / "data_manifest.json").exists()


def test_ranks_above_zero_only_train(tmp_path, monkeypatch):
    """A DDP rank > 0 joins training but leaves the run folder (ledger, data, predictions,
    scores) to rank 0."""
    import ccl.pipeline as run_mod

    monkeypatch.setattr(run_mod, "is_main_process", lambda: False)
    cfg = compose_cfg(tmp_path, "+experiment=ablation_row4")
    assert run(cfg, tmp_path / "run", quiet()) == {}
    folder = tmp_path / "run"
    assert (folder / "model").exists()  # in a real DDP job the trainer saves on rank 0 only
    for written_by_rank0 in ("stages.json", "config.yaml", "data_manifest.json", "data", "predictions.jsonl",
                             "metrics.json"):
        assert not (folder / written_by_rank0).exists(), written_by_rank0
