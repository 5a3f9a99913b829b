"""Results table, analyses, the multirun callback and W&B logging, on real mini runs.

One Hydra multirun of ablation rows 1-5 on ``backbone=tiny`` (a few steps each,
with the ReportCallback) and one row-4 run on ``tiny_s`` are built once per
session (:func:`mini_runs`, shared with tests/test_notebooks.py). Tests that
need known non-zero numbers copy those run folders and write the numbers in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from rich.console import Console

from ccl.config import register_configs
from ccl.data.sources import load_source
from ccl.icd.tabular import load_tabular
from ccl.report.cli import main as report_main
from ccl.report.collect import RunFolderError, collect_runs, read_run
from ccl.report.unseen import unseen_code_tables
from ccl.report.wandb_log import build_payload, log_run_results

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
ROWS = [f"ablation_row{i}" for i in range(1, 6)]
# The data settings of tests/test_run.py, so that both share the tiny backbones cached under
# <basetemp>/ccl-cache; fewer training steps and new tokens, to keep this file fast.
FAST = [
    "backbone=tiny", "logger=none", "icd.download=false",
    "docs.demo.n_train=16", "docs.n_val=4", "docs.demo.n_test=6", "docs.demo.n_codes=12", "docs.demo.corpus_size=30",
    "train.max_steps=2", "train.batch_size=2", "train.save_every_n_steps=2", "mix.span_warmup_steps=1",
    "infer.max_new_tokens=12", "infer.batch_size=6",
]
_RUNS: dict[str, Path] = {}


def mini_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"sweep": multirun folder of rows 1-5, "scaling": folder holding a tiny_s row-4 run}."""
    if _RUNS:
        return _RUNS
    import ccl.run

    base = tmp_path_factory.mktemp("report-runs")
    cache = tmp_path_factory.getbasetemp() / "ccl-cache"
    argv = ["ccl.run", "-m", f"--config-path={CONF}", "+experiment=" + ",".join(ROWS), *FAST,
            f"paths.cache_dir={cache}", f"hydra.sweep.dir={base / 'sweep'}",
            "++hydra.callbacks.report._target_=ccl.report.callback.ReportCallback",
            "hydra/job_logging=none", "hydra/hydra_logging=none"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        mp.delenv("CCL_SWEEP_GROUP", raising=False)
        mp.setenv("HYDRA_FULL_ERROR", "1")  # a failing job raises its own error, not SystemExit(1)
        ccl.run.main()
        assert "CCL_SWEEP_GROUP" not in os.environ, "the callback must restore the W&B group variable"
        # Hydra keeps its singletons after a multirun; later compose() calls need them clear.
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    cfg = compose_cfg(cache, "+experiment=ablation_row4", "backbone=tiny_s")
    ccl.run.run(cfg, base / "scaling" / "row4_tiny_s", Console(quiet=True))
    _RUNS.update(sweep=base / "sweep", scaling=base / "scaling")
    return _RUNS


def compose_cfg(cache: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"paths.cache_dir={cache}", *overrides])


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    return mini_runs(tmp_path_factory)


def run_dirs(sweep: Path) -> dict[str, Path]:
    """Run folder of each ablation row in the sweep, by experiment name."""
    out = {}
    for d in sweep.iterdir():
        if (d / "metrics.json").is_file():
            out[yaml.safe_load((d / "config.yaml").read_text())["name"]] = d
    return out


