"""Issue 12 (fast and lean): backward stops at the lowest LoRA layer with code tokens on,
answer-only logits give the full-logits loss, and the trained code rows are saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from ccl.config import BackboneConfig, LoraConfig, TinyBackboneConfig, TrainConfig
from ccl.data.datamodule import PaddingCollator
from ccl.data.packing import PackingCollator
from ccl.model.backbone import apply_training_mode, load_backbone
from ccl.model.code_tokens import add_code_tokens, code_head_parameters
from ccl.model.module import answer_positions, causal_lm_forward, model_inputs, save_trained

LAYERS = 4
CORPUS = [
    "Type 2 diabetes mellitus without complications E11.9",
    "Essential (primary) hypertension I10",
    "Unspecified asthma, uncomplicated J45.909",
    "Acute bronchitis, unspecified J20.9",
] * 8
DESCRIPTIONS = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential (primary) hypertension",
    "J45.909": "Unspecified asthma, uncomplicated",
}


def tiny_cfg() -> BackboneConfig:
    return BackboneConfig(name="tiny", kind="tiny", dtype="float32", use_chat_template=False, max_length=64,
        tiny=TinyBackboneConfig(hidden_size=64, num_layers=LAYERS, num_heads=4, intermediate_size=128, vocab_size=300))


def lora_cfg(top_layers: int | None = 2) -> TrainConfig:
    return TrainConfig(mode="lora", lora=LoraConfig(r=4, alpha=8, dropout=0.0, top_layers=top_layers))


def code_model(cache: Path, side: str, top_layers: int | None = 2):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    assert model.config.tie_word_embeddings
    ids = add_code_tokens(model, tok, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    return apply_training_mode(model, lora_cfg(top_layers), code_token_side=side), tok, ids


def save_and_fresh_base(model, tok, out_dir: Path, cache: Path):
    """Save a trained code-token model as the train stage does; return its folder and a fresh
    tiny base with the same code tokens added (what a reload puts the adapter on)."""

    class Holder:
        pass

    holder = Holder()
    holder.model, holder.tokenizer = model, tok
    out = save_trained(holder, out_dir)
    base, tok2 = load_backbone(tiny_cfg(), cache, CORPUS)
    add_code_tokens(base, tok2, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    return out, base


def layers_reached(model, batch: torch.Tensor) -> set[int]:
    reached: set[int] = set()
    layers = model.get_base_model().model.layers
    handles = [layer.register_full_backward_hook(lambda m, gi, go, i=i: reached.add(i))
               for i, layer in enumerate(layers)]
    model(input_ids=batch, labels=batch).loss.backward()
    for h in handles:
        h.remove()
    return reached


@pytest.mark.parametrize(("side", "expected"), [("output", {2, 3}), ("both", set(range(LAYERS)))])
def test_backward_stops_at_lowest_lora_layer(cache, side, expected):
    # LoRA on the top 2 of 4 layers of a tied-embedding model with code tokens: trainable
    # input rows ("both") pull backward through every layer; output rows alone do not.
    model, _, ids = code_model(cache, side)
    batch = torch.tensor([[5, 6, ids[0], 7, ids[2], 8]])
    assert layers_reached(model, batch) == expected
    (head,) = code_head_parameters(model)
    assert head.grad is not None and head.grad.abs().sum() > 0
    embed = model.get_input_embeddings()
    trainable_input = [n for n, p in embed.named_parameters() if p.requires_grad]
    assert (trainable_input == []) == (side == "output")


def test_code_token_side_rejects_unknown(cache):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    add_code_tokens(model, tok, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    with pytest.raises(ValueError, match="code_token_side"):
        apply_training_mode(model, lora_cfg(), code_token_side="input")


def test_code_rows_train_save_and_reload(cache, tmp_path):
    model, tok, ids = code_model(cache, "output")
    embed_before = model.get_input_embeddings().weight[ids].detach().clone()
    batch = torch.tensor([[5, 6, ids[0], 7, ids[2], 8]])
    probe = torch.tensor([[5, 6, 7]])
    head_before = model(input_ids=probe).logits[0, -1, ids].detach().clone()
    (head,) = code_head_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=probe).logits[0, -1, ids]
    assert not torch.allclose(trained, head_before)  # the code rows of the head moved
    # The input rows stay at their description-mean start.
    assert torch.equal(model.get_input_embeddings().weight[ids], embed_before)

    out, base = save_and_fresh_base(model, tok, tmp_path / "model", cache)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        again = reloaded(input_ids=probe).logits[0, -1, ids]
    assert torch.allclose(again, trained, atol=1e-6)


def examples(tok) -> list[dict]:
    out = []
    for prompt, answer in (("hypertension I10", " I10"), ("asthma uncomplicated", " J45.909 I10"),
                           ("Type 2 diabetes mellitus without complications", " E11.9")):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        out.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return out


@pytest.mark.parametrize("packed", [False, True])
def test_answer_only_logits_give_the_full_loss(cache, packed):
    model, tok, _ = code_model(cache, "output")
    model.eval()
    exs = examples(tok)
    collator = (PackingCollator(64, tok.pad_token_id, attn_implementation="sdpa", loss_positions_only=False)
                if packed else PaddingCollator(tok.pad_token_id))
    batch = collator(exs)
    full = causal_lm_forward(model, model_inputs(batch, "all"))
    answer = causal_lm_forward(model, model_inputs(batch, "answer"))
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    assert answer.logits.shape == (n_targets, full.logits.shape[-1])
    assert full.logits.shape[:2] == batch["input_ids"].shape
    assert abs(float(full.loss) - float(answer.loss)) < 1e-5
    # The kept logits are the full logits at the kept positions.
    keep, targets = answer_positions(batch["labels"])
    assert torch.allclose(full.logits[keep], answer.logits, atol=1e-5)
    assert targets.shape == (n_targets,)


def test_answer_loss_never_hands_transformers_a_tensor_logits_to_keep(cache):
    # Issue 22: a tensor logits_to_keep means positions per row before transformers 5.2x
    # (hidden_states[:, logits_to_keep, :] -> IndexError for a 2D mask on 5.16-5.19) and a
    # mask after. The answer-position loss must not depend on either reading: the model
    # is called as every version calls it, and the loss and its gradients equal the full
    # path's, through peft (code rows on the output side) and the frozen-prefix cache.
    from ccl.model.frozen_prefix import FrozenPrefix, first_trainable_layer

    model, tok, _ = code_model(cache, "output", top_layers=2)
    seen = []
    base = model.get_base_model()
    original = base.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("logits_to_keep", 0))
        if isinstance(kwargs.get("logits_to_keep"), torch.Tensor):
            raise IndexError("too many indices for tensor of dimension 3 (transformers < 5.2x)")
        return original(*args, **kwargs)

    base.forward = spy
    batch = PaddingCollator(tok.pad_token_id)(examples(tok))
    module_cfg = lora_cfg(2)

    def loss_and_grads(prefix, positions):
        from ccl.model.module import SFTModule

        module = SFTModule(model, TrainConfig(mode="lora", lora=module_cfg.lora), loss_positions=positions)
        module.prefix = prefix
        module.train()
        model.zero_grad()
        loss = module(batch).loss
        loss.backward()
        return float(loss), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full_loss, full_grads = loss_and_grads(None, "all")
    for prefix in (None, FrozenPrefix(model, first_trainable_layer(model))):
        loss, grads = loss_and_grads(prefix, "answer")
        assert abs(loss - full_loss) < 1e-5
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, full_grads, strict=True))
    assert seen and all(isinstance(k, int) for k in seen)


def test_loss_positions_rejects_unknown():
    with pytest.raises(ValueError, match="loss_positions"):
        model_inputs({"input_ids": torch.zeros(1, 2, dtype=torch.long)}, "prompt")


def test_merge_code_rows_unties_and_keeps_the_outputs(cache, tmp_path):
    from transformers import AutoModelForCausalLM

    from ccl.model.code_tokens import merge_code_rows

    model, tok, ids = code_model(cache, "output")
    (head,) = code_head_parameters(model)
    with torch.no_grad():
        head.add_(torch.randn_like(head))  # trained output rows, different from the input rows
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    model.eval()
    batch = torch.tensor([[5, 6, ids[0], 7, ids[2], 8]])
    with torch.no_grad():
        expected = model(input_ids=batch).logits
    embed_rows = model.get_input_embeddings().weight[ids].detach().clone()
    merged = merge_code_rows(model)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not reloaded.config.tie_word_embeddings
    assert reloaded.lm_head.weight.data_ptr() != reloaded.get_input_embeddings().weight.data_ptr()
    assert torch.equal(reloaded.get_input_embeddings().weight[ids], embed_rows)  # input rows untouched
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=batch).logits, expected, atol=1e-4)



def test_frozen_prefix_cache_gives_the_full_forward_loss_and_gradients(cache):
    from ccl.model.frozen_prefix import FrozenPrefix, first_trainable_layer
    from ccl.model.module import SFTModule

    model, tok, _ = code_model(cache, "output", top_layers=2)
    assert first_trainable_layer(model) == LAYERS - 2
    batch = PaddingCollator(tok.pad_token_id)(examples(tok))
    module = SFTModule(model, lora_cfg(2))
    module.train()

    def loss_and_grads():
        model.zero_grad()
        loss = module(batch).loss
        loss.backward()
        return float(loss), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain_loss, plain_grads = loss_and_grads()
    module.prefix = FrozenPrefix(model, first_trainable_layer(model))
    for _ in range(2):  # the second step is served from the cache
        loss, grads = loss_and_grads()
        assert abs(loss - plain_loss) < 1e-5
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, plain_grads, strict=True))
    assert (module.prefix.computed, module.prefix.served) == (3, 3)
    assert len(model.get_base_model().model.layers) == LAYERS  # the full stack is back after each step


def test_frozen_prefix_is_off_when_the_lower_layers_train(cache):
    from ccl.model.frozen_prefix import first_trainable_layer

    assert first_trainable_layer(code_model(cache, "both", top_layers=2)[0]) is None  # input-side code rows
    assert first_trainable_layer(code_model(cache, "output", top_layers=None)[0]) == 0  # LoRA on layer 0: none frozen
