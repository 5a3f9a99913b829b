"""The ``tiny`` backbone: a small Llama-style causal LM built from the config.

A byte-level BPE tokenizer is trained on the texts handed in, a
``LlamaForCausalLM`` is initialised from a fixed seed, and both are saved under
``cache_dir/backbones/tiny-<hash>``. The hash covers the architecture fields and
the corpus, so the same inputs reuse the same directory (and give the same
weights when rebuilt).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ccl.config import BackboneConfig, tiny_settings
from ccl.utils.atomic import atomic_dir
from ccl.utils.verify import cached_folder, write_record

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
INIT_SEED = 1234
# Bump when the build recipe changes so stale caches are not reused.
BUILD_VERSION = 2
# Used when the caller hands in no text: the tokenizer still needs something to learn from.
FALLBACK_CORPUS = (
    "Type 2 diabetes mellitus without complications. E11.9",
    "Essential (primary) hypertension. I10",
    "Patient denies chest pain; history of asthma. J45.909",
)


def _arch(cfg: BackboneConfig) -> dict[str, int]:
    """The architecture: ``backbone.tiny.*`` (:func:`ccl.config.tiny_settings`) and ``max_length``."""
    tiny = tiny_settings(cfg)
    return {
        "vocab_size": int(tiny.vocab_size),
        "hidden_size": int(tiny.hidden_size),
        "num_layers": int(tiny.num_layers),
        "num_heads": int(tiny.num_heads),
        "intermediate_size": int(tiny.intermediate_size),
        "max_length": int(cfg.max_length),
    }


def tiny_hash(cfg: BackboneConfig, texts: list[str]) -> str:
    """Content hash of the build inputs (architecture, corpus, recipe version)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": BUILD_VERSION, **_arch(cfg)}, sort_keys=True).encode())
    for text in texts:
        digest.update(len(text.encode()).to_bytes(8, "little"))
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (no BOS/EOS added automatically)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def _init_model(cfg: BackboneConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    tiny = tiny_settings(cfg)
    if tiny.hidden_size % tiny.num_heads:
        raise ValueError(
            f"backbone {cfg.name!r}: backbone.tiny.hidden_size {tiny.hidden_size} is not divisible by "
            f"backbone.tiny.num_heads {tiny.num_heads}"
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # fork_rng: a fixed init seed without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = LlamaForCausalLM(config)
        # Rows of norm ~1 instead of ~0.02*sqrt(d): with the head tied and the final
        # norm frozen (LoRA), logits are bounded by |h|*|row|, and the default init
        # caps them near 0.3*sqrt(d) -- too flat for a LoRA run to fit its answers.
        nn.init.normal_(model.get_input_embeddings().weight, std=tiny.hidden_size**-0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny(cfg: BackboneConfig, corpus: Iterable[str], cache_dir: Path) -> Path:
    """Build (or reuse) the tiny backbone for ``cfg`` and ``corpus``; return its directory."""
    texts = [t for t in corpus if t and t.strip()] or list(FALLBACK_CORPUS)
    out = Path(cache_dir) / "backbones" / f"tiny-{tiny_hash(cfg, texts)}"
    if cached_folder(out, ("config.json", "tokenizer.json")):  # a damaged entry is rebuilt
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, tiny_settings(cfg).vocab_size)
    model = _init_model(cfg, tokenizer)
    # A concurrent or killed build never leaves a half-written cache entry behind.
    with atomic_dir(out, done_marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_record(tmp)  # sizes and sha256 of its files, checked when the cache is read
    return out
