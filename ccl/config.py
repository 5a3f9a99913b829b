"""Structured config schema: every knob in ``conf/`` is declared here, with its default.

The dataclasses are registered in Hydra's ConfigStore as ``ccl_schema`` and
``conf/config.yaml`` lists it first in its defaults, so a misspelled key is a
composition error instead of a silently ignored value.

One source of defaults: this module. A field's default here is the value a run gets unless
an option file of ``conf/`` (or the command line) sets another; an option file writes only
the values in which it departs from these defaults (its recipe), never a default again
(``tests/test_config.py::test_no_default_is_written_twice`` fails on a YAML value equal to
the schema's). Why the schema and not the YAML: configs are also built without Hydra
(``DocsConfig(name="demo")`` in ``ccl.bench.gpu_check``, ``TrainConfig(...)`` in
``ccl.bench.memory``, ``LLMConfig()`` for a run config without ``llm``, the span tiers'
``OmegaConf.structured`` defaults, dozens of tests), and every option of a group would
otherwise have to restate every key of it (seven ``conf/docs`` files, four ``conf/llm``).

Settings of one data source or one backbone kind sit under their own key (``docs.demo.*``,
``docs.codiesp.*``, ``docs.mdace.*``, ``docs.aci_bench.*``, ``backbone.tiny.*``): every
config carries every block (an override of another source's knob is harmless, as before the
move), and only that source or kind reads it. Options removed from the user config are listed in
:data:`RETIRED_KEYS` (a command line that sets one gets a one-line error naming its
replacement). Stage content keys hash each group through :func:`legacy_layout`, so a key
that moved or an option retired at its only remaining value keeps every cached stage valid.
The schema sits on the bottom floor: it imports nothing from the rest of the package.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class _Choice(str, Enum):
    """A closed set of string options, each member's value its name (the functional API:
    ``_Choice("Engine", "hf vllm", module=__name__)``): a wrong value is a composition error."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
        return name

    def __str__(self) -> str:
        return self.value


Task = _Choice("Task", "evidence codes_only cot", module=__name__)
TrainMode = _Choice("TrainMode", "lora full none", module=__name__)
Engine = _Choice("Engine", "hf vllm", module=__name__)
LoggerKind = _Choice("LoggerKind", "wandb csv none", module=__name__)
LoggerMode = _Choice("LoggerMode", "offline online disabled", module=__name__)  # W&B's init modes
BackboneKind = _Choice("BackboneKind", "tiny smollm2 hub", module=__name__)


@dataclass
class ICDConfig:
    """ICD-10-CM knowledge sources. ``None`` paths fall back to bundled/downloaded files."""

    year: int = 2026
    tabular_xml: str | None = None  # None: the April 2026 list shipped in simple-icd-10-cm
    index_xml: str | None = None  # main Alphabetic Index
    eindex_xml: str | None = None  # External Cause index
    drug_xml: str | None = None  # Table of Drugs and Chemicals
    neoplasm_xml: str | None = None  # Neoplasm Table
    download: bool = True  # try the CDC zip when no index path is given


