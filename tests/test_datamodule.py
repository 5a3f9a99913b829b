"""The mixing data module: epoch composition, length-grouped batches, warm-up, exact resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ccl.config import MixConfig, TrainConfig
from ccl.data.datamodule import (
    WARMUP,
    MixDataModule,
    PaddingCollator,
    draw,
    group_by_length,
    padding_share,
    span_count,
)


def examples(kind: str, lengths, first_id: int = 1) -> list[dict]:
    """Examples whose every token is a unique id, so a batch tells which examples it holds."""
    out = []
    for k, n in enumerate(lengths):
        prompt = max(1, n // 2)
        ids = [first_id + k] * n
        out.append(
            {
                "input_ids": ids,
                "labels": [-100] * prompt + ids[prompt:],
                "length": n,
                "prompt_length": prompt,
                "kind": kind,
            }
        )
    return out


def realistic(n_docs=181, n_spans=181, seed=0):
    rng = np.random.default_rng(seed)
    docs = examples("doc", rng.normal(300, 60, n_docs).clip(120, 600).astype(int))
    spans = examples("span", rng.normal(40, 8, n_spans).clip(20, 80).astype(int), first_id=10_000)
    return docs, spans


def dm_for(docs, spans, mix=None, **train) -> MixDataModule:
    # Pinned rather than the recipe defaults (3 document passes, 20 span warm-up steps).
    cfg = TrainConfig(**({"batch_size": 8, "max_batch_tokens": 4096, "grad_accum": 1, "max_steps": 200,
                          "max_epochs": None} | train))
    return MixDataModule(docs, spans, mix or MixConfig(span_warmup_steps=0), cfg, seed=7, pad_token_id=0)


def test_padding_collator_right_and_left():
    exs = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8, 9], "labels": [-100, 9]},
    ]
    right = PaddingCollator(0)(exs)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert right["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    left = PaddingCollator(3, padding_side="left")(exs)
    assert left["input_ids"].tolist() == [[5, 6, 7], [3, 8, 9]]
    assert left["labels"].tolist() == [[-100, 6, 7], [-100, -100, 9]]
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert PaddingCollator(0).batch_tokens([3, 9, 4]) == 27
    with pytest.raises(ValueError, match="padding_side"):
        PaddingCollator(0, padding_side="middle")


def test_span_count():
    assert span_count(181, 5000, MixConfig(span_share=0.5)) == 181
    assert span_count(90, 5000, MixConfig(span_share=0.25)) == 30
    assert span_count(90, 5000, MixConfig(span_share=0.75)) == 270
    assert span_count(181, 5000, MixConfig(span_share=0.5, max_span_examples_per_epoch=100)) == 100
    assert span_count(181, 5000, MixConfig(span_share=0.0)) == 0
    assert span_count(181, 0, MixConfig(span_share=0.5)) == 0
    assert span_count(181, 5000, MixConfig(span_share=1.0)) == 5000
    assert span_count(0, 5000, MixConfig(span_share=0.5)) == 5000
    with pytest.raises(ValueError, match="span_share"):
        span_count(1, 1, MixConfig(span_share=1.5))


def test_draw_without_replacement_while_possible():
    rng = np.random.default_rng(0)
    few = draw(10, 7, rng)
    assert len(set(few.tolist())) == 7
    many = draw(5, 12, rng)
    assert sorted(many[:5].tolist()) == [0, 1, 2, 3, 4]
    assert set(Counter(many.tolist()).values()) <= {2, 3}


def test_epoch_mix_resampled_each_epoch():
    docs, _ = realistic()
    spans = examples("span", [40] * 1000, first_id=10_000)
    dm = dm_for(docs, spans)
    e0, e1 = dm.epoch_indices(0), dm.epoch_indices(1)
    assert e0[:181] == list(range(181))
    s0, s1 = e0[181:], e1[181:]
    assert len(s0) == 181 and len(set(s0)) == 181 and all(181 <= i < 1181 for i in s0)
    assert set(s0) != set(s1)
    fixed = dm_for(docs, spans, MixConfig(resample_each_epoch=False))
    assert fixed.epoch_indices(0) == fixed.epoch_indices(3)
    twice = dm_for(docs, spans, MixConfig(doc_repeats=2))
    assert Counter(twice.report()["epochs"]["0"]["examples"]) == {"doc": 362, "span": 362}


def test_documents_only_when_no_spans_or_no_share():
    docs, spans = realistic()
    for dm in (dm_for(docs, []), dm_for(docs, spans, MixConfig(span_share=0.0))):
        assert dm.report()["epochs"]["0"]["examples"] == {"doc": 181}


def test_batches_cover_each_epoch_once_within_limits():
    docs, spans = realistic()
    dm = dm_for(docs, spans, max_batch_tokens=1500, max_steps=1000, max_epochs=2)
    plan = dm.plan
    for epoch in (0, 1):
        members = [i for b in plan if b.epoch == epoch for i in b.indices]
        assert sorted(members) == sorted(dm.epoch_indices(epoch))
    for b in plan:
        assert len(b.indices) <= 8
        assert len(b.indices) * max(dm.lengths[i] for i in b.indices) <= 1500
    assert {b.epoch for b in plan} == {0, 1}  # max_epochs bounds the plan before max_steps
    assert dm.planned_steps == len(plan)


def test_length_grouping_pads_far_less_than_random_batches():
    docs, spans = realistic()
    dm = dm_for(docs, spans, max_steps=10_000, max_epochs=1)
    lengths, cost = dm.lengths, dm.collator.batch_tokens
    grouped = [b.indices for b in dm.plan]
    order = np.random.default_rng(0).permutation(len(lengths)).tolist()
    naive = [order[i : i + 8] for i in range(0, len(order), 8)]
    assert padding_share(grouped, lengths, cost) < 0.1 < 0.4 < padding_share(naive, lengths, cost)
    assert dm.report()["epochs"]["0"]["padding_share"] == pytest.approx(
        padding_share(grouped, lengths, cost), abs=1e-4
    )


def test_group_by_length_greedy_by_hand():
    lengths = [10, 9, 3, 2, 2]
    rng = np.random.default_rng(0)
    batches = group_by_length(
        range(5),
        lengths,
        batch_size=3,
        max_tokens=20,
        rng=rng,
        batch_tokens=PaddingCollator(0).batch_tokens,
    )
    # sorted longest first: 10 | 9 (2x10 fits 20, then 3x10 does not) -> [0,1], [2,3,4]
    assert sorted(sorted(b) for b in batches) == [[0, 1], [2, 3, 4]]


def test_plan_is_deterministic_and_seeded():
    docs, spans = realistic()
    a, b = dm_for(docs, spans).plan, dm_for(docs, spans).plan
    assert a == b
    other = MixDataModule(
        docs,
        spans,
        MixConfig(),
        TrainConfig(batch_size=8, max_batch_tokens=4096, grad_accum=1, max_steps=200),
        seed=8,
        pad_token_id=0,
    )
    assert other.plan != a


def test_span_warmup_then_mixed_and_trimmed_to_max_steps():
    docs, spans = realistic()
    dm = dm_for(docs, spans, MixConfig(span_warmup_steps=3), grad_accum=2, max_steps=40)
    plan = dm.plan
    assert len(plan) == 80 and dm.planned_steps == 40
    assert [b.epoch for b in plan[:6]] == [WARMUP] * 6 and plan[6].epoch == 0
    assert all(i >= 181 for b in plan[:6] for i in b.indices)
    assert any(i < 181 for b in plan[6:] for i in b.indices)
    report = dm.report()
    assert report["epochs"]["warmup"]["batches"] == 6 and set(
        report["epochs"]["warmup"]["examples"]
    ) == {"span"}
    assert report["total"]["batches"] == 80
    assert report["total"]["tokens"] == sum(dm.lengths[i] for b in plan for i in b.indices)


def test_plan_splits_evenly_over_ranks():
    docs, spans = realistic()
    dm = dm_for(docs, spans, max_steps=10_000, max_epochs=1)
    assert len(dm.build_plan(world_size=3)) % 3 == 0


def test_needs_examples_and_a_length():
    with pytest.raises(ValueError, match="no training examples"):
        _ = dm_for([], []).plan
    with pytest.raises(ValueError, match="max_steps or train.max_epochs"):
        _ = dm_for(*realistic(), max_steps=-1, max_epochs=None).plan
    with pytest.raises(ValueError, match="collator or a pad_token_id"):
        MixDataModule([], [], MixConfig(), TrainConfig(), seed=0)


def test_val_dataloader_covers_validation_documents_once():
    docs, spans = realistic()
    val, _ = realistic(n_docs=23, seed=3)
    dm = MixDataModule(
        docs,
        spans,
        MixConfig(),
        TrainConfig(batch_size=8, max_batch_tokens=4096, grad_accum=1),
        seed=0,
        pad_token_id=0,
        val_examples=val,
    )
    seen = [int(row[0]) for batch in dm.val_dataloader() for row in batch["input_ids"]]
    assert sorted(seen) == list(range(1, 24))
    assert dm_for(docs, spans).val_dataloader() == []


def test_resume_refuses_another_plan():
    docs, spans = realistic()
    loader = dm_for(docs, spans).train_dataloader()
    state = {"batches_done": 5, "fingerprint": "not-this-plan"}
    with pytest.raises(ValueError, match="different data plan"):
        loader.load_state_dict(state)


class _Recorder(pl.LightningModule):
    """Records which examples each training batch holds."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, ...]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(tuple(sorted(batch["input_ids"][:, 0].tolist())))
        return (self.w * batch["attention_mask"].float()).mean() + 1.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, grad_accum: int, ckpt_path=None) -> list[tuple[int, ...]]:
    docs = examples("doc", [30 + 3 * k for k in range(12)])
    spans = examples("span", [5 + k % 4 for k in range(30)], first_id=100)
    train = TrainConfig(batch_size=4, max_batch_tokens=10_000, max_steps=6, grad_accum=grad_accum)
    dm = MixDataModule(docs, spans, MixConfig(span_warmup_steps=1), train, seed=3, pad_token_id=0)
    module = _Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=train.max_steps,
        max_epochs=1,
        accumulate_grad_batches=grad_accum,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(
                dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}"
            )
        ],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    assert len(dm.plan) == 6 * grad_accum
    return module.seen


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_continues_at_the_next_unseen_batch(tmp_path, grad_accum):
    full = _fit(tmp_path / "a", grad_accum)
    assert len(full) == 6 * grad_accum
    resumed = _fit(tmp_path / "b", grad_accum, ckpt_path=tmp_path / "a" / "step=4.ckpt")
    assert resumed == full[4 * grad_accum :]


