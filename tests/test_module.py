"""SFTModule: answer-only loss, optimiser groups and schedule, overfitting, exact resume, saving."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from peft import PeftModel
from pytorch_lightning.callbacks import ModelCheckpoint
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from ccl.config import BackboneConfig, LoraConfig, TinyBackboneConfig, TrainConfig
from ccl.icd.codes import extract_codes
from ccl.model.backbone import apply_training_mode, load_backbone
from ccl.model.code_tokens import add_code_tokens, code_head_parameters
from ccl.model.module import IGNORE_INDEX, SFTModule, save_trained, warmup_cosine

PAIRS = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential hypertension",
    "J45.909": "Asthma, uncomplicated",
    "J20.9": "Acute bronchitis",
    "E78.5": "Hyperlipidemia",
    "F32.9": "Major depressive disorder, single episode",
    "N18.9": "Chronic kidney disease",
    "K21.9": "Gastro-esophageal reflux disease",
}
CORPUS = [f"{text}. {code}" for code, text in PAIRS.items()] * 20


def backbone_cfg(hidden: int = 64) -> BackboneConfig:
    return BackboneConfig(name="tiny", kind="tiny", dtype="float32", use_chat_template=False, max_length=128,
        tiny=TinyBackboneConfig(hidden_size=hidden, num_layers=2, num_heads=4, intermediate_size=2 * hidden,
                                vocab_size=512))


def collate(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Minimal right-padded collate: loss on the answer (and EOS) only."""
    rows = []
    for prompt, answer in examples:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p, a))
    width = max(len(p) + len(a) for p, a in rows)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for p, a in rows:
        pad = width - len(p) - len(a)
        batch["input_ids"].append(p + a + [tokenizer.pad_token_id] * pad)
        batch["attention_mask"].append([1] * (len(p) + len(a)) + [0] * pad)
        batch["labels"].append([IGNORE_INDEX] * len(p) + a + [IGNORE_INDEX] * pad)
    return {k: torch.tensor(v) for k, v in batch.items()}


def examples() -> list[tuple[str, str]]:
    return [(f"Evidence: {text}\nCodes:", f" {code}") for code, text in PAIRS.items()]


def trainer(max_steps: int, root: Path | None = None, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=root is not None,
        default_root_dir=root,
        **kwargs,
    )


def test_warmup_cosine_hand_values():
    f = warmup_cosine(warmup_steps=2, max_steps=6)
    assert [f(s) for s in range(7)] == pytest.approx(
        [
            0.5,
            1.0,
            1.0,
            (1 + math.cos(math.pi / 4)) / 2,
            0.5,
            (1 + math.cos(3 * math.pi / 4)) / 2,
            0.0,
        ]
    )
    assert warmup_cosine(0, 4)(0) == 1.0


def test_loss_is_mean_over_answer_tokens(cache):
    pl.seed_everything(0)
    model, tok = load_backbone(backbone_cfg(), cache, CORPUS)
    module = SFTModule(model, TrainConfig(mode="full"), tok)
    batch = collate(tok, examples()[:3])
    loss = module(batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][mask], targets[mask])
    assert torch.allclose(loss, manual, atol=1e-5)
    # Only answer tokens + EOS are counted: prompt and padding are masked.
    assert mask.sum() == sum(
        len(tok(f" {c}", add_special_tokens=False)["input_ids"]) + 1 for c in list(PAIRS)[:3]
    )


def test_packed_batch_gives_the_padded_loss(cache):
    model, tok = load_backbone(backbone_cfg(), cache, CORPUS)
    module = SFTModule(model, TrainConfig(mode="full"), tok).eval()
    padded = collate(tok, examples()[:3])
    lengths = padded["attention_mask"].sum(dim=1).tolist()
    packed = {
        "input_ids": torch.cat(
            [row[:n] for row, n in zip(padded["input_ids"], lengths, strict=True)]
        )[None],
        "labels": torch.cat([row[:n] for row, n in zip(padded["labels"], lengths, strict=True)])[
            None
        ],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
    }
    with torch.no_grad():
        assert torch.allclose(module(packed).loss, module(padded).loss, atol=1e-5)
        # Without restarted positions the examples would see each other: a different loss.
        unpacked_positions = {**packed, "position_ids": torch.arange(sum(lengths))[None]}
        assert not torch.allclose(module(unpacked_positions).loss, module(padded).loss, atol=1e-3)