def copy_runs(src: Path, dst: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Copy the sweep's run folders (without checkpoints and weights) to ``dst``."""
    dst.mkdir(parents=True)
    shutil.copy(src / "multirun.yaml", dst / "multirun.yaml")
    out = {}
    for name, folder in run_dirs(src).items():
        if names is None or name in names:
            out[name] = Path(shutil.copytree(folder, dst / folder.name,
                                             ignore=shutil.ignore_patterns("checkpoints", "*.safetensors")))
    return out


def md_rows(path: Path) -> list[list[str]]:
    """Data rows of the first Markdown table in a file, as stripped cells."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def md_header(path: Path) -> list[str]:
    line = next(line for line in path.read_text().splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- the callback on a real multirun ------------------------------------------------------------


def test_callback_collects_every_job_into_the_results_table(runs):
    sweep = runs["sweep"]
    report = sweep / "report"
    df = pd.read_parquet(report / "results.parquet")
    assert sorted(df["name"]) == ROWS
    assert len(pd.read_csv(report / "results.csv")) == 5
    assert set(df["sweep"]) == {sweep.name}
    for _, row in df.iterrows():
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        for subset in ("overall", "seen", "unseen"):
            for key in ("micro_f1", "macro_f1", "tp", "fp", "fn", "n_codes"):
                assert row[f"{subset}_{key}"] == metrics["codes"][subset][key], (row["name"], subset, key)
        assert row["evidence_n_gold"] == metrics["evidence"]["n_gold"]
        assert row["label_space_unseen"] == metrics["label_space"]["unseen"]
        assert row["cfg.train.max_steps"] == 2 and row["backbone"] == "tiny"
        model_meta = Path(row["run_dir"]) / "model" / "ccl_model.json"
        if row["name"] == "ablation_row1":
            assert row["method"] == "zero-shot" and pd.isna(row["train_tokens"]) and not model_meta.exists()
        else:
            meta = json.loads(model_meta.read_text())
            assert row["train_tokens"] == meta["plan"]["total"]["tokens"]
            assert row["train_seconds"] == meta["fit_seconds"]
            assert row["dataset_tokens"] == meta["tokenize"]["docs"]["tokens"] + (
                (meta["tokenize"]["spans"] or {}).get("tokens", 0))
    by_name = df.set_index("name")
    assert by_name.loc["ablation_row5", "spans"] == "gold+silver+synthetic"
    assert by_name.loc["ablation_row4", "recipe"] == "doc SFT (evidence) + gold"
    assert by_name.loc["ablation_row2", "recipe"] == "doc SFT (codes only)"
    assert by_name.loc["ablation_row5", "span_pairs_silver"] == len(
        read_jsonl(Path(by_name.loc["ablation_row5", "run_dir"]) / "data" / "spans_silver.jsonl"))


def test_callback_renders_tables_figures_and_skip_notes(runs):
    report = runs["sweep"] / "report"
    for name in ("table3_ablation", "table1_main", "table2_efficiency", "table4_evidence",
                 "fig3_seen_unseen", "fig3_tier_gain"):
        assert (report / "tables" / f"{name}.md").is_file(), name
        assert (report / "tables" / f"{name}.tex").read_text().startswith(r"\begin{table}"), name
    assert (report / "figures" / "fig3_unseen_codes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "figures" / "fig3_unseen_codes.pdf").read_bytes()[:4] == b"%PDF"
    assert (report / "unseen_codes.csv").is_file()
    rows = md_rows(report / "tables" / "table3_ablation.md")
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r[1] for r in rows] == ["zero-shot CoT", "doc SFT (codes only)", "doc SFT (evidence)",
                                    "doc SFT (evidence) + gold", "doc SFT (evidence) + gold + silver + synthetic"]
    efficiency = md_rows(report / "tables" / "table2_efficiency.md")
    assert len(efficiency) == 4  # the zero-shot row trains nothing
    evidence = md_rows(report / "tables" / "table4_evidence.md")
    assert "doc SFT (codes only)" not in {r[0] for r in evidence}  # it writes no evidence
    index = (report / "report.md").read_text()
    assert "Skipped: the scaling law needs runs of at least two backbone sizes" in index
    assert "![fig3_unseen_codes](figures/fig3_unseen_codes.png)" in index


# --- tables show the numbers of metrics.json ------------------------------------------------------


def _fake_rates(row: int) -> dict[str, float]:
    # Distinct per row and metric, away from .x5 so one-decimal rounding is unambiguous.
    keys = ["micro_f1", "macro_f1", "micro_recall", "macro_recall", "micro_precision", "macro_precision"]
    return {k: (10 * row + j) / 100 + 0.0012 for j, k in enumerate(keys)}


def test_tables_print_the_numbers_of_metrics_json(runs, tmp_path):
    copies = copy_runs(runs["sweep"], tmp_path / "sweep")
    for name, folder in copies.items():
        row = int(name[-1])
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["codes"]["overall"].update(_fake_rates(row))
        metrics["evidence"].update(exact_precision=0.5 + row / 100, exact_recall=0.4 + row / 100,
                                   exact_f1=0.3 + row / 100)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "out"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0

    table3 = out / "tables" / "table3_ablation.md"
    assert md_header(table3)[3:] == ["Micro F1", "Macro F1", "Micro R", "Macro R", "Micro P", "Macro P"]
    tex = (out / "tables" / "table3_ablation.tex").read_text()
    for cells in md_rows(table3):
        expected = [f"{100 * v:.1f}" for v in _fake_rates(int(cells[0])).values()]
        assert cells[3:] == expected
        assert " & ".join(expected) + r" \\" in tex
    assert "doc SFT (evidence) + gold + silver + synthetic" in tex

    table1 = out / "tables" / "table1_main.md"
    col = md_header(table1).index("demo / tiny micro F1")
    by_method = {r[0]: r for r in md_rows(table1)}
    assert by_method["doc SFT (evidence) + gold"][col] == "40.1"  # row 4 micro F1 0.4012
    assert by_method["zero-shot CoT"][col + 1] == "11.1"  # row 1 macro F1 0.1112

    table4 = out / "tables" / "table4_evidence.md"
    header = md_header(table4)
    row4 = next(r for r in md_rows(table4) if r[0] == "doc SFT (evidence) + gold")
    assert [row4[header.index(c)] for c in ("Exact P", "Exact R", "Exact F1")] == ["54.0", "44.0", "34.0"]


# --- unseen codes: which tier introduced each code, and the gain per tier -------------------------


def test_unseen_codes_attributed_to_the_tier_that_introduced_them(runs, tmp_path):
    copies = copy_runs(runs["sweep"], tmp_path / "sweep", ["ablation_row3", "ablation_row5"])
    base, full = copies["ablation_row3"], copies["ablation_row5"]
    preds = read_jsonl(full / "predictions.jsonl")
    train_codes = {c for d in read_jsonl(full / "data" / "train.jsonl") for c in d["codes"]}
    label_space = {c for p in preds for c in p["gold_codes"]}
    unseen = sorted(label_space - train_codes)
    tiers = {t: read_jsonl(full / "data" / f"spans_{t}.jsonl") for t in ("gold", "silver", "synthetic")}
    assert len(unseen) >= 3 and set(unseen) <= {p["code"] for p in tiers["gold"]}
    g_code, s_code, y_code = unseen[:3]
    # Move the gold pairs of s_code to the silver tier and those of y_code to the synthetic
    # tier (and drop their own pairs for them): these tiers now introduce one code each.
    moved = {"silver": s_code, "synthetic": y_code}
    for tier, code in moved.items():
        tiers[tier] = [p for p in tiers[tier] if p["code"] not in moved.values()]
        tiers[tier] += [{**p, "tier": tier} for p in tiers["gold"] if p["code"] == code]
    tiers["gold"] = [p for p in tiers["gold"] if p["code"] not in moved.values()]
    for tier, pairs in tiers.items():
        write_jsonl(full / "data" / f"spans_{tier}.jsonl", pairs)

    # Baseline: g_code right everywhere, nothing else. With spans: g_code still right; s_code
    # found in every gold document and once more in a document without it (one false positive).
    write_jsonl(base / "predictions.jsonl",
                [{**p, "codes": [g_code] if g_code in p["gold_codes"] else []} for p in preds])
    extra = next(p["id"] for p in preds if s_code not in p["gold_codes"])
    write_jsonl(full / "predictions.jsonl", [
        {**p, "codes": [c for c in (g_code, s_code) if c in p["gold_codes"] or (c == s_code and p["id"] == extra)]}
        for p in preds
    ])
    support = sum(s_code in p["gold_codes"] for p in preds)
    s_f1 = 2 * support / (2 * support + 1)  # precision support/(support+1), recall 1

    per_code, gain = unseen_code_tables(collect_runs([tmp_path / "sweep"]))
    codes = per_code.set_index("code")
    assert set(codes.index) == label_space
    assert [codes.loc[c, "introduced_by"] for c in (g_code, s_code, y_code)] == ["gold", "silver", "synthetic"]
    assert codes.loc[s_code, "f1"] == pytest.approx(s_f1) and codes.loc[s_code, "f1_before"] == 0
    assert codes.loc[g_code, "f1"] == codes.loc[g_code, "f1_before"] == 1.0
    assert bool(codes.loc[s_code, "newly_correct"]) and not bool(codes.loc[g_code, "newly_correct"])
    assert not codes.loc[sorted(train_codes & label_space), "newly_correct"].any()

    by_tier = gain.frame.set_index("Tier")
    n_gold = len(unseen) - 2
    assert by_tier.loc["gold", "Unseen codes"] == n_gold
    assert by_tier.loc["gold", "F1 before"] == pytest.approx(100 / n_gold)
    assert by_tier.loc["gold", "Gain"] == pytest.approx(0.0)
    assert by_tier.loc["silver", "Unseen codes"] == 1 and by_tier.loc["silver", "Newly correct"] == 1
    assert by_tier.loc["silver", "Gain"] == pytest.approx(100 * s_f1)
    assert by_tier.loc["synthetic", "Unseen codes"] == 1
    assert by_tier.loc["synthetic", "F1 after"] == 0 and by_tier.loc["synthetic", "Gain"] == 0


# --- scaling law ----------------------------------------------------------------------------------


def test_scaling_table_and_plot_over_the_tiny_family(runs, tmp_path):
    out = tmp_path / "out"
    assert report_main([str(runs["sweep"]), str(runs["scaling"]), "--out", str(out)]) == 0
    rows = md_rows(out / "tables" / "table6_scaling.md")
    # "3.4e6" is text to YAML 1.1
    tiny = float(yaml.safe_load((CONF / "backbone" / "tiny.yaml").read_text())["n_params"])
    assert tiny > 920192, "tiny must be larger than tiny_s"
    assert [(r[1], r[2]) for r in rows] == [("tiny_s", "0.92M"), ("tiny", f"{tiny / 1e6:.3g}M")]
    assert {r[3] for r in rows} == {"doc SFT (evidence) + gold"}
    assert (out / "figures" / "scaling_law.png").stat().st_size > 1000
    assert (out / "figures" / "scaling_law.pdf").read_bytes()[:4] == b"%PDF"
    df = pd.read_parquet(out / "results.parquet")
    assert df.loc[df["backbone"] == "tiny_s", "n_params"].item() == 920192


def test_tiny_family_parameter_counts_match_the_configs():
    from transformers import LlamaConfig, LlamaForCausalLM

    from ccl.config import compose_config

    def backbone(name):  # as a run composes it: the schema's defaults under conf/backbone/NAME.yaml
        return compose_config([f"backbone={name}"]).backbone

    counts = []
    for name in ("tiny_s", "tiny_m", "tiny_l"):
        cfg = backbone(name)
        arch = cfg.tiny
        assert (cfg.name, str(cfg.kind), cfg.family) == (name, "tiny", "tiny")
        config = LlamaConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_heads,
            intermediate_size=arch.intermediate_size, max_position_embeddings=cfg.max_length,
            tie_word_embeddings=True,
        )
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        counted = sum(p.numel() for p in model.parameters())
        assert cfg.n_params == counted, name
        counts.append(counted)
    assert counts == sorted(counts) and counts[-1] > 10 * counts[0]
    assert backbone("tiny").tiny == backbone("tiny_m").tiny


# --- launchers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "plugin", "target"), [
    ("local_parallel", "joblib", "JoblibLauncher"), ("slurm", "submitit_slurm", "SlurmLauncher"),
])
def test_launcher_configs_extend_the_plugins(choice, plugin, target):
    import importlib.util

    module = {"joblib": "hydra_plugins.hydra_joblib_launcher",
              "submitit_slurm": "hydra_plugins.hydra_submitit_launcher"}[plugin]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if importlib.util.find_spec("hydra_plugins") and importlib.util.find_spec(module):
            cfg = compose("config", overrides=[f"hydra/launcher={choice}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        else:  # without the `sweep` extra the error names the missing plugin config
            with pytest.raises(MissingConfigException, match=f"hydra/launcher/{plugin}"):
                compose("config", overrides=[f"hydra/launcher={choice}"], return_hydra_config=True)


# --- bad input ------------------------------------------------------------------------------------


def test_bad_run_folders_are_errors_that_name_the_file(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="no CCL run folder"):
        collect_runs([tmp_path / "empty"])
    assert report_main([str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: no such folder" in capsys.readouterr().err

    folder = copy_runs(runs["sweep"], tmp_path / "sweep", ["ablation_row4"])["ablation_row4"]
    (folder / "metrics.json").write_text('{"codes": ')
    with pytest.raises(RunFolderError, match=re.escape(str(folder / "metrics.json")) + ": invalid JSON"):
        read_run(folder)
    (folder / "metrics.json").write_text('{"n_docs": 3}')
    with pytest.raises(RunFolderError, match="no 'codes.overall' section"):
        read_run(folder)


# --- W&B ------------------------------------------------------------------------------------------


def test_wandb_payload_has_per_code_results_and_no_note_text(runs, monkeypatch):
    monkeypatch.delenv("CCL_SWEEP_GROUP", raising=False)
    folder = run_dirs(runs["sweep"])["ablation_row4"]
    metrics = json.loads((folder / "metrics.json").read_text())
    payload = build_payload(folder, {"project": "ccl", "mode": "offline", "log_note_text": False})
    assert payload.group == runs["sweep"].name  # grouped by the multirun folder
    assert payload.name == "ablation_row4-tiny" and payload.mode == "offline"
    assert payload.summary["codes/overall/micro_f1"] == metrics["codes"]["overall"]["micro_f1"]
    columns = payload.per_code_columns
    per_code = [dict(zip(columns, r, strict=True)) for r in payload.per_code_rows]
    assert len(per_code) == metrics["label_space"]["size"]
    assert sum(r["subset"] == "unseen" for r in per_code) == metrics["label_space"]["unseen"]
    for key in ("tp", "fp", "fn"):
        assert sum(r[key] for r in per_code) == metrics["codes"]["overall"][key]
    assert not {"note", "evidence", "raw_output"} & set(payload.sample_columns)
    assert all(set(r) == {"id", "codes", "gold_codes"} for r in payload.predictions_rows)
    refs = read_jsonl(folder / "data" / "test.jsonl")
    assert all("text" not in d for d in refs)  # the run folder holds no copy of the notes
    cfg = OmegaConf.load(folder / "config.yaml")
    source = load_source(cfg.docs, load_tabular(), Path(cfg.paths.cache_dir))
    texts = {d.id: d.text for d in source.docs["test"]}
    notes = [texts[d["id"]] for d in refs]
    flat = json.dumps([payload.sample_rows, payload.predictions_rows, payload.per_code_rows])
    assert not any(note[:40] in flat for note in notes)

    # Opted in, with no copy of the notes in the folder: no note text to send.
    opted_in = build_payload(folder, {"log_note_text": True, "group": "my-sweep"})
    assert opted_in.group == "my-sweep"
    sample = [dict(zip(opted_in.sample_columns, r, strict=True)) for r in opted_in.sample_rows]
    assert not sample[0].get("note") and "raw_output" in opted_in.predictions_rows[0]
    # A run that opted in (logger.log_note_text=true) keeps the copy the sample reads.
    write_jsonl(folder / "data" / "test.jsonl", [{**d, "text": texts[d["id"]]} for d in refs])
    try:
        opted_in = build_payload(folder, {"log_note_text": True})
        sample = [dict(zip(opted_in.sample_columns, r, strict=True)) for r in opted_in.sample_rows]
        assert sample[0]["note"] == notes[0]
    finally:
        write_jsonl(folder / "data" / "test.jsonl", refs)


def test_wandb_offline_run_logs_tables_and_files_without_network(runs, tmp_path, monkeypatch):
    """An offline run keeps everything in the run folder: the tables, and the predictions
    (ids and codes) and adapter as run files, which ``wandb sync`` reads relative to the run."""
    from ccl.utils.loggers import finish_wandb_run, wandb_run

    folder = Path(shutil.copytree(run_dirs(runs["sweep"])["ablation_row4"], tmp_path / "run",
                                  ignore=shutil.ignore_patterns("checkpoints")))
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any network attempt would fail
    monkeypatch.setenv("WANDB_MODE", "online")  # the config's mode wins: it is passed to wandb.init
    monkeypatch.setenv("CCL_SWEEP_GROUP", "sweep-42")
    training = wandb_run(folder, {"project": "ccl-test", "mode": "offline"}, "ablation_row4-tiny")
    payload = log_run_results(folder, {"project": "ccl-test", "mode": "offline"})
    assert os.environ["WANDB_DATA_DIR"] == str(folder.resolve() / "wandb" / "data")
    finish_wandb_run()
    assert os.environ["WANDB_DATA_DIR"] == str(tmp_path / "wandb_data_dir")  # the user's, restored
    assert payload.group == "sweep-42" and training.group == "sweep-42"
    (offline,) = (folder / "wandb").glob("offline-run-*")  # the training run took the results
    assert list(offline.glob("run-*.wandb"))
    tables = {p.name.split("_")[0]: json.loads(p.read_text()) for p in offline.rglob("*.table.json")}
    assert tables["per"]["columns"] == payload.per_code_columns
    assert tables["per"]["data"] == [list(r) for r in payload.per_code_rows]
    assert tables["predictions"]["columns"] == payload.sample_columns
    assert read_jsonl(offline / "files" / "results" / "predictions.jsonl") == payload.predictions_rows
    assert all("raw_output" not in r for r in payload.predictions_rows)
    adapter = offline / "files" / "model"
    assert (adapter / "adapter_config.json").read_bytes() == (folder / "model" / "adapter_config.json").read_bytes()
    assert not list(adapter.glob("tokenizer*")), "a tiny tokenizer is trained on note text: it stays local"
    assert not (tmp_path / "wandb_data_dir").exists()  # staged in the run folder, not the user's
    cfg = OmegaConf.load(folder / "config.yaml")  # the folder refers to its notes: read them at source
    source = load_source(cfg.docs, load_tabular(), Path(cfg.paths.cache_dir))
    notes = [d.text for d in source.docs["test"]]
    for f in (folder / "wandb").rglob("*"):  # privacy: no note's words in anything W&B keeps
        assert not (f.is_file() and any(n[:60].encode() in f.read_bytes() for n in notes)), f


def test_hidden_folders_are_not_incomplete_runs(tmp_path):
    from ccl.report.collect import incomplete_runs

    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("name: x\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("name: y\n")
    assert incomplete_runs(tmp_path / "run") == []
    assert incomplete_runs(tmp_path) == [tmp_path / "other"]


def test_efficiency_table_keeps_a_run_without_epochs(runs):
    """A run of span warm-up steps only has no epoch: its per-epoch cells are empty, not a crash."""
    from ccl.report.tables import efficiency_table

    results = collect_runs([runs["sweep"]])
    trained = results["train_tokens"].notna()
    results.loc[trained.idxmax(), ["tokens_per_epoch", "seconds_per_epoch", "data_epochs"]] = float("nan")
    table = efficiency_table(results).frame
    assert table["Tokens/epoch"].isna().sum() == 1
    assert table["Trained tokens"].notna().all() and len(table) == trained.sum()


# --- seeds: mean ± std per Table 3 row; unseen codes by the tier covering their wording -----------


def test_seed_summary_and_unseen_codes_by_wording_coverage(runs, tmp_path):
    names = ["ablation_row3", "ablation_row4", "ablation_row5"]
    sweep = tmp_path / "sweep"
    src = run_dirs(runs["sweep"])
    seeds = (0, 1, 2)
    micro = {3: (0.30, 0.40, 0.50), 4: (0.50, 0.52, 0.54), 5: (0.51, 0.53, 0.55)}
    unseen_f1 = {3: (0.0, 0.0, 0.0), 4: (0.10, 0.20, 0.30), 5: (0.40, 0.40, 0.40)}
    folders: dict[tuple[str, int], Path] = {}
    for name in names:
        for seed in seeds:
            folder = Path(shutil.copytree(src[name], sweep / f"{name}_s{seed}",
                                          ignore=shutil.ignore_patterns("checkpoints", "*.safetensors")))
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            cfg["seed"] = seed
            (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
            metrics = json.loads((folder / "metrics.json").read_text())
            row = int(name[-1])
            metrics["codes"]["overall"]["micro_f1"] = micro[row][seed]
            metrics["codes"]["unseen"]["micro_f1"] = unseen_f1[row][seed]
            (folder / "metrics.json").write_text(json.dumps(metrics))
            folders[name, seed] = folder

    # An unseen test code whose written form no gold pair spells: the silver tier of row 5
    # gets that form; row 5 codes it in every note, row 4 never.
    any_run = folders["ablation_row5", 0]
    train_codes = {c for d in read_jsonl(any_run / "data" / "train.jsonl") for c in d["codes"]}
    forms: dict[str, set[str]] = {}
    for doc in read_jsonl(any_run / "data" / "test.jsonl"):
        for span in doc["spans"]:
            forms.setdefault(span["code"], set()).add(span["text"].casefold())
    gold_forms = {(p["code"], p["evidence"].casefold()) for p in read_jsonl(any_run / "data" / "spans_gold.jsonl")}
    unseen = sorted(c for c in forms if c not in train_codes)
    code = next(c for c in unseen if not any((c, f) in gold_forms for f in forms[c]))
    form = sorted(forms[code])[0]
    for seed in seeds:
        row5 = folders["ablation_row5", seed]
        silver = [p for p in read_jsonl(row5 / "data" / "spans_silver.jsonl") if p["code"] != code]
        write_jsonl(row5 / "data" / "spans_silver.jsonl",
                    [*silver, {"evidence": f" {form.upper()}.", "code": code, "tier": "silver", "source": "test"}])
        for name, right in (("ablation_row4", False), ("ablation_row5", True)):
            folder = folders[name, seed]
            preds = read_jsonl(folder / "predictions.jsonl")
            write_jsonl(folder / "predictions.jsonl", [
                {**p,
                 "codes": [c for c in p["codes"] if c != code] + ([code] if right and code in p["gold_codes"] else [])}
                for p in preds])
    out = tmp_path / "out"
    assert report_main([str(sweep), "--out", str(out)]) == 0

    header = md_header(out / "tables" / "table3_ablation_seeds.md")
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in md_rows(out / "tables" / "table3_ablation_seeds.md")}
    assert rows["3"]["Seeds"] == "3" and rows["3"]["Micro F1"] == "40.0 ± 10.0"
    assert rows["4"]["Micro F1"] == "52.0 ± 2.0" and rows["4"]["Unseen micro F1"] == "20.0 ± 10.0"
    assert rows["3"]["Δ overall vs row above"] == ""
    # Row 4 - row 3: +12 points, larger than row 3's spread (10): not marked; positive in 3 of 3 seeds.
    assert rows["4"]["Δ overall vs row above"] == "+12.0 (3/3)"
    assert rows["4"]["Δ unseen vs row above"] == "+20.0 (3/3)"  # spread 10 < 20: not marked
    assert rows["5"]["Δ overall vs row above"] == "+1.0 ~ (3/3)"  # spread 2 > 1: marked

    cov_header = md_header(out / "tables" / "fig3c_unseen_coverage.md")
    cov = [dict(zip(cov_header, r, strict=True)) for r in md_rows(out / "tables" / "fig3c_unseen_coverage.md")]
    silver_only = {r["Row"]: r for r in cov if r["Coverage"] == "silver-only"}
    assert set(silver_only) == {"3", "4", "5"} and silver_only["5"]["Per seed"].count(" / ") == 2
    per_code = pd.read_csv(out / "unseen_coverage.csv")
    mine = per_code[per_code["code"] == code]
    assert set(mine["coverage"]) == {"silver-only"} and len(mine) == 9  # 3 rows x 3 seeds
    assert set(mine.loc[mine["ablation_row"] == 5, "f1"]) == {1.0}
    assert set(mine.loc[mine["ablation_row"] == 4, "f1"]) == {0.0}
    # The table's micro F1 is over the class's codes: recomputed from the per-code counts.
    for row in ("4", "5"):
        picked = per_code[(per_code["ablation_row"] == int(row)) & (per_code["coverage"] == "silver-only")]
        per_seed = [2 * g["tp"].sum() / (2 * g["tp"].sum() + g["fp"].sum() + g["fn"].sum()) * 100
                    for _, g in picked.groupby("seed")]
        assert silver_only[row]["Per seed"] == " / ".join(f"{v:.1f}" for v in per_seed)
    assert float(silver_only["5"]["Micro F1"].split()[0]) > float(silver_only["4"]["Micro F1"].split()[0])
    assert set(per_code["coverage"]) <= {"gold", "silver-only", "synthetic-only", "none"}