# ---------------------------------------------------------------- tier sampling (mix.tier_alpha)
def test_tier_counts_follow_size_to_the_alpha():
    from ccl.data.datamodule import tier_counts

    sizes = {"gold": 160, "silver": 10, "synthetic": 0}
    assert tier_counts(sizes, 100, 0.0) == {"gold": 50, "silver": 50, "synthetic": 0}
    # alpha 1: the tiers' own proportions (160:10 of 100 -> 94.1 / 5.9, rounded by largest remainder)
    assert tier_counts(sizes, 100, 1.0) == {"gold": 94, "silver": 6, "synthetic": 0}
    # alpha 0.5: sqrt(160):sqrt(10) = 4:1
    assert tier_counts(sizes, 100, 0.5) == {"gold": 80, "silver": 20, "synthetic": 0}
    assert sum(tier_counts({"gold": 7, "silver": 3, "synthetic": 2}, 11, 0.3).values()) == 11
    with pytest.raises(ValueError, match="mix.tier_alpha"):
        tier_counts(sizes, 10, 1.5)


def test_draw_spans_equal_tiers_cycle_each_tier_pool():
    from collections import Counter

    from ccl.data.datamodule import draw, draw_spans

    tiers = ["gold"] * 40 + ["silver"] * 4
    rng = np.random.default_rng(0)
    picked = draw_spans(tiers, 20, 0.0, rng)
    assert Counter(tiers[i] for i in picked) == {"gold": 10, "silver": 10}
    # each silver example drawn 10/4 -> 2 or 3 times: whole permutations of its own pool
    assert sorted(Counter(int(i) for i in picked if tiers[i] == "silver").values()) == [2, 2, 3, 3]
    # alpha 1 and a single tier are the plain pool draw, so rows without silver keep their plans
    assert draw_spans(tiers, 20, 1.0, np.random.default_rng(3)).tolist() == \
        draw(44, 20, np.random.default_rng(3)).tolist()
    assert draw_spans(["gold"] * 9, 5, 0.0, np.random.default_rng(3)).tolist() == \
        draw(9, 5, np.random.default_rng(3)).tolist()


