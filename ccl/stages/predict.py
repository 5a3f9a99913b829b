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

from ccl.data.prompt_builder import (
    PromptLimits,
    PromptPlan,
    build_document_prompts,
    limits_from_config,
)
from ccl.data.prompts import human_evidence_prefix
from ccl.data.records import Document, write_jsonl
from ccl.inference.parser import merge_outputs, parse_output
from ccl.stages.data import DataBundle
from ccl.utils.hashing import hash_obj, hash_records

PREDICTIONS = "predictions.jsonl"
TEST_SETS_DIR = "test_sets"
HUMAN_EVIDENCE_DIR = "human_evidence"
WINDOW_MARK = "[window {} of {}]"  # raw_output of a note coded in windows (infer.long_notes=window)
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

    @property
    def predictions(self) -> Path:
        return self.out_dir / PREDICTIONS

    @property
    def label(self) -> str:
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
    tokenizer: Any, docs: Sequence[Document], task: str, use_chat_template: bool, human_evidence: bool,
    limits: PromptLimits | None = None,
) -> PromptPlan:
    """The documents' prompts from the shared builder (:mod:`ccl.data.prompt_builder`), with
    the answer prefixes of human-evidence mode; ``limits=None`` sends whole notes."""
    prefixes = [human_evidence_prefix([s.text for s in d.spans]) if human_evidence else "" for d in docs]
    return build_document_prompts(tokenizer, [d.text for d in docs], task, use_chat_template,
                                  limits or PromptLimits(None), prefixes)


def predict_documents(
    cfg: DictConfig, model: Any, tokenizer: Any, docs: Sequence[Document], console: Console | None = None,
    human_evidence: bool | None = None,
) -> list[dict[str, Any]]:
    """Generate and parse outputs for ``docs``; one prediction row per document.

    ``human_evidence`` (default ``infer.human_evidence``): the gold evidence is written
    into the prompt and the model generates the codes.
    """
    from ccl.inference.engine import make_engine

    human = bool(cfg.infer.human_evidence) if human_evidence is None else bool(human_evidence)
    if human and not all(d.spans for d in docs):
        raise ValueError("human-evidence mode needs gold evidence spans on every test document")
    plan = build_prompts(tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), human,
                         limits_from_config(cfg))
    engine = make_engine(cfg.infer, model, tokenizer)
    t0 = time.perf_counter()
    outputs = engine.generate(plan.prompts, int(cfg.infer.max_new_tokens))
    if console:
        cuts = getattr(engine, "guard_cuts", 0)
        note = f"; {cuts} looping sections ended by the repeated-line guard" if cuts else ""
        console.print(f"[cyan]predict[/]: {len(docs)} documents in {time.perf_counter() - t0:.0f} s{note}")
    by_doc: list[list[tuple[str, str]]] = [[] for _ in docs]
    for i, out, prefix in zip(plan.doc_index, outputs, plan.prefixes, strict=True):
        by_doc[i].append((out, prefix))
    rows = []
    for d, parts, cut in zip(docs, by_doc, plan.note_tokens_cut, strict=True):
        parsed = merge_outputs([parse_output(out, prefix=prefix) for out, prefix in parts])
        raw = parts[0][0] if len(parts) == 1 else "\n".join(
            f"{WINDOW_MARK.format(k + 1, len(parts))}\n{out}" for k, (out, _) in enumerate(parts))
        rows.append({"id": d.id, "raw_output": raw, "evidence": parsed.evidence, "codes": parsed.codes,
                     "gold_codes": d.codes, "note_tokens_cut": cut, "windows": len(parts)})
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
    paths = []
    for target in targets:
        if target.name is not None or target.extra:
            console.print(f"[cyan]predict[/]: {target.label}")
        rows = predict_documents(cfg, model, tokenizer, target.docs, console, target.human_evidence)
        write_jsonl(target.predictions, rows)
        paths.append(target.predictions)
        if on_done is not None:
            on_done(target)
    return paths
