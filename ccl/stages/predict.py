"""The predict stage: notes -> prompts -> generation -> ``predictions.jsonl``.

A run predicts its own split (``infer.split`` of ``docs``) into the run folder and
each extra test set (``cfg.test_sets``) into ``test_sets/<name>/``; each of these
targets has its own content key, so adding a test set predicts that set only.
``infer.also_human_evidence`` adds a human-evidence copy of each target (gold evidence
in the prompt, codes generated) under ``human_evidence/`` of the target's folder, keyed
apart from the normal one.

Where the model runs. HF generate runs on the device training used
(:func:`ccl.generation.loading.inference_device`: CUDA when visible and ``train.accelerator`` allows, else the
CPU; flash-attention only with CUDA tensors). ``infer.engine=vllm`` on a CUDA machine
with vLLM loads no HF model at all: it serves the run's saved directories
(:func:`ccl.predict.serving.vllm_serving`), after the memory of any earlier stage in this process is
released (:func:`ccl.generation.loading.release_accelerator_memory`). An adapter vLLM's LoRA loader cannot
read (code-token rows) is merged into a full model saved with its tokenizer under
``model/merged/`` and served without LoRA.

Answer length. ``infer.max_new_tokens`` null bounds answers by a length derived from
the training answers (recorded by the train stage in ``model/ccl_model.json``,
:func:`answer_bound`); each prediction row says whether its answer hit that bound
(``truncated``), and the run counts them (``n_truncated_answers`` in ``metrics.json``).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
from ccl.data.sft import training_answer_lengths
from ccl.generation import engine as engines  # module attribute: tests replace make_engine
from ccl.generation.loading import (
    inference_device,
    load_tokenizer,
    place_model,
    release_accelerator_memory,
    stop_token_ids,
)
from ccl.generation.record import answer_length_stats
from ccl.predict.constrained import allowed_codes, configure_engine
from ccl.predict.parser import merge_outputs, parse_output
from ccl.predict.scores import document_code_scores
from ccl.predict.serving import load_trained, vllm_serving
from ccl.predict.span_recode import add_span_codes, progress_unit, recode_phrases
from ccl.records import Document, write_jsonl
from ccl.stages.data import DataBundle
from ccl.utils.atomic import write_json_atomic
from ccl.utils.hashing import hash_obj, hash_records
from ccl.utils.run_folder import RunFolder, trained_model_meta

WINDOW_MARK = "[window {} of {}]"  # raw_output of a note coded in windows (infer.long_notes=window)
HUMAN_EVIDENCE_STAGE = "human_evidence"  # ledger entry: human_evidence, human_evidence@NAME
FALLBACK_MAX_NEW_TOKENS = 512  # a run without training answers to measure (warned)


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
    def folder(self) -> RunFolder:
        """The target's results folder (``out_dir``) with the run folder's file names."""
        return RunFolder(self.out_dir)

    @property
    def predictions(self) -> Path:
        return self.folder.predictions

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
        targets.append(Target(None, docs[:limit], RunFolder(run_dir).root, "predict", key, human_evidence=human))
    for name, all_docs in bundle.test_sets.items():
        docs = all_docs[:limit]
        skip = _no_evidence(docs, "infer.human_evidence=true") if human else ""
        targets.append(Target(name, docs, RunFolder(run_dir).test_set(name).root, f"predict@{name}",
                              hash_obj({"predict": key, "test_set": hash_records(docs)}), skip,
                              human_evidence=human))
    if cfg.infer.get("also_human_evidence") and not human:
        targets += [human_evidence_target(t) for t in targets]
    return targets


TUNING_DIR = RunFolder.TUNING


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
    return Target(TUNING_DIR, docs, RunFolder(run_dir).tuning().root, f"predict@{TUNING_DIR}",
                  hash_obj({"predict": key, "tuning": TUNING_DIR}),
                  _no_evidence(docs, "infer.human_evidence=true") if human else "",
                  human_evidence=human, tuning=True)


def human_evidence_target(target: Target) -> Target:
    """The human-evidence copy of a normal target: ``human_evidence/`` of its folder, its own key."""
    stage = HUMAN_EVIDENCE_STAGE + ("" if target.name is None else f"@{target.name}")
    return Target(target.name, target.docs, target.folder.human_evidence().root, stage,
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
    human_evidence: bool | None = None, allowed_codes: Sequence[str] | None = None, *,
    max_new_tokens: int | None = None, engine: Any = None,
) -> list[dict[str, Any]]:
    """Generate and parse outputs for ``docs``; one prediction row per document.

    ``human_evidence`` (default ``infer.human_evidence``): the gold evidence is written
    into the prompt and the model generates the codes. ``allowed_codes``: with
    ``infer.restrict_codes``, the codes decoding may write (:mod:`ccl.predict.constrained`).
    ``max_new_tokens`` (default ``infer.max_new_tokens``, else
    :data:`FALLBACK_MAX_NEW_TOKENS`) bounds each answer; a row's ``truncated`` says the
    bound ended it. ``engine``: a built engine (default: HF generate over ``model``, or
    what ``infer.engine`` names); this call switches on its log-probability recording and
    (``infer.restrict_codes``) its restricted decoding. Rows get ``code_scores`` (code ->
    log-probability, :mod:`ccl.predict.scores`; a note coded in windows: the best score
    of each code over its windows) when the engine records them.

    Steps: the engine's settings (:func:`_set_up_engine`: scores, restriction), each note's
    prompts (:func:`build_prompts`: one, or one per window), generation, and one row per
    document from its windows' outputs (:func:`_document_row`: restriction filter, scores),
    then span re-coding (:func:`_recode_spans`, under ``infer.span_recode``).
    """
    human = bool(cfg.infer.human_evidence) if human_evidence is None else bool(human_evidence)
    if human and not all(d.spans for d in docs):
        raise ValueError("human-evidence mode needs gold evidence spans on every test document")
    engine = _set_up_engine(cfg, model, tokenizer, engine, allowed_codes, human)
    bound = int(max_new_tokens or cfg.infer.max_new_tokens or FALLBACK_MAX_NEW_TOKENS)
    plan = build_prompts(tokenizer, docs, str(cfg.task), bool(cfg.backbone.use_chat_template), human,
                         limits_from_config(cfg, answer_tokens=bound))
    t0 = time.perf_counter()
    with progress_unit(engine, "windows" if len(plan.prompts) != len(docs) else "documents"):
        outputs = engine.complete(plan.prompts, bound)
    if console:
        _report_generation(console, engine, outputs, len(docs), bound, time.perf_counter() - t0)
    windows: list[list[tuple[Any, str]]] = [[] for _ in docs]  # (output, answer prefix) per window
    for i, out, prefix in zip(plan.doc_index, outputs, plan.prefixes, strict=True):
        windows[i].append((out, prefix))
    # Restricted decoding constrains the codes section only: a code-shaped word parsed from
    # elsewhere (an answer cut before "Codes:" is read whole, e.g. "T2DM" -> T2D.M) was not
    # decoded as a code, so it is dropped too.
    allowed = set(allowed_codes) if cfg.infer.get("restrict_codes") and allowed_codes else None
    rows = [_document_row(tokenizer, d, parts, cut, allowed)
            for d, parts, cut in zip(docs, windows, plan.note_tokens_cut, strict=True)]
    if cfg.infer.get("span_recode") and not human:
        _recode_spans(engine, tokenizer, rows, bool(cfg.backbone.use_chat_template), allowed, console)
    return rows


def _set_up_engine(cfg: DictConfig, model: Any, tokenizer: Any, engine: Any,
                   allowed_codes: Sequence[str] | None, human: bool) -> Any:
    """The engine to generate with (built from ``infer`` when None), recording code scores,
    and restricted to ``allowed_codes`` at code positions under ``infer.restrict_codes``."""
    if engine is None:
        engine = engines.make_engine(cfg.infer, model, tokenizer)
    if hasattr(engine, "record_logprobs"):
        engine.record_logprobs = True
    if cfg.infer.get("restrict_codes"):
        configure_engine(engine, tokenizer, allowed_codes, str(cfg.task), human)
    return engine


def _report_generation(console: Console, engine: Any, outputs: Sequence[Any], n_docs: int, bound: int,
                       seconds: float) -> None:
    cuts = getattr(engine, "guard_cuts", 0)
    note = f"; {cuts} looping sections ended by the repeated-line guard" if cuts else ""
    cut = sum(g.truncated for g in outputs)
    note += f"; {cut} answers cut at the bound of {bound} tokens" if cut else ""
    console.print(f"[cyan]predict[/]: {n_docs} documents in {seconds:.0f} s{note}")


def _document_row(tokenizer: Any, doc: Document, parts: Sequence[tuple[Any, str]], cut: int,
                  allowed: set[str] | None) -> dict[str, Any]:
    """One prediction row from the outputs of a note's windows (one window: the whole note):
    evidence and codes merged over the windows (only codes in ``allowed`` when it is given),
    the raw outputs marked by window, and the code scores (the best of each code over its
    windows) when the engine recorded them."""
    parsed_parts = [parse_output(out.text, prefix=prefix) for out, prefix in parts]
    if allowed is not None:
        parsed_parts = [replace(p, codes=[c for c in p.codes if c in allowed]) for p in parsed_parts]
    parsed = merge_outputs(parsed_parts)
    raw = parts[0][0].text if len(parts) == 1 else "\n".join(
        f"{WINDOW_MARK.format(k + 1, len(parts))}\n{out.text}" for k, (out, _) in enumerate(parts))
    row = {"id": doc.id, "raw_output": raw, "evidence": parsed.evidence, "codes": parsed.codes,
           "gold_codes": doc.codes, "truncated": any(out.truncated for out, _ in parts),
           "note_tokens_cut": cut, "windows": len(parts)}
    scores = document_code_scores(tokenizer, [out for out, _ in parts], [p.codes for p in parsed_parts],
                                  parsed.codes)
    if scores is not None:
        row["code_scores"] = scores
    return row


def _recode_spans(engine: Any, tokenizer: Any, rows: list[dict[str, Any]], chat: bool,
                  allowed: set[str] | None, console: Console | None) -> None:
    """``infer.span_recode``: code each row's evidence phrases again with the span prompt and
    add the codes found (:mod:`ccl.predict.span_recode`), in place."""
    coded = recode_phrases(engine, tokenizer, [p for r in rows for p in r["evidence"]], chat, allowed)
    added = add_span_codes(rows, coded)
    if console:
        console.print(f"[cyan]predict[/]: span re-coding added {added} codes from {len(coded)} evidence phrases")


def restrict_codes_of(cfg: DictConfig, bundle: DataBundle, run_dir: Path) -> list[str] | None:
    """The codes restricted decoding allows in a run (None when ``infer.restrict_codes`` is off):
    the billable codes of the model's code vocabulary (:meth:`DataBundle.code_vocabulary`, the
    set code tokens are made for), written to ``restrict_codes.json`` of the run folder
    (:attr:`RunFolder.restrict_codes`) for ``python -m ccl.cli.predict``."""
    if not cfg.infer.get("restrict_codes"):
        return None
    codes = allowed_codes(bundle.code_vocabulary(), bundle.tab)
    write_json_atomic(RunFolder(run_dir).restrict_codes, codes)
    return codes


def truncated_answers(rows: Sequence[dict[str, Any]]) -> int:
    """Prediction rows whose answer hit the length bound (rows of older runs count as not cut)."""
    return sum(bool(r.get("truncated")) for r in rows)


def answer_bound(cfg: DictConfig, run_dir: Path, bundle: DataBundle | None = None, tokenizer: Any = None) -> int:
    """The answer length bound in tokens: ``infer.max_new_tokens`` when set; else the one the
    train stage derived from its training answers (``model/ccl_model.json``: ``answer_tokens``);
    else (zero-shot) derived here from the training documents' answers; else, with no
    training documents, :data:`FALLBACK_MAX_NEW_TOKENS` (warned)."""
    if cfg.infer.max_new_tokens:
        return int(cfg.infer.max_new_tokens)
    meta_path = RunFolder(run_dir).model_meta
    if meta_path.is_file():
        stats = trained_model_meta(run_dir).get("answer_tokens")
        if stats:
            return int(stats["bound"])
    if bundle is not None and tokenizer is not None and bundle.docs.get("train"):
        return int(answer_length_stats(training_answer_lengths(cfg, bundle, tokenizer))["bound"])
    warnings.warn(f"infer.max_new_tokens is null and {meta_path} records no training answer lengths: "
                  f"answers are bounded at {FALLBACK_MAX_NEW_TOKENS} tokens; set infer.max_new_tokens",
                  RuntimeWarning, stacklevel=2)
    return FALLBACK_MAX_NEW_TOKENS


def predict_stage(
    cfg: DictConfig,
    bundle: DataBundle,
    run_dir: Path,
    console: Console,
    targets: Sequence[Target],
    on_done: Callable[[Target], None] | None = None,
) -> list[Path]:
    """Build the engine once and write ``predictions.jsonl`` of each target.

    ``on_done`` is called after each target's file is written (the run marks it finished
    there, so an interrupted run keeps the targets it completed).
    """
    allowed = restrict_codes_of(cfg, bundle, run_dir)
    built = time.perf_counter()
    if str(cfg.infer.engine) == "vllm" and engines.vllm_unavailable_reason() is None:
        serving = vllm_serving(cfg, bundle, run_dir, console)
        release_accelerator_memory()  # before vLLM sizes its KV cache from the free memory
        tokenizer = load_tokenizer(serving.tokenizer_dir)
        engine = engines.make_engine(cfg.infer, None, tokenizer, adapter_dir=serving.adapter_dir,
                             model_dir=serving.model_dir, tokenizer_dir=serving.tokenizer_dir,
                             stop_token_ids=stop_token_ids(serving.model_dir, tokenizer), seed=int(cfg.seed))
        console.print(f"[cyan]predict[/]: vLLM on {engines.vllm_platform_name()}, serving {serving.model_dir}"
                      + (f" + LoRA {serving.adapter_dir}" if serving.adapter_dir else ""))
    else:
        release_accelerator_memory()  # the training model of this process, if any
        model, tokenizer = load_trained(cfg, bundle, run_dir)
        model = place_model(model, inference_device(cfg.train))
        engine = engines.make_engine(cfg.infer, model, tokenizer)
    # The engine's load time apart from decoding (benchmarks/engines_cpu.py reads this line).
    console.print(f"[cyan]predict[/]: engine {type(engine).__name__} ready in {time.perf_counter() - built:.1f} s")
    bound = answer_bound(cfg, run_dir, bundle, tokenizer)
    paths = []
    for target in targets:
        if target.name is not None or target.extra:
            console.print(f"[cyan]predict[/]: {target.label}")
        rows = predict_documents(cfg, None, tokenizer, target.docs, console, target.human_evidence, allowed,
                                 max_new_tokens=bound, engine=engine)
        write_jsonl(target.predictions, rows)
        paths.append(target.predictions)
        if on_done is not None:
            on_done(target)
    return paths