def test_optimizer_groups_and_schedule(cache):
    model, tok = load_backbone(backbone_cfg(), cache, CORPUS)
    add_code_tokens(model, tok, list(PAIRS), PAIRS.__getitem__)
    cfg = TrainConfig(lr=1e-3, code_head_lr=3e-2, weight_decay=0.1, warmup_steps=2, max_steps=6,
                      lora=LoraConfig(r=4))
    wrapped = apply_training_mode(model, cfg)
    module = SFTModule(wrapped, cfg, tok)
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["interval"] == "step"
    groups = optimizer.param_groups
    in_groups = [p for g in groups for p in g["params"]]
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    assert len(in_groups) == len(trainable) and {id(p) for p in in_groups} == {
        id(p) for p in trainable
    }
    (head,) = code_head_parameters(wrapped)
    head_group = next(g for g in groups if any(p is head for p in g["params"]))
    assert head_group["params"] == [head] and head_group["weight_decay"] == 0.0
    lora_group = next(g for g in groups if g is not head_group and g["weight_decay"] == 0.1)
    lrs = []
    for _ in range(6):
        lrs.append((lora_group["lr"], head_group["lr"]))
        optimizer.step()
        scheduler.step()
    factors = [warmup_cosine(2, 6)(s) for s in range(6)]
    expected = [lr for f in factors for lr in (1e-3 * f, 3e-2 * f)]
    assert [lr for pair in lrs for lr in pair] == pytest.approx(expected)  # pytest 9: flat lists only


def test_lora_with_code_tokens_overfits_and_generates_codes(cache):
    """A handful of span -> code pairs are learned to the point of greedy decoding them back."""
    pl.seed_everything(0)
    model, tok = load_backbone(backbone_cfg(hidden=256), cache, CORPUS)
    add_code_tokens(model, tok, list(PAIRS), PAIRS.__getitem__)
    cfg = TrainConfig(lr=3e-3, code_head_lr=3e-2, warmup_steps=5, max_steps=60,
                      lora=LoraConfig(r=8, alpha=16, dropout=0.0))
    module = SFTModule(apply_training_mode(model, cfg), cfg, tok)
    pairs = examples()
    batches = [collate(tok, pairs[:4]), collate(tok, pairs[4:])]
    with torch.no_grad():
        initial = sum(module(b).loss.item() for b in batches) / 2
    run = trainer(60)
    start = time.perf_counter()
    run.fit(module, DataLoader(batches, batch_size=None))
    elapsed = time.perf_counter() - start
    metrics = run.callback_metrics
    print(
        f"tiny LoRA (hidden 256): {60 / elapsed:.1f} steps/s, {metrics['train/tokens_per_s']:.0f} tokens/s"
    )
    module.eval()
    with torch.no_grad():
        final = sum(module(b).loss.item() for b in batches) / 2
    assert final < 0.1 * initial, (initial, final)
    assert metrics["train/tokens_per_s"] > 0 and metrics["train/answer_tokens_per_s"] > 0
    assert metrics["train/lr"] < 1e-4  # cosine decayed to ~0 at max_steps
    for prompt, answer in pairs:
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
        out = module.model.generate(**ids, max_new_tokens=3, do_sample=False)
        assert extract_codes(tok.decode(out[0, ids["input_ids"].shape[1] :])) == [answer.strip()]


def _resume_setup(cache: Path):
    pl.seed_everything(0)
    model, tok = load_backbone(backbone_cfg(), cache, CORPUS)
    cfg = TrainConfig(
        lr=3e-3, warmup_steps=2, max_steps=8, lora=LoraConfig(r=4, alpha=8, dropout=0.2)
    )
    return SFTModule(apply_training_mode(model, cfg), cfg, tok, seed=0), tok