def test_plan_balances_span_tiers_with_tier_alpha_zero():
    docs = examples("doc", [60] * 40)
    spans = examples("span", [20] * 44, first_id=10_000)
    for i, ex in enumerate(spans):
        ex["tier"] = "gold" if i < 40 else "silver"
    mix = dict(span_warmup_steps=2, span_share=0.5)
    by_size = dm_for(docs, spans, MixConfig(**mix, tier_alpha=1.0), max_steps=0, max_epochs=2).report()
    balanced = dm_for(docs, spans, MixConfig(**mix, tier_alpha=0.0), max_steps=0, max_epochs=2).report()
    # 40 span draws per epoch: by size silver gets 40 * 4/44 = 4; balanced it gets half
    assert by_size["epochs"]["0"]["span_tiers"] == {"gold": 36, "silver": 4}
    assert balanced["epochs"]["0"]["span_tiers"] == {"gold": 20, "silver": 20}
    assert balanced["epochs"]["warmup"]["span_tiers"] == {"gold": 8, "silver": 8}
    assert balanced["epochs"]["0"]["examples"] == by_size["epochs"]["0"]["examples"] == {"doc": 40, "span": 40}


class CountingStore(list):
    """A span store that records which examples were read as dicts."""

    def __init__(self, items):
        super().__init__(items)
        self.read: set[int] = set()
        self.lengths = [ex["length"] for ex in items]
        self.tiers = [ex.get("tier") for ex in items]

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def test_span_examples_are_read_only_when_drawn():
    """Issue 24: a full-code-space tier has ~245k span examples and a plan draws ~0.3%; the
    data module copied (and so materialised) all of them up front."""
    docs, spans = realistic(n_docs=20, n_spans=5000)
    store = CountingStore(spans)
    dm = dm_for(docs, store, MixConfig(span_warmup_steps=0, span_share=0.5), max_steps=10)
    loader = dm.train_dataloader()
    batches = list(loader)
    drawn = {i - dm.n_docs for b in dm.plan for i in b.indices if i >= dm.n_docs}
    assert store.read == drawn and 0 < len(drawn) < len(spans) // 20
    assert sum(len(b["input_ids"]) for b in batches) == sum(len(b.indices) for b in dm.plan)
    plain = dm_for(docs, spans, MixConfig(span_warmup_steps=0, span_share=0.5), max_steps=10)
    assert [b.indices for b in plain.plan] == [b.indices for b in dm.plan]  # the same plan
