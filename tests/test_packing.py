"""Packing collator: first-fit decreasing rows, boundaries, and the padded loss exactly, isolated."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from ccl.config import BackboneConfig, MixConfig, TinyBackboneConfig, TrainConfig
from ccl.data.datamodule import MixDataModule, PaddingCollator
from ccl.data.packing import (
    IGNORE_INDEX,
    LOSS_KEYS,
    PACKED_SDPA,
    PackingCollator,
    block_causal_mask,
    first_fit_decreasing,
    use_packed_attention,
)
from ccl.model.module import causal_lm_forward, model_inputs
from ccl.model.tiny import build_tiny

PAD = 0
LENGTHS = (3, 41, 7, 90, 2, 15)  # very different lengths; 2 tokens: a one-target example


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    cfg = BackboneConfig(name="tiny", kind="tiny", max_length=256, tiny=TinyBackboneConfig(
        hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, vocab_size=300))
    corpus = ["patient denies chest pain; history of asthma and type 2 diabetes"] * 20
    return build_tiny(cfg, corpus, tmp_path_factory.mktemp("cache"))


def load(tiny_dir, attn: str):
    """The tiny model with weights re-drawn large, so every output depends on its context."""
    base = "sdpa" if attn == PACKED_SDPA else attn
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, attn_implementation=base)
    if attn == PACKED_SDPA:
        use_packed_attention(model)
        assert model.config._attn_implementation == PACKED_SDPA
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def make_examples(lengths=LENGTHS, seed: int = 1, vocab: int = 200) -> list[dict]:
    """Labels on every token: the first token's label is then the one a leak would train."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]
        labels[0] = ids[0]  # a label the loss must never use (nothing predicts a first token)
        out.append({"input_ids": ids, "labels": labels, "length": n})
    return out