@dataclass
class TinyBackboneConfig:
    """A from-scratch Llama-style model built from these numbers, with a BPE tokenizer trained
    locally (``ccl/model/tiny.py``): ``backbone.tiny.*``, read only when ``kind=tiny``."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    vocab_size: int = 4096


def tiny_settings(backbone: Any) -> Any:
    """``backbone.tiny``, or :class:`TinyBackboneConfig`'s defaults when it is absent or null
    (a config written before the block existed)."""
    block = getattr(backbone, "tiny", None)
    return block if block is not None else TinyBackboneConfig()


@dataclass
class BackboneConfig:
    name: str = MISSING
    kind: BackboneKind = BackboneKind.hub
    pretrained: str | None = None  # hub id or local dir (kind=hub)
    family: str = ""  # for the scaling-law analysis
    n_params: float | None = None  # nominal parameter count, for tables
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto: flash_attention_2 when available, else sdpa
    use_chat_template: bool = True
    max_length: int = 2048
    # One new token per label-space code, initialised from its description; under LoRA only
    # their output (lm_head) rows train (the input rows stay at their description-mean start,
    # so backward stops at the lowest LoRA layer; issue 12).
    code_tokens: bool = False
    tiny: TinyBackboneConfig = field(default_factory=TinyBackboneConfig)  # read when kind=tiny


@dataclass
class DemoDocsConfig:
    """The synthetic demo world (``ccl/data/demo.py``): ``docs.demo.*``."""

    n_train: int = 120
    n_test: int = 40
    n_codes: int = 24
    unseen_share: float = 0.3  # share of test codes never in training documents
    phrases_per_code: int = 1
    codes_per_note_min: int = 2
    codes_per_note_max: int = 5
    distractor_rate: float = 0.5  # negated / ruled-out / family-history mentions per note
    filler_sentences: int = 1
    corpus_size: int = 2000  # code-labelled notes without evidence (silver mining)


@dataclass
class CodiespDocsConfig:
    """CodiEsp (``ccl/data/sources/codiesp.py``): ``docs.codiesp.*``."""

    language: str = "es"  # es | en (English translations as code-only documents)
    # dev: the dev folder is the test split (the paper's setting); test: the official three
    # splits, dev kept as the split `dev` and the official test folder as `test`.
    test_split: str = "dev"


@dataclass
class MdaceDocsConfig:
    """MDACE (``ccl/data/sources/mdace.py``): ``docs.mdace.*``."""

    # Inpatient (the paper's 302 admissions) | Profee (52 admissions): MDACE's two subsets,
    # each with its own splits (splits/<subset>/MDace-ev-*.csv).
    subset: str = "Inpatient"
    note_categories: list[str] = field(default_factory=list)  # empty: every note category


@dataclass
class AciBenchDocsConfig:
    """ACI-Bench (``ccl/data/sources/aci_bench.py``): ``docs.aci_bench.*``."""

    text_field: str = "note"  # note | dialogue


# The per-source blocks of DocsConfig, by ``docs.source``.
SOURCE_BLOCKS: dict[str, type] = {"demo": DemoDocsConfig, "codiesp": CodiespDocsConfig,
                                  "mdace": MdaceDocsConfig, "aci_bench": AciBenchDocsConfig}


def source_settings(docs: Any, source: str) -> Any:
    """``docs.<source>`` (e.g. ``docs.codiesp``), or its dataclass's defaults when the block is
    absent or null (a config written before the block existed). Raises ``KeyError`` for a
    source without a block."""
    block = getattr(docs, source, None)
    return block if block is not None else SOURCE_BLOCKS[source]()


@dataclass
class DocsConfig:
    name: str = MISSING
    # The loader, ``load(cfg, tab, cache_dir, index) -> SourceData`` (ccl/data/sources/__init__.py);
    # every conf/docs option names its own. None (a DocsConfig built in code): the built-in
    # loader of ``source``. Outside the content keys, as every ``_target_``.
    _target_: str | None = None
    source: str = "demo"  # demo | mdace | codiesp | aci_bench | mimic4 (or a source of your own)
    seed: int = 13  # the demo world's draw; the validation picks (codiesp); the max_train_docs pick
    n_val: int = 20  # validation documents (demo: generated; codiesp: seeded picks from train)
    # Real sources: keep only these codes (and their evidence); documents left without one are
    # dropped (ccl/data/sources/subset.py; a CPU-sized slice, conf/experiment/codiesp_row3.yaml).
    # Demo: the explicit code universe. Empty: every code (demo: chosen).
    code_pool: list[str] = field(default_factory=list)
    # Real sources (issue 4). path: the dataset's folder (codiesp: train/ and dev/; mdace: the
    # checkout; aci_bench: data/challenge_data); null: downloaded once (a pinned commit) into
    # paths.cache_dir/sources. notes_path: credentialed notes (mdace: MIMIC-III NOTEEVENTS.csv(.gz);
    # mimic4: note/discharge.csv.gz), required there. labels_path: aci_bench: your ICD label file
    # (CSV encounter_id,code[,evidence] or JSONL; null: predict-only); mimic4: hosp/diagnoses_icd.
    # split_path: mdace: the MDace-ev-*.csv folder (null: <path>/splits/<subset>); mimic4: the
    # split feather (null: downloaded).
    path: str | None = None
    notes_path: str | None = None
    labels_path: str | None = None
    split_path: str | None = None
    max_train_docs: int | None = None  # any source (the demo too): a seeded pick of N training documents; null: all
    # Stop loading when more than this share of a dataset's label occurrences cannot be mapped
    # to the Tabular List (a partial or wrong-year list), or of its annotation rows must be
    # dropped (ccl/data/sources/common.py).
    max_dropped_label_share: float = 0.05
    max_dropped_record_share: float = 0.01
    # Settings of one source (SOURCE_BLOCKS), read by that source's loader only.
    demo: DemoDocsConfig = field(default_factory=DemoDocsConfig)
    codiesp: CodiespDocsConfig = field(default_factory=CodiespDocsConfig)
    mdace: MdaceDocsConfig = field(default_factory=MdaceDocsConfig)
    aci_bench: AciBenchDocsConfig = field(default_factory=AciBenchDocsConfig)


@dataclass
class GoldSpansConfig:
    # The tier's builder, ``build(ctx) -> TierResult`` (ccl/spans/tiers.py); like every
    # ``_target_``, outside the content keys (a tier's cache key is what it builds from).
    _target_: str = "ccl.spans.gold.build"
    sources: list[str] = field(default_factory=lambda: ["index", "description", "inclusion", "short"])
    restrict: str = "docs"  # docs: the documents' label space and its neighbours | all
    neighbours: int = 0  # nearest codes added per label-space code when restrict=docs
    max_pairs_per_code: int | None = None


@dataclass
class ShardConfig:
    """Silver stage 1 split over workers by note id (ccl/spans/silver.py, README "Mining
    over workers"): ``index`` set: extract that shard only; ``index`` null and ``count > 1``:
    merge the shards' spans and refine once."""

    count: int = 1  # shards (workers) the corpus is split into, by a hash of the note id
    index: int | None = None  # this worker's shard, 0 .. count-1; null: the merge (or no sharding)


@dataclass
class SilverSpansConfig:
    _target_: str = "ccl.spans.silver.build"
    method: str = "lexical"  # lexical | llm
    corpus: str = "demo_corpus"
    max_pairs_per_code: int | None = 10
    shard: ShardConfig = field(default_factory=ShardConfig)


@dataclass
class SyntheticSpansConfig:
    _target_: str = "ccl.spans.synthetic.build"
    method: str = "template"  # template | llm
    max_pairs_per_code: int | None = 3
    targets: str = "docs"  # docs: billable codes of every document split | all: every billable code
    neighbours: int = 3  # nearest covered codes consulted per target


@dataclass
class SpansConfig:
    gold: GoldSpansConfig | None = None
    silver: SilverSpansConfig | None = None
    synthetic: SyntheticSpansConfig | None = None


@dataclass
class MixConfig:
    span_share: float = 0.5  # share of span-level examples in each epoch's sample
    doc_repeats: int = 1  # document passes per epoch
    max_span_examples_per_epoch: int | None = None
    resample_each_epoch: bool = True
    span_warmup_steps: int = 20  # span-only optimisation steps before documents join
    # How span pairs are shown: "span" (the paper's span-level prompt), "document" (the
    # pair as a one-sentence note under the document prompt, so the model also learns to
    # copy that phrase out of a note as evidence), or "both" (each pair twice).
    span_template: str = "both"
    # Span draws per tier in proportion to (pairs in the tier) ** tier_alpha: 1 keeps the
    # tiers' sizes (a 10-pair silver tier beside 83 gold pairs gets 11%), 0 gives every tier
    # the same share (exponent-smoothed sampling, as XLM-R mixes languages). Chosen on the
    # validation split (issue 12, benchmarks/table3_cpu.md: row 5, seed 0, 20 val notes: alpha
    # 1 -> 0 unseen micro F1 0.0 -> 31.6, seen 75.9 -> 69.2).
    tier_alpha: float = 0.0


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    top_layers: int | None = 8  # CPU default: LoRA on the top N decoder layers only; None: all


@dataclass
class TrainConfig:
    mode: TrainMode = TrainMode.lora
    lr: float = 1e-3
    code_head_lr: float = 3e-3  # output rows of new code tokens
    weight_decay: float = 0.0
    warmup_steps: int = 5
    # Warm-up as a share of the planned optimizer steps; when set it replaces warmup_steps.
    warmup_ratio: float | None = None
    max_steps: int = 0  # 0: bounded by max_epochs (every row sees the same document passes)
    max_epochs: int | None = 3  # document passes; 2 left rows 3-4 looping in their evidence lists (issue 3)
    # Micro-batches of <= 4 examples / 2048 padded tokens, 2 per optimiser step (grad_accum): <= 8
    # examples / 4096 token slots per step at about half the activation memory of one such batch
    # (issue 12: worst SmolLM2 step 5.3 -> 3.0 GB peak RSS at the same tokens/s). A step's loss is
    # the mean over ALL its answer tokens (not the mean of the micro-batch means), so its gradient is
    # that of one batch of the same examples, as on a GPU (lora_gpu: one packed batch per step;
    # ccl/model/module.py SFTModule, issue 23). Length grouping still cuts micro-batches of 4, so a
    # step holds other examples than a batch-8 plan would.
    batch_size: int = 4  # examples per micro-batch (upper bound)
    max_batch_tokens: int = 2048  # token budget per micro-batch (length-grouped)
    packing: bool = False  # pack a batch's examples into rows (isolated attention, no padding)
    # Run the frozen decoder layers below the lowest LoRA layer once per distinct example and
    # reuse their output in later epochs (ccl.model.frozen_prefix; padded batches only; same
    # loss and gradients to 1e-5; ~140 MB on the demo world).
    frozen_prefix_cache: bool = True
    grad_accum: int = 2  # micro-batches per optimiser step
    precision: str = "32-true"
    gradient_checkpointing: bool = False
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed_stage_2 | ...
    val_docs: int = 0  # validation documents for a val loss at the end (0: none; costs CPU time)
    log_every_n_steps: int = 5
    save_every_n_steps: int = 50
    lora: LoraConfig = field(default_factory=LoraConfig)


TRAIN_REF = re.compile(r"\$\{train\.(\w+)\}")


@dataclass
class TrainerConfig:
    """``pytorch_lightning.Trainer`` arguments (``conf/trainer/default.yaml``); each ``${train.X}``
    value mirrors a ``train.*`` key, which is where it is set (see :func:`trainer_mirrors`)."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "${train.accelerator}"
    devices: Any = "${train.devices}"
    num_nodes: int = "${train.num_nodes}"  # type: ignore[assignment]  # an interpolation
    strategy: str = "${train.strategy}"
    precision: str = "${train.precision}"
    accumulate_grad_batches: int = "${train.grad_accum}"  # type: ignore[assignment]
    log_every_n_steps: int = "${train.log_every_n_steps}"  # type: ignore[assignment]
    enable_model_summary: bool = False


def trainer_mirrors() -> dict[str, str]:
    """``{"precision": "precision", "accumulate_grad_batches": "grad_accum", ...}``: the trainer
    arguments whose schema default is a ``${train.X}`` interpolation, and their ``train`` key."""
    found = {f.name: TRAIN_REF.fullmatch(str(f.default)) for f in dataclasses.fields(TrainerConfig)}
    return {name: match.group(1) for name, match in found.items() if match}


def check_trainer(cfg: Any) -> None:
    """Refuse a ``trainer.X`` that differs from the ``train.*`` key it mirrors.

    The train stage's content key (:func:`ccl.stages.keys.train_key`) covers ``train.*``, not
    ``trainer.*`` (``conf/trainer/default.yaml`` only restates ``train.*``), so a
    ``trainer.precision=bf16-mixed`` would train another model under the same key. Raises
    ``ValueError`` naming both keys and the override to use.
    """
    wrong = [(name, key) for name, key in trainer_mirrors().items()
             if name in cfg.trainer and cfg.trainer[name] != cfg.train[key]]
    if wrong:
        shown = "; ".join(f"trainer.{n}={cfg.trainer[n]} but train.{k}={cfg.train[k]}" for n, k in wrong)
        fix = " ".join(f"train.{k}={cfg.trainer[n]}" for n, k in wrong)
        raise ValueError(f"{shown}: the trainer group takes these from train.*; set {fix} instead")


@dataclass
class InferConfig:
    engine: Engine = Engine.hf
    # Answer length bound in tokens; null: derived from the training answers (their 99th
    # percentile plus a margin, ccl/generation/record.py), recorded in model/ccl_model.json.
    max_new_tokens: int | None = None
    batch_size: int = 16
    temperature: float = 0.0
    # The run's only predictions in human-evidence mode ("CCL + human evidence": the gold evidence
    # is written into the prompt, the model generates the codes). Part of the predict key.
    human_evidence: bool = False
    # Besides the normal predictions, also predict and score in human-evidence mode the run's
    # split and every test set with gold evidence on each document (human_evidence/ and
    # test_sets/<name>/human_evidence/). Keyed apart: switching it on for a finished run adds
    # those predictions only (no retraining, the normal predictions stay cached).
    also_human_evidence: bool = False
    # End a section whose line repeats (ccl/generation/guards.py): a looping model still
    # reaches its codes. An HF-generate logits processor: applied under engine=hf only (not
    # under engine=vllm, nor its HF fallback), and part of the predict key only there.
    stop_repeated_lines: bool = True
    # Penalty on tokens already in the prompt or answer (1.0: none). Passed to both engines, so
    # HF generate does not inherit a model's generation_config penalty that vLLM would not apply.
    repetition_penalty: float = 1.0
    # vLLM: share of GPU memory its engine may take (weights + KV cache), and its context length
    # (null: backbone.max_length + the answer bound).
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    # The split of ``docs`` that is predicted and scored; null: none, the run is scored on its
    # ``test_sets`` only (e.g. a model trained on MIMIC-IV, tested on MDACE and ACI-Bench).
    split: str | None = "test"
    limit: int | None = None  # evaluate on the first N documents only (of every test set too)
    # Notes longer than backbone.max_length minus max_new_tokens (ccl/data/prompt_builder.py):
    # truncate (cut the note's end, as training does; counted in metrics.json) | window (code
    # overlapping windows of the note and merge their evidence and codes; beyond the paper).
    long_notes: str = "truncate"
    window_overlap: int = 64  # tokens neighbouring windows share (long_notes=window)
    # Only billable codes of the model's code vocabulary at code positions (issue 16;
    # ccl/predict/constrained.py): a token trie (HF), a structured-output regex (vLLM).
    restrict_codes: bool = False
    # After the document answer, code each evidence phrase again with the span prompt the
    # span tiers trained, and add those codes (ccl/predict/span_recode.py; beyond the paper).
    span_recode: bool = True


@dataclass
class AuditConfig:
    """Contamination audit of the data stage (ccl/data/audit.py): test vs training-side text."""

    enabled: bool = True
    shingle: int = 5  # words per shingle
    threshold: float = 0.5  # Jaccard similarity of two documents' shingle sets
    containment: float = 0.8  # share of a test document's (or span's) shingles found in the other text
    num_perm: int = 128  # MinHash sketch size: the bottom-k shingle hashes kept per test document
    min_span_words: int = 12  # span evidence shorter than this is a phrase, not audited
    drop: bool = False  # remove flagged training-side documents and span pairs before training
    max_listed: int = 50  # pairs listed in the manifest (all are counted)


GuidelineMode = _Choice("GuidelineMode", "report repair", module=__name__)


@dataclass
class EvalConfig:
    """Evaluation beyond the paper's metrics (issue 16; ccl/eval/stats.py, guidelines.py, ranking.py)."""

    guidelines: GuidelineMode = GuidelineMode.report  # repair: drop the lower-scored code of an Excludes1 pair
    bootstrap_resamples: int = 1000  # 0: no intervals
    confidence: float = 0.95
    bootstrap_seed: int = 0
    bootstrap_method: str = "percentile"  # percentile | basic | BCa (scipy.stats.bootstrap)
    # Micro-F1 at a probability threshold tuned on the validation split: the val split is
    # predicted too (val/ of the run folder) when codes are scored.
    tune_threshold: bool = False


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.wandb
    project: str = "ccl"
    mode: LoggerMode = LoggerMode.offline  # offline unless the user says online
    # W&B group; None: the Hydra multirun folder's name for a sweep's jobs, no group for a run
    group: str | None = None
    log_note_text: bool = False  # privacy: note text never leaves the machine unless set


@dataclass
class PathsConfig:
    root_dir: str = "${oc.env:CCL_ROOT,.}"
    output_dir: str = "${paths.root_dir}/outputs"
    cache_dir: str = "${oc.env:CCL_CACHE,${paths.root_dir}/.cache/ccl}"

# Span-tier LLMs (``conf/llm/*.yaml``). ``lexical`` generates no text: it mines spans directly.
LLM_BACKENDS = ("lexical", "hf", "openai", "vllm")


@dataclass
class BackendConfig:
    """Which text generator expands the span tiers, and how to call it (``make_backend``)."""

    backend: str = "lexical"  # lexical | hf | openai | vllm
    model: str | None = None  # hf: local dir or smollm2_135m; vllm: weights dir; openai: model name
    base_url: str | None = None  # openai: e.g. http://localhost:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 8  # conversations per backend call (and per cache commit)
    concurrency: int = 4  # openai: requests in flight at once
    timeout_s: float = 120.0  # openai: per request
    max_retries: int = 5  # openai: retries of 429 / 5xx / network errors
    backoff_s: float = 1.0  # openai: first retry delay, doubled each time
    requests_per_minute: float | None = None  # openai: client-side rate limit
    dtype: str = "auto"  # hf / vllm weights dtype
    device: str = "auto"  # hf: auto | cpu | cuda
    tensor_parallel_size: int = 1  # vllm
    gpu_memory_utilization: float = 0.9  # vllm
    max_model_len: int | None = None  # vllm
    allow_credentialed_remote: bool = False  # send MIMIC/MDACE text to a non-local endpoint
    # Decode silver answers under a grammar (ccl/spans/llm/grammar.py): hf with llguidance,
    # vllm as structured outputs (guidance backend), openai as vLLM's `structured_outputs`
    # request field (a served vLLM only; other APIs refuse it, so conf/llm/openai.yaml: false).
    structured: bool = True


@dataclass
class MiningConfig:
    """How the silver tier mines a corpus, whichever backend reads it."""

    max_documents: int | None = None  # silver: mine the first N corpus documents only
    max_candidates: int = 30  # silver stage 2: candidates shown to the LLM per code
    fuzzy_edits: int = 1  # typo edits allowed per word (5+ letters) when finding spans in notes
    negation_window: int = 6  # lexical: tokens around a mention searched for cues
    progress: bool = True  # rich progress bars


@dataclass
class LLMConfig(MiningConfig, BackendConfig):
    """The ``llm`` config group: backend settings and mining settings side by side (flat keys,
    as ``conf/llm/*.yaml`` and existing run folders write them)."""


def as_llm_config(node: Any) -> LLMConfig:
    """An :class:`LLMConfig` from a DictConfig, a mapping, an LLMConfig or ``None`` (the default).

    Raises ``ValueError`` naming unknown keys or an unknown ``backend``; ``TypeError`` for a
    value that is not a mapping.
    """
    if node is None:
        return LLMConfig()
    if isinstance(node, LLMConfig):
        return node
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise TypeError(f"llm config must be a mapping, got {type(node).__name__}")
    known = {f.name for f in dataclasses.fields(LLMConfig)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise ValueError(f"llm config: unknown key(s) {unknown}; known: {sorted(known)}")
    out = LLMConfig(**node)
    if out.backend not in LLM_BACKENDS:
        raise ValueError(f"llm.backend={out.backend!r}: choose one of {LLM_BACKENDS}")
    return out


def llm_config(run_cfg: Any) -> LLMConfig:
    """The ``llm`` group of a full run config; absent or ``None``: the lexical default."""
    node = run_cfg.get("llm") if run_cfg is not None else None
    return as_llm_config(node)


@dataclass
class CCLConfig:
    name: str = "default"
    seed: int = 0
    stage: str = "all"  # all | data | train | predict | eval, or a comma list
    task: Task = Task.evidence  # prompt template family
    ckpt_path: str | None = None
    # Replace the results of a run folder that hold another config (see ccl/utils/run_folder.py).
    overwrite: bool = False
    # The data stage's data/<split>.jsonl refer to each document by source, id and content hash
    # (codes and evidence spans kept); true writes the note text too (a copy of every note,
    # ~1.5 GB at MIMIC-IV size, credentialed text in every run folder).
    copy_notes: bool = False
    icd: ICDConfig = field(default_factory=ICDConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    docs: DocsConfig = field(default_factory=DocsConfig)
    # Extra test sets, name -> a docs config whose test split is predicted and scored besides
    # the run's own (``test_sets/<name>/``). Filled by composing docs configs with a package:
    # ``+docs@test_sets.mdace=mdace``, or a preset of the test_sets group (``test_sets=table1``).
    test_sets: dict[str, DocsConfig] = field(default_factory=dict)
    spans: SpansConfig = field(default_factory=SpansConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


# ------------------------------------------------------- moved and retired keys

# Groups whose per-source / per-kind settings sit under their own key: group -> {block: dataclass}.
BLOCKS: dict[str, dict[str, type]] = {"backbone": {"tiny": TinyBackboneConfig}, "docs": SOURCE_BLOCKS}
# Keys that moved under such a block (old dotted name -> new one), for the error a command line
# that still sets the old name gets (check_retired).
MOVED_KEYS: dict[str, str] = {
    f"{group}.{f.name}": f"{group}.{block}.{f.name}"
    for group, blocks in BLOCKS.items() for block, kind in blocks.items() for f in dataclasses.fields(kind)
}
# Options removed from the user config, kept only to measure old paths (in ``ccl.bench``'s arms):
# key -> (the one value every run now takes, what to do instead).
RETIRED_KEYS: dict[str, tuple[Any, str]] = {
    "train.loss_positions": (
        "answer", "the loss is computed at answer positions only; the all-positions path is "
                  "measured by the bench alone (python -m ccl.bench train --arms before)"),
    "backbone.code_token_side": (
        "output", "under LoRA only the output rows of code tokens train; the both-sides path is "
                  "measured by the bench alone (python -m ccl.bench train --arms before)"),
}
# Experiments removed (old name -> what to write instead).
RETIRED_EXPERIMENTS: dict[str, str] = {
    "table1_ccl_he": "+experiment=table1_ccl (its infer.also_human_evidence=true already scores "
                     "CCL + human evidence with the same model)",
}


def current_key(key: str) -> str:
    """The name a dotted key of the flat layout (:func:`legacy_layout`) has now: ``docs.n_train``
    -> ``docs.demo.n_train``, ``test_sets.X.language`` -> ``test_sets.X.codiesp.language``;
    any other key unchanged."""
    parts = key.split(".")
    if parts[0] == "test_sets" and len(parts) > 2:
        moved = MOVED_KEYS.get("docs." + ".".join(parts[2:]))
        return f"{'.'.join(parts[:2])}.{moved.split('.', 1)[1]}" if moved else key
    return MOVED_KEYS.get(key, key)


def _retired_problem(key: str, value: str) -> str | None:
    """Why a command-line override ``key=value`` names a removed key or experiment (None: it does not)."""
    if key == "experiment" and value in RETIRED_EXPERIMENTS:
        return f"experiment={value} was removed: use {RETIRED_EXPERIMENTS[value]}"
    if key in RETIRED_KEYS:
        value_kept, instead = RETIRED_KEYS[key]
        return f"{key} was removed (every run uses {value_kept}): {instead}; drop the override"
    new = current_key(key)  # test_sets.NAME.X is a docs config: its keys moved as docs.X did
    return f"{key} is now {new}: write {new}={value}" if new != key else None


def check_retired(argv: Sequence[str]) -> None:
    """Refuse a command-line override of a key that moved (:data:`MOVED_KEYS`) or was removed
    (:data:`RETIRED_KEYS`, :data:`RETIRED_EXPERIMENTS`), naming the replacement, before Hydra
    composes (whose error would only say the key is not in the schema). Raises ``ValueError``."""
    problems = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        problem = _retired_problem(key.lstrip("+~"), value)
        if problem:
            problems.append(problem)
    if problems:
        raise ValueError("; ".join(problems))


def legacy_layout(group: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of config group ``group`` (a resolved dict) in the flat layout every stage key
    and run-folder config was first written in: each per-source / per-kind block's settings as
    keys of the group (a null block as its dataclass's defaults, the values the flat keys had),
    and each retired option (:data:`RETIRED_KEYS`) at the one value runs now take. A dict already
    in that layout comes back unchanged.

    Stage content keys (``ccl.stages.keys``) hash this view and run folders compare configs in it
    (``ccl.utils.run_folder.config_diff``), so that moving a setting under a block, or retiring
    an option at its only remaining value, changes no key: every cached stage and run folder stays
    valid. A setting added later hashes under its own name.
    """
    out = dict(values)
    for block, kind in BLOCKS.get(group, {}).items():
        if block in out:
            settings = out.pop(block)
            out.update(settings if settings is not None else dataclasses.asdict(kind()))
    for key, (value, _) in RETIRED_KEYS.items():
        retired_group, leaf = key.split(".", 1)
        if retired_group == group:
            out.setdefault(leaf, value)
    return out


def legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config with :func:`legacy_layout` applied to every group (and to each
    ``test_sets`` entry, a docs config)."""
    out = {k: legacy_layout(k, v) if isinstance(v, Mapping) else v for k, v in config.items()}
    if isinstance(config.get("test_sets"), Mapping):
        out["test_sets"] = {name: legacy_layout("docs", docs) if isinstance(docs, Mapping) else docs
                            for name, docs in config["test_sets"].items()}
    return out


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config tree of the repository


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The run config of ``conf/`` with Hydra ``overrides``, as ``python -m ccl.run`` composes it
    (schema registered), for the commands that compose without the Hydra app (``ccl.cli.spans``,
    ``ccl.cli.stats``, ``ccl.cli.audit``, ``ccl.bench``). Raises Hydra's errors for a bad
    override or an unknown key, ``ValueError`` for a value out of range (:func:`check_values`)."""
    from hydra import compose, initialize_config_dir

    check_retired(overrides)  # a key that moved or was removed: one line naming its replacement
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    check_values(cfg)  # a value out of range is refused before any work, naming its key
    return cfg


def register_configs() -> None:
    """Register the schema with Hydra (idempotent)."""
    ConfigStore.instance().store(name="ccl_schema", node=CCLConfig)


class UnknownConfigKey(KeyError):
    """A config key the schema does not declare (e.g. from ``+train.foo=1``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _undeclared(node: DictConfig, prefix: str) -> Iterator[tuple[str, list[str]]]:
    """``(dotted key, declared siblings)`` for every key of ``node`` outside its dataclass."""
    kind = OmegaConf.get_type(node)
    declared = [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None
    for key in node:
        if declared is not None and key not in declared:
            yield f"{prefix}{key}", declared
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            yield from _undeclared(child, f"{prefix}{key}.")


def check_closed(cfg: DictConfig) -> None:
    """Refuse keys the schema does not declare.

    Hydra's ``+key=value`` appends a key even to a structured config, so a
    misspelling written with ``+`` (``+trian.max_steps=5``, the fix Hydra's own
    error suggests) or an invented knob (``+train.foo=1``) would be written into
    ``config.yaml`` and silently ignored. Maps declared as ``dict`` in the schema
    (``test_sets``) take any name; their values are checked against their own
    dataclass. Raises :class:`UnknownConfigKey` naming each key and the closest
    declared one.
    """
    problems = []
    for key, declared in _undeclared(cfg, ""):
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, declared, n=1)
        hint = f" (did you mean {key[: len(key) - len(leaf)]}{close[0]}?)" if close else ""
        problems.append(f"{key}{hint}")
    if problems:
        raise UnknownConfigKey(
            f"config key(s) not in the schema (ccl/config.py): {', '.join(problems)}. "
            "'+key=value' cannot add knobs: fix the spelling and drop the '+'"
        )


# ---------------------------------------------------------------- value ranges


@dataclass(frozen=True)
class Range:
    """The values a numeric key takes: ``low``/``high`` bounds (``None``: unbounded), open or
    closed, ``null`` allowed or not, and what the value means (shown in the error)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (``None``: it is in range)."""
        if value is None:
            return None if self.null else "must be set"
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
            return "must be a number"
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.describe()}" if low_bad or high_bad else None

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        text += " or null" if self.null else ""
        return text + (f"; {self.note}" if self.note else "")


def _r(low: float | None = None, high: float | None = None, **kw: Any) -> Range:
    return Range(low, high, **kw)


SHARE = _r(0, 1)
COUNT = _r(1)  # a positive count
NONNEG = _r(0)
POSITIVE = _r(0, low_open=True)

_DOCS_RANGES: dict[str, Range] = {
    "seed": NONNEG, "n_val": NONNEG, "demo.n_train": NONNEG, "demo.n_test": NONNEG, "demo.n_codes": COUNT,
    "demo.unseen_share": SHARE, "demo.phrases_per_code": COUNT, "demo.codes_per_note_min": COUNT,
    "demo.codes_per_note_max": COUNT, "demo.distractor_rate": NONNEG, "demo.filler_sentences": NONNEG,
    "demo.corpus_size": NONNEG,
    "max_train_docs": _r(1, null=True, note="null: all"),
    "max_dropped_label_share": SHARE, "max_dropped_record_share": SHARE,
}
_LLM_RANGES: dict[str, Range] = {
    "temperature": NONNEG, "top_p": _r(0, 1, low_open=True), "max_new_tokens": COUNT, "seed": NONNEG,
    "batch_size": COUNT, "concurrency": COUNT, "timeout_s": POSITIVE, "max_retries": NONNEG, "backoff_s": NONNEG,
    "requests_per_minute": _r(0, low_open=True, null=True), "tensor_parallel_size": COUNT,
    "gpu_memory_utilization": _r(0, 1, low_open=True), "max_model_len": _r(1, null=True),
    "max_documents": _r(1, null=True, note="null: all"), "max_candidates": COUNT, "fuzzy_edits": NONNEG,
    "negation_window": NONNEG,
}
# Every numeric key of the schema and its range (tests/test_faults.py checks none is missing).
# ``docs.*`` rules hold for each ``test_sets.NAME.*`` too.
VALUE_RANGES: dict[str, Range] = {
    "seed": NONNEG, "icd.year": _r(2000, 2100),
    "backbone.max_length": COUNT,
    **{f"backbone.tiny.{k}": COUNT for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                                             "vocab_size")},
    "backbone.n_params": _r(0, low_open=True, null=True),
    **{f"docs.{k}": v for k, v in _DOCS_RANGES.items()},
    "spans.gold.neighbours": NONNEG, "spans.gold.max_pairs_per_code": _r(1, null=True, note="null: no cap"),
    "spans.silver.max_pairs_per_code": _r(1, null=True, note="null: no cap"),
    "spans.silver.shard.count": COUNT,
    "spans.silver.shard.index": _r(0, null=True, note="null: the merge step"),
    "spans.synthetic.max_pairs_per_code": _r(1, null=True, note="null: no cap"), "spans.synthetic.neighbours": NONNEG,
    "mix.span_share": _r(0, 1, note="the share of span examples in each epoch"),
    "mix.doc_repeats": COUNT, "mix.max_span_examples_per_epoch": _r(0, null=True, note="null: no cap"),
    "mix.span_warmup_steps": NONNEG, "mix.tier_alpha": NONNEG,
    "train.lr": POSITIVE, "train.code_head_lr": POSITIVE, "train.weight_decay": NONNEG,
    "train.warmup_steps": NONNEG, "train.warmup_ratio": _r(0, 1, null=True, note="a share of the planned steps"),
    "train.max_steps": _r(0, note="0: bounded by train.max_epochs"),
    "train.max_epochs": _r(1, null=True, note="null: bounded by train.max_steps"),
    "train.batch_size": COUNT, "train.max_batch_tokens": COUNT, "train.grad_accum": COUNT, "train.num_nodes": COUNT,
    "train.val_docs": NONNEG, "train.log_every_n_steps": COUNT, "train.save_every_n_steps": COUNT,
    "train.lora.r": COUNT, "train.lora.alpha": POSITIVE, "train.lora.dropout": _r(0, 1, high_open=True),
    "train.lora.top_layers": _r(1, null=True, note="null: every layer"),
    "infer.max_new_tokens": _r(1, null=True, note="null: derived from the training answers"),
    "infer.batch_size": COUNT, "infer.temperature": NONNEG, "infer.repetition_penalty": POSITIVE,
    "infer.gpu_memory_utilization": _r(0, 1, low_open=True), "infer.max_model_len": _r(1, null=True),
    "infer.limit": _r(1, null=True, note="null: every document"), "infer.window_overlap": NONNEG,
    "audit.shingle": COUNT, "audit.threshold": SHARE, "audit.containment": SHARE, "audit.num_perm": COUNT,
    "audit.min_span_words": NONNEG, "audit.max_listed": NONNEG,
    "eval.bootstrap_resamples": _r(0, note="0: no intervals"), "eval.confidence": _r(0, 1, low_open=True,
                                                                                      high_open=True),
    "eval.bootstrap_seed": NONNEG,
    **{f"llm.{k}": v for k, v in _LLM_RANGES.items()},
}
# String keys whose values form a closed set the schema types as ``str`` (the enums are checked by OmegaConf).
VALUE_CHOICES: dict[str, tuple[str, ...]] = {
    "backbone.dtype": ("auto", "float32", "bfloat16", "float16"),
    "mix.span_template": ("span", "document", "both"),
    "infer.long_notes": ("truncate", "window"),
    "spans.gold.restrict": ("docs", "all"),
    "spans.silver.method": ("lexical", "llm"),
    "spans.synthetic.method": ("template", "llm"),
    "spans.synthetic.targets": ("docs", "all"),
    "eval.bootstrap_method": ("percentile", "basic", "BCa"),
    "llm.backend": LLM_BACKENDS,
}


def value_problems(cfg: Any) -> list[str]:
    """``KEY=VALUE (must be ...)`` for every value of ``cfg`` outside :data:`VALUE_RANGES` /
    :data:`VALUE_CHOICES`, and for the few rules between keys (demo codes per note, the
    window overlap)."""
    ranges: dict[str, Range] = dict(VALUE_RANGES)
    for name in (cfg.get("test_sets") or {}):
        ranges.update({f"test_sets.{name}.{k}": v for k, v in _DOCS_RANGES.items()})
    out = []
    for key, rule in ranges.items():
        node = OmegaConf.select(cfg, key.rsplit(".", 1)[0]) if "." in key else cfg
        if node is None or key.rsplit(".", 1)[-1] not in node:  # a tier that is off, a group not composed
            continue
        value = OmegaConf.select(cfg, key)
        problem = rule.problem(value)
        if problem:
            out.append(f"{key}={value} ({problem})")
    for key, choices in VALUE_CHOICES.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value not in ("<absent>", None) and str(value) not in choices:
            out.append(f"{key}={value} (must be one of {', '.join(choices)})")
    for prefix in ["docs", *(f"test_sets.{n}" for n in (cfg.get("test_sets") or {}))]:
        low, high = (OmegaConf.select(cfg, f"{prefix}.demo.codes_per_note_{k}") for k in ("min", "max"))
        if isinstance(low, int) and isinstance(high, int) and high < low:
            out.append(f"{prefix}.demo.codes_per_note_max={high} (must be >= {prefix}.demo.codes_per_note_min={low})")
    overlap, length = OmegaConf.select(cfg, "infer.window_overlap"), OmegaConf.select(cfg, "backbone.max_length")
    if isinstance(overlap, int) and isinstance(length, int) and overlap >= length:
        out.append(f"infer.window_overlap={overlap} (must be < backbone.max_length={length})")
    return out


def check_values(cfg: Any) -> None:
    """Refuse, when the config is composed and before any work, values out of their range,
    naming each key, its value and the range. Raises ``ValueError``."""
    problems = value_problems(cfg)
    if problems:
        raise ValueError(f"config value(s) out of range: {'; '.join(problems)}")


def _config_dirs(argv: Sequence[str]) -> list[Path]:
    """``conf/`` and any ``--config-dir``/``-cd`` folder of a Hydra command line."""
    dirs = [CONF_DIR]
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def check_yaml_files(argv: Sequence[str] = ()) -> None:
    """Refuse a config file that is not valid YAML, naming it, the line and column and the
    parser's complaint, before Hydra composes (whose error is the parser's traceback).

    Every ``*.yaml`` under ``conf/`` (and a ``--config-dir`` of ``argv``) is parsed (~60
    small files, tens of milliseconds). Raises ``ValueError``.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for folder in _config_dirs(argv):
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
            except yaml.MarkedYAMLError as err:
                mark = err.problem_mark or err.context_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
                what = " ".join(f"{err.context or ''} {err.problem or ''}".split())
                raise ValueError(f"{path}: not valid YAML at {where} ({what}); fix the file's syntax") from None
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
