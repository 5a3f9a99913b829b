"""The predict stage: notes -> prompts -> generation -> ``predictions.jsonl``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from ccl.data.prompts import document_prompt, human_evidence_prefix
from ccl.data.records import Document, write_jsonl
from ccl.data.sft import render_prompt
from ccl.inference.parser import parse_output
from ccl.stages.data import DataBundle

PREDICTIONS = "predictions.jsonl"


def build_prompts(
    tokenizer: Any, docs: Sequence[Document], task: str, use_chat_template: bool, human_evidence: bool
) -> tuple[list[str], list[str]]:
    """Rendered prompts and, in human-evidence mode, the answer prefixes appended to them."""
    prompts, prefixes = [], []
    for d in docs:
        prefix = human_evidence_prefix([s.text for s in d.spans]) if human_evidence else ""
        prompts.append(render_prompt(tokenizer, document_prompt(task, d.text), use_chat_template) + prefix)
        prefixes.append(prefix)
    return prompts, prefixes


def predict_documents(
    cfg: DictConfig, model: Any, tokenizer: Any, docs: Sequence[Document], console: Console | None = None
) -> list[dict[str, Any]]:
    """Generate and parse outputs for ``docs``; one prediction row per document."""
    from ccl.inference.engine import make_engine

    human = bool(cfg.infer.human_evidence)
    if human and not all(d.spans for d in docs):
        raise ValueError("infer.human_evidence=true needs gold evidence spans on every test document")
    prompts, prefixes = build_prompts(tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), human)
    engine = make_engine(cfg.infer, model, tokenizer)
    t0 = time.perf_counter()
    outputs = engine.generate(prompts, int(cfg.infer.max_new_tokens))
    if console:
        cuts = getattr(engine, "guard_cuts", 0)
        note = f"; {cuts} looping sections ended by the repeated-line guard" if cuts else ""
        console.print(f"[cyan]predict[/]: {len(docs)} documents in {time.perf_counter() - t0:.0f} s{note}")
    rows = []
    for d, out, prefix in zip(docs, outputs, prefixes, strict=True):
        parsed = parse_output(out, prefix=prefix)
        rows.append({"id": d.id, "raw_output": out, "evidence": parsed.evidence, "codes": parsed.codes,
                     "gold_codes": d.codes})
    return rows


def predict_stage(cfg: DictConfig, bundle: DataBundle, run_dir: Path, console: Console) -> Path:
    from ccl.stages.train import load_trained

    split = str(cfg.infer.split)
    docs = bundle.docs.get(split)
    if not docs:
        raise ValueError(f"infer.split={split!r}: no documents in that split ({sorted(bundle.docs)})")
    if cfg.infer.limit:
        docs = docs[: int(cfg.infer.limit)]
    model, tokenizer = load_trained(cfg, bundle, run_dir)
    rows = predict_documents(cfg, model, tokenizer, docs, console)
    path = Path(run_dir) / PREDICTIONS
    write_jsonl(path, rows)
    return path