def run(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = causal_lm_forward(model, model_inputs(batch, "answer" if "loss_mask" in batch else "all"))
    return out.loss, out.logits


def test_first_fit_decreasing_by_hand():
    # sorted: 5 4 3 3 2 1 -> [5,3] [4,3,1] [2]
    assert first_fit_decreasing([3, 5, 2, 4, 1, 3], 8) == [[1, 0], [3, 5, 4], [2]]
    assert first_fit_decreasing([9, 2, 2], 4) == [[0], [1, 2]]  # too long: a row of its own
    with pytest.raises(ValueError, match="capacity"):
        first_fit_decreasing([1], 0)


def test_rows_positions_labels_and_mask_by_hand():
    exs = [{"input_ids": [11, 12, 13], "labels": [11, 12, 13]},
           {"input_ids": [21, 22, 23, 24, 25], "labels": [-100, 22, 23, 24, 25]},
           {"input_ids": [31, 32], "labels": [31, 32]}]
    batch = PackingCollator(6, PAD)(exs)
    # FFD with room 6: [5-token] then [3-token, 2-token]
    assert batch["input_ids"].tolist() == [[21, 22, 23, 24, 25], [11, 12, 13, 31, 32]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 22, 23, 24, 25], [-100, 12, 13, -100, 32]]
    assert int(batch["num_tokens"]) == 10
    # Loss positions: those whose next token is a target, and those targets in order.
    assert batch["loss_mask"].int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 1, 0]]
    assert batch["loss_targets"].tolist() == [22, 23, 24, 25, 12, 13, 32]
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bool
    assert mask[1, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0],
                                         [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    # A shorter row is padded at its tail: its own segment, never a target.
    short = PackingCollator(4, PAD)(exs[:1] + exs[2:])
    assert short["input_ids"].tolist() == [[11, 12, 13], [31, 32, PAD]]
    assert short["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert short["labels"].tolist() == [[-100, 12, 13], [-100, 32, -100]]
    assert short["attention_mask"][1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_varlen_kernels_get_one_row_and_no_mask_others_no_mask():
    exs = make_examples()
    for attn in ("flash_attention_2", PACKED_SDPA):
        flat = PackingCollator(50, PAD, attn_implementation=attn)(exs)
        assert flat["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in flat
    starts = (flat["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(LENGTHS)
    assert all(flat["labels"][0, s] == IGNORE_INDEX for s in starts)
    eager = PackingCollator(100, PAD, attn_implementation="eager")(exs)
    assert "attention_mask" not in eager and eager["input_ids"].shape[1] <= 100


def test_batch_tokens_is_the_sum_and_errors_name_the_problem():
    assert PackingCollator(8, PAD).batch_tokens([3, 4, 5]) == 12
    with pytest.raises(ValueError, match="empty batch"):
        PackingCollator(8, PAD)([])
    with pytest.raises(ValueError, match="example 1: 2 input_ids but 1 labels"):
        PackingCollator(8, PAD)([{"input_ids": [1], "labels": [1]}, {"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="max_tokens"):
        PackingCollator(0, PAD)


@pytest.mark.parametrize("loss_positions_only", [True, False])
@pytest.mark.parametrize(("attn", "collator_attn"), [
    ("sdpa", "sdpa"),  # 4D block mask, several rows
    ("eager", "eager"),  # transformers' own packed-sequence detection, several rows
    ("sdpa", "flash_attention_2"),  # the flash layout (one row, no mask), run by sdpa detection
    (PACKED_SDPA, PACKED_SDPA),  # one row, one causal SDPA call per example
])
def test_packed_loss_and_gradients_equal_padded(tiny_dir, attn, collator_attn, loss_positions_only):
    model = load(tiny_dir, attn)
    exs = make_examples()
    padded = PaddingCollator(PAD)(exs)
    packed = PackingCollator(100, PAD, collator_attn, loss_positions_only=loss_positions_only)(exs)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    weight = model.model.layers[0].self_attn.q_proj.weight
    loss_padded, _ = run(model, padded)
    grad_padded = torch.autograd.grad(loss_padded, weight)[0]
    loss_packed, logits = run(model, packed)
    grad_packed = torch.autograd.grad(loss_packed, weight)[0]
    assert torch.allclose(loss_packed, loss_padded, atol=1e-5, rtol=1e-5)
    assert torch.allclose(grad_packed, grad_padded, atol=1e-5, rtol=1e-4)
    targets = int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    if loss_positions_only:  # logits only where a target follows
        assert logits.shape == (targets, model.config.vocab_size)
    # Control: the same rows with the boundary labels left in give another loss (the leak is seen).
    leaky = {k: v for k, v in packed.items() if k not in LOSS_KEYS}
    leaky["labels"] = packed["labels"].clone()
    starts = packed["position_ids"] == 0
    leaky["labels"][starts] = packed["input_ids"][starts]
    leaky["labels"][:, 0] = IGNORE_INDEX
    assert not torch.allclose(run(model, leaky)[0], loss_padded, atol=1e-3)


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")


@pytest.mark.parametrize("attn", ["sdpa", "eager", PACKED_SDPA])
def test_changing_one_example_leaves_its_row_neighbour_untouched(tiny_dir, attn):
    model = load(tiny_dir, attn)
    a, b = make_examples((30, 20), seed=2)
    collator = PackingCollator(64, PAD, attn_implementation=attn, loss_positions_only=False)
    changed_a = dict(a, input_ids=[(t * 7) % 190 + 5 for t in a["input_ids"]])
    first = collator([a, b])
    second = collator([changed_a, b])
    assert first["input_ids"].shape == (1, 50)  # one row: a (longer) then b
    with torch.no_grad():
        before = per_token_loss(run(model, first)[1], first["labels"])[0]
        after = per_token_loss(run(model, second)[1], second["labels"])[0]
        assert not torch.allclose(before[:30], after[:30], atol=1e-3)  # a's own loss moves
        assert torch.allclose(before[30:], after[30:], atol=1e-6)  # b's does not
        # Control: with attention across the row (a plain causal row), b's loss would move.
        plain = {"input_ids": first["input_ids"], "position_ids": torch.arange(50)[None]}
        leak_before = per_token_loss(model(**plain, use_cache=False).logits, first["labels"])[0]
        plain["input_ids"] = second["input_ids"]
        leak_after = per_token_loss(model(**plain, use_cache=False).logits, first["labels"])[0]
        assert not torch.allclose(leak_before[30:], leak_after[30:], atol=1e-3)


def test_block_causal_mask_keeps_segments_apart():
    seg = torch.tensor([[0, 0, 1, -1]])
    assert block_causal_mask(seg)[0, 0].int().tolist() == [
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_datamodule_with_packing_batches_by_token_budget():
    docs = [{"input_ids": [7] * n, "labels": [7] * n, "length": n, "prompt_length": 0, "kind": "doc"}
            for n in (60, 55, 50, 45)]
    spans = [{"input_ids": [9] * n, "labels": [9] * n, "length": n, "prompt_length": 0, "kind": "span"}
             for n in (8, 9, 10, 11, 12, 13, 14, 15)]
    train = TrainConfig(batch_size=100, max_batch_tokens=128, grad_accum=1, max_steps=0, max_epochs=1)
    collator = PackingCollator(64, PAD)
    dm = MixDataModule(docs, spans, MixConfig(span_share=0.5, span_warmup_steps=0), train, seed=0,
                       collator=collator)
    batches = list(dm.train_dataloader())
    real = sum(int(b["num_tokens"]) for b in batches)
    assert real == sum(dm.lengths[i] for i in dm.epoch_indices(0))  # every example once, no padding counted
    assert all(int(b["num_tokens"]) <= 128 for b in batches)
    assert all(b["input_ids"].shape[1] <= 64 for b in batches)
    computed = sum(b["input_ids"].numel() for b in batches)
    assert real / computed > 0.9
