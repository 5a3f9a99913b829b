"""Issue 24, "each code row stored once": under LoRA the code tokens' rows exist once each (no
copy of peft's original rows, no merged whole-matrix copy), with peft's values and gradients,
and a trained save/load round trip keeps both."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import get_peft_model
from test_train_perf import CORPUS, DESCRIPTIONS, code_model, lora_cfg, save_and_fresh_base, tiny_cfg

from ccl.model.backbone import load_backbone, lora_config
from ccl.model.code_rows import CodeRowsLayer, code_row_storage, load_adapter, store_code_rows_once
from ccl.model.code_tokens import add_code_tokens, code_head_parameters, merge_code_rows

WIDTH = 64


@pytest.mark.parametrize("side", ["output", "both"])
def test_each_code_row_is_stored_once(cache, side):
    model, _, ids = code_model(cache, side)
    storage = code_row_storage(model)
    # one trained row per code and the base matrix's row (the frozen input row): no third copy
    assert storage == {"trained": len(ids) * WIDTH, "original_copies": 0, "base_rows": len(ids) * WIDTH}
    assert not [n for n, b in model.named_buffers() if "trainable_tokens_original" in n and b.numel()]
    assert any(isinstance(m, CodeRowsLayer) for m in model.modules())


def _peft_and_ours(cache, side):
    """The same wrapped model twice: peft's own layers, and CCL's (rows stored once)."""
    base, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    ids = add_code_tokens(base, tok, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    theirs = get_peft_model(base, lora_config(base, lora_cfg(), side))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.requires_grad:  # trained rows and LoRA away from their start
                p.add_(torch.randn_like(p) * 0.1)
    ours = copy.deepcopy(theirs)
    assert store_code_rows_once(ours) >= 1
    return theirs, ours, ids


@pytest.mark.parametrize("side", ["output", "both"])
def test_code_rows_give_peft_values_and_gradients_bit_for_bit(cache, side):
    theirs, ours, ids = _peft_and_ours(cache, side)
    batch = torch.tensor([[5, 6, ids[0], 7, ids[2], 8, ids[1]], [ids[1], 9, 10, ids[0], 11, 12, 13]])
    outputs = []
    for model in (theirs, ours):
        model.zero_grad()
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        outputs.append((out.logits.detach(), grads))
    (logits_a, grads_a), (logits_b, grads_b) = outputs
    assert torch.equal(logits_a, logits_b)  # bit for bit: runs keep the old code's numbers
    assert grads_a.keys() == grads_b.keys() and any("trainable_tokens_delta" in n for n in grads_a)
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    with torch.no_grad():  # the input embeddings: the same rows looked up (no arithmetic)
        assert torch.equal(theirs.get_input_embeddings()(batch), ours.get_input_embeddings()(batch))


def test_trained_round_trip_keeps_the_rows_once(cache, tmp_path):
    model, tok, ids = code_model(cache, "output")
    (head,) = code_head_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = torch.tensor([[5, 6, ids[0], 7, ids[2], 8]])
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    model.eval()
    probe = torch.tensor([[5, ids[1], 7]])
    with torch.no_grad():
        trained = model(input_ids=probe).logits

    out, base = save_and_fresh_base(model, tok, tmp_path / "model", cache)
    reloaded = load_adapter(base, out).eval()
    assert code_row_storage(reloaded)["original_copies"] == 0
    (head2,) = [p for n, p in reloaded.named_parameters() if "trainable_tokens_delta" in n]
    assert torch.equal(head2, head.detach())
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=probe).logits, trained, atol=1e-6)
    merged = merge_code_rows(reloaded)  # the export for vLLM still merges the trained rows in
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=probe).logits, trained, atol=1e-5)
    assert torch.equal(merged.lm_head.weight[ids], head.detach())


def test_unmerge_is_refused_with_a_clear_error(cache):
    model, _, _ = code_model(cache, "output")
    layer = next(m for m in model.modules() if isinstance(m, CodeRowsLayer))
    layer.merge()
    with pytest.raises(RuntimeError, match="original rows are not kept"):
        layer.unmerge()
