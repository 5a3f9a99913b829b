"""The predict stage: notes -> prompts -> generation -> ``predictions.jsonl``.

A run predicts its own split (``infer.split`` of ``docs``) into the run folder and
each extra test set (``cfg.test_sets``) into ``test_sets/<name>/``; each of these
targets has its own content key, so adding a test set predicts that set only.
``infer.also_human_evidence`` adds a human-evidence copy of each target (gold evidence
in the prompt, codes generated) under ``human_evidence/`` of the target's folder, keyed
apart from the normal one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from ccl.data.prompts import document_prompt, human_evidence_prefix
from ccl.data.records import Document, write_jsonl
from ccl.data.sft import render_prompt
from ccl.inference.constrained import configure_engine, restrict_codes_of
from ccl.inference.parser import parse_output
from ccl.inference.scores import attach_code_scores
from ccl.stages.data import DataBundle
from ccl.utils.hashing import hash_obj, hash_records

PREDICTIONS = "predictions.jsonl"
TEST_SETS_DIR = "test_sets"
HUMAN_EVIDENCE_DIR = "human_evidence"
HUMAN_EVIDENCE_STAGE = "human_evidence"  # ledger entry: human_evidence, human_evidence@NAME


@dataclass
class Target:
    """Documents a run predicts and scores: its own split, or one extra test set."""

    name: str | None  # None: the run's own split (infer.split of docs)
    docs: list[Document]
    out_dir: Path  # predictions.jsonl and metrics.json go here
    stage: str  # its entry in stages.json: "predict", or "predict@NAME" for a test set
    key: str
    skip: str = ""  # why it is not predicted, when it is not
    human_evidence: bool = False  # prompts carry the gold evidence; the model writes the codes
    extra: bool = False  # the infer.also_human_evidence copy of a target (human_evidence/)
    tuning: bool = False  # the validation split, predicted to tune a threshold (eval.tune_threshold)

    @property
    def predictions(self) -> Path:
        return self.out_dir / PREDICTIONS

    @property
    def label(self) -> str:
        if self.tuning:
            return f"the {self.name} split (threshold tuning)"
        label = "the test split" if self.name is None else f"test set {self.name}"
        return label + " (human evidence)" if self.extra else label

    @property
    def label_space(self) -> list[str]:
        """Gold codes of the documents scored: predictions outside them are dropped."""
        return sorted({c for d in self.docs for c in d.codes})


def _no_evidence(docs: Sequence[Document], switch: str) -> str:
    """Why ``docs`` cannot be predicted in human-evidence mode ("" when they can)."""
    missing = sum(not d.spans for d in docs)
    if not missing:
        return ""
    return (f"{switch} needs gold evidence on every document; {missing} of {len(docs)} have none "
            "(no evidence in its labels)")


def prediction_targets(cfg: DictConfig, bundle: DataBundle, run_dir: Path, key: str) -> list[Target]:
    """The run's own split (unless ``infer.split`` is null), then each extra test set, then
    (``infer.also_human_evidence``) a human-evidence copy of each of these.

    ``key`` is the predict key of the run's own split; a test set's key adds its
    documents' content hash, a human-evidence copy's key adds that mode to its target's.
    Human-evidence mode skips a test set without gold evidence on every document (for
    the run's own split it is an error under ``infer.human_evidence``, as before; the
    extra human-evidence copy of any target is skipped).
    """
    limit = int(cfg.infer.limit) if cfg.infer.limit else None
    human = bool(cfg.infer.human_evidence)
    targets = []
    split = cfg.infer.split
    if split is not None:
        docs = bundle.docs.get(str(split))
        if not docs:
            raise ValueError(f"infer.split={split!r}: no documents in that split ({sorted(bundle.docs)})")
        targets.append(Target(None, docs[:limit], Path(run_dir), "predict", key, human_evidence=human))
    for name, all_docs in bundle.test_sets.items():
        docs = all_docs[:limit]
        skip = _no_evidence(docs, "infer.human_evidence=true") if human else ""
        targets.append(Target(name, docs, Path(run_dir) / TEST_SETS_DIR / name, f"predict@{name}",
                              hash_obj({"predict": key, "test_set": hash_records(docs)}), skip,
                              human_evidence=human))
    if cfg.infer.get("also_human_evidence") and not human:
        targets += [human_evidence_target(t) for t in targets]
    return targets


TUNING_DIR = "val"


def tuning_target(cfg: DictConfig, bundle: DataBundle, run_dir: Path, key: str) -> Target | None:
    """The validation split, predicted with the run's settings so that ``eval.tune_threshold``
    can choose a code-score threshold there (``val/`` of the run folder; None when off, when
    the run predicts the val split itself, or when there is no val split)."""
    ev = cfg.get("eval")
    if ev is None or not ev.get("tune_threshold") or cfg.infer.split in (None, TUNING_DIR):
        return None
    docs = bundle.docs.get(TUNING_DIR) or []
    if not any(d.codes for d in docs):
        return None
    limit = int(cfg.infer.limit) if cfg.infer.limit else None
    human = bool(cfg.infer.human_evidence)
    docs = docs[:limit]
    return Target(TUNING_DIR, docs, Path(run_dir) / TUNING_DIR, f"predict@{TUNING_DIR}",
                  hash_obj({"predict": key, "tuning": TUNING_DIR}),
                  _no_evidence(docs, "infer.human_evidence=true") if human else "",
                  human_evidence=human, tuning=True)


def human_evidence_target(target: Target) -> Target:
    """The human-evidence copy of a normal target: ``human_evidence/`` of its folder, its own key."""
    stage = HUMAN_EVIDENCE_STAGE + ("" if target.name is None else f"@{target.name}")
    return Target(target.name, target.docs, target.out_dir / HUMAN_EVIDENCE_DIR, stage,
                  hash_obj({"predict": target.key, "human_evidence": True}),
                  target.skip or _no_evidence(target.docs, "infer.also_human_evidence=true"),
                  human_evidence=True, extra=True)


def clear_outputs(target: Target) -> None:
    """Remove a skipped test set's (or human-evidence copy's) earlier outputs, so that no
    stale metrics get reported."""
    if (target.name is not None or target.extra) and target.out_dir.exists():
        shutil.rmtree(target.out_dir)


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
    cfg: DictConfig, model: Any, tokenizer: Any, docs: Sequence[Document], console: Console | None = None,
    human_evidence: bool | None = None, allowed_codes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Generate and parse outputs for ``docs``; one prediction row per document.

    ``human_evidence`` (default ``infer.human_evidence``): the gold evidence is written
    into the prompt and the model generates the codes. ``allowed_codes``: with
    ``infer.restrict_codes``, the codes decoding may write (:mod:`ccl.inference.constrained`).
    Rows get ``code_scores`` (code -> log-probability, :mod:`ccl.inference.scores`) when the
    engine records them.
    """
    from ccl.inference.engine import make_engine

    human = bool(cfg.infer.human_evidence) if human_evidence is None else bool(human_evidence)
    if human and not all(d.spans for d in docs):
        raise ValueError("human-evidence mode needs gold evidence spans on every test document")
    prompts, prefixes = build_prompts(tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), human)
    engine = make_engine(cfg.infer, model, tokenizer)
    if hasattr(engine, "record_logprobs"):
        engine.record_logprobs = True
    if cfg.infer.get("restrict_codes"):
        configure_engine(engine, tokenizer, allowed_codes, str(cfg.task), human)
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
    attach_code_scores(engine, tokenizer, rows)
    return rows


def predict_stage(
    cfg: DictConfig,
    bundle: DataBundle,
    run_dir: Path,
    console: Console,
    targets: Sequence[Target],
    on_done: Callable[[Target], None] | None = None,
) -> list[Path]:
    """Load the model once and write ``predictions.jsonl`` of each target.

    ``on_done`` is called after each target's file is written (the run marks it finished
    there, so an interrupted run keeps the targets it completed).
    """
    from ccl.stages.train import load_trained

    model, tokenizer = load_trained(cfg, bundle, run_dir)
    allowed = restrict_codes_of(cfg, bundle, run_dir)
    paths = []
    for target in targets:
        if target.name is not None or target.extra:
            console.print(f"[cyan]predict[/]: {target.label}")
        rows = predict_documents(cfg, model, tokenizer, target.docs, console, target.human_evidence, allowed)
        write_jsonl(target.predictions, rows)
        paths.append(target.predictions)
        if on_done is not None:
            on_done(target)
    return paths
