"""experiments/keep_runs.sh: which files of a finished run are kept, and no CodiEsp note text."""

import json
import os
import subprocess
import sys
from pathlib import Path

from ccl.records import read_documents, read_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "keep_runs.sh"
NOTE = "Paciente de 58 años con migraña e hipertensión arterial."


def fake_run(folder: Path, source: str) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"docs:\n  name: {source}\n  source: {source}\n")
    (folder / "metrics.json").write_text(json.dumps({"codes": {}}))
    (folder / "data_manifest.json").write_text("{}")
    pred = {"id": "d1", "raw_output": f"Evidence:\n- {NOTE}\nCodes:\n- I10", "evidence": [NOTE],
            "codes": ["I10"], "gold_codes": ["I10", "G43.909"], "truncated": False,
            "code_scores": {"I10": -0.25}}
    (folder / "predictions.jsonl").write_text(json.dumps(pred, ensure_ascii=False) + "\n")
    doc = {"id": "d1", "text": NOTE, "codes": ["I10"], "split": "train", "source": source,
           "spans": [{"start": 35, "end": 57, "text": NOTE[35:57], "code": "I10"}]}
    for split in ("train", "test"):
        (folder / "data" / f"{split}.jsonl").write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    (folder / "data" / "spans_gold.jsonl").write_text(
        json.dumps({"evidence": "Essential hypertension", "code": "I10", "tier": "gold", "source": "x"}) + "\n")
    return folder


def keep(dest: Path, *runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), str(dest), *map(str, runs)], capture_output=True, text=True, env=env)


def test_codiesp_runs_are_kept_without_note_text(tmp_path):
    run = fake_run(tmp_path / "runs" / "row4_s0", "codiesp")
    assert keep(tmp_path / "kept", run).returncode == 0
    out = tmp_path / "kept" / "row4_s0"
    for path in out.rglob("*"):
        if path.is_file():
            assert "migraña" not in path.read_text(encoding="utf-8"), path
    preds = read_predictions(out / "predictions.jsonl")
    # code_scores stay (issue 23: the ranking metrics, MAP included, are recomputed from them)
    assert preds == [{"id": "d1", "codes": ["I10"], "gold_codes": ["I10", "G43.909"], "code_scores": {"I10": -0.25},
                      "raw_output": "", "evidence": []}]
    docs = read_documents(out / "data" / "train.jsonl")
    assert [(d.id, d.codes, d.text, d.spans) for d in docs] == [("d1", ["I10"], "", [])]
    assert (out / "data" / "spans_gold.jsonl").read_text() == (run / "data" / "spans_gold.jsonl").read_text()


def test_demo_runs_are_kept_whole_and_credentialed_ones_refused(tmp_path):
    demo = fake_run(tmp_path / "runs" / "demo_s0", "demo")
    assert keep(tmp_path / "kept", demo).returncode == 0
    for name in ("predictions.jsonl", "data/train.jsonl", "data/test.jsonl"):
        assert (tmp_path / "kept" / "demo_s0" / name).read_text() == (demo / name).read_text()
    mdace = fake_run(tmp_path / "runs" / "mdace_s0", "mdace")
    result = keep(tmp_path / "kept", mdace)
    assert result.returncode == 2 and "refused" in result.stderr
    assert not (tmp_path / "kept" / "mdace_s0").exists()


def test_the_experiment_override_is_kept_and_no_other(tmp_path):
    """ccl.report finds Table 3 rows by the experiment (issue 23); the other overrides name
    this machine's folders and stay behind."""
    run = fake_run(tmp_path / "runs" / "my_run", "demo")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(
        "- +experiment=ablation_row4\n- docs.path=/home/me/data/demo\n- name=my_run\n")
    assert keep(tmp_path / "kept", run).returncode == 0
    kept = tmp_path / "kept" / "my_run" / ".hydra" / "overrides.yaml"
    assert kept.read_text() == "- +experiment=ablation_row4\n"
    bare = fake_run(tmp_path / "runs" / "bare", "demo")
    (bare / ".hydra").mkdir()
    (bare / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    assert keep(tmp_path / "kept", bare).returncode == 0
    assert (tmp_path / "kept" / "bare" / ".hydra" / "overrides.yaml").read_text() == "[]\n"