def test_resume_from_checkpoint_is_exact(cache, tmp_path):
    """N steps straight == N/2 steps, checkpoint, resume to N: same weights, same loss.

    The halfway point is an epoch boundary (4 batches per epoch, 8 steps) because a
    plain map-style DataLoader cannot resume mid-epoch (Lightning restarts that
    epoch's iterator). Dropout is on: SFTModule seeds each step from
    (seed, step, batch), so the resumed run draws the same masks.
    """
    _, tok = _resume_setup(cache)
    batches = [collate(tok, examples()[i : i + 2]) for i in range(0, 8, 2)]

    def loader() -> DataLoader:
        return DataLoader(batches, batch_size=None, shuffle=False)

    def ckpt(root: Path) -> ModelCheckpoint:
        return ModelCheckpoint(
            dirpath=root, every_n_train_steps=2, save_top_k=-1, filename="{step}"
        )

    def trainable(module: SFTModule) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    straight, _ = _resume_setup(cache)
    full_run = trainer(8, tmp_path / "straight", callbacks=[ckpt(tmp_path / "straight")])
    full_run.fit(straight, loader())

    first_half, _ = _resume_setup(cache)
    half_run = trainer(4, tmp_path / "half", callbacks=[ckpt(tmp_path / "half")])
    half_run.fit(first_half, loader())
    assert sorted(p.name for p in (tmp_path / "half").glob("*.ckpt")) == [
        "step=2.ckpt",
        "step=4.ckpt",
    ]

    resumed, _ = _resume_setup(cache)
    resumed_run = trainer(8, tmp_path / "resumed", callbacks=[ckpt(tmp_path / "resumed")])
    resumed_run.fit(resumed, loader(), ckpt_path=tmp_path / "half" / "step=4.ckpt")

    assert resumed_run.global_step == full_run.global_step == 8
    expected, got = trainable(straight), trainable(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.equal(
        full_run.callback_metrics["train/loss"], resumed_run.callback_metrics["train/loss"]
    )
    # And training did move the weights: the comparison is not between two untouched models.
    untouched, _ = _resume_setup(cache)
    assert not all(torch.equal(v, trainable(untouched)[k]) for k, v in expected.items())


def test_save_trained_adapter_and_full(cache, tmp_path):
    pl.seed_everything(0)
    model, tok = load_backbone(backbone_cfg(), cache, CORPUS)
    add_code_tokens(model, tok, ["E11.9", "I10"], PAIRS.__getitem__)
    cfg = TrainConfig(lr=1e-2, code_head_lr=1e-2, warmup_steps=0, max_steps=3, lora=LoraConfig(r=4))
    module = SFTModule(apply_training_mode(model, cfg), cfg, tok)
    batch = collate(tok, [("Evidence: hypertension\nCodes:", " I10")])
    trainer(3).fit(module, DataLoader([batch], batch_size=None))
    out = save_trained(module, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    saved = load_file(out / "adapter_model.safetensors")
    assert not any(k.endswith("embed_tokens.weight") for k in saved)  # no full embedding copy
    assert any("trainable_tokens_delta" in k for k in saved)

    # Reload: base backbone + the same code tokens + the adapter gives the same logits.
    base, tok2 = load_backbone(backbone_cfg(), cache, CORPUS)
    assert len(tok2) < len(tok)
    add_code_tokens(base, tok2, ["E11.9", "I10"], PAIRS.__getitem__)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    module.model.eval()
    with torch.no_grad():
        expected = module.model(input_ids=batch["input_ids"]).logits
        got = reloaded(input_ids=batch["input_ids"]).logits
    assert torch.allclose(expected, got, atol=1e-6)

    full, tok3 = load_backbone(backbone_cfg(), cache, CORPUS)
    full_module = SFTModule(
        apply_training_mode(full, TrainConfig(mode="full")), TrainConfig(mode="full"), tok3
    )
    out = save_trained(full_module, tmp_path / "full")
    again = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(again.get_input_embeddings().weight, full.get_input_embeddings().weight)
