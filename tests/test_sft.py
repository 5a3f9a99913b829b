"""SFT example building: prompt rendering, BOS handling, answer-only labels, note truncation."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from ccl.config import BackboneConfig, TinyBackboneConfig
from ccl.data.prompts import SYSTEM, Example, document_example, span_example
from ccl.data.sft import IGNORE_INDEX, NOTE_MARKER, tokenize_example, tokenize_examples
from ccl.generation.chat import encode_prompts, plain_prompt, render_prompt
from ccl.model.tiny import build_tiny

CODIESP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp" / "train"
DESCRIBE = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential (primary) hypertension",
}.get
NOTE = (
    "Patient is a 64 year old man with type 2 diabetes on metformin. Blood pressure 162/95, "
    "essential hypertension noted. Denies chest pain. Family history of asthma. "
) * 6
CHATML = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def doc_example(note: str = NOTE) -> Example:
    return document_example(
        "evidence", note, ["type 2 diabetes", "essential hypertension"], ["E11.9", "I10"], DESCRIBE
    )


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The tiny backbone's tokenizer (no BOS added, no chat template)."""
    cfg = BackboneConfig(name="tiny", kind="tiny", max_length=512,
        tiny=TinyBackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=600))
    ex = doc_example()
    corpus = [NOTE, SYSTEM, ex.answer, *(m["content"] for m in ex.messages)] * 20
    return AutoTokenizer.from_pretrained(build_tiny(cfg, corpus, tmp_path_factory.mktemp("cache")))


@pytest.fixture()
def bos_tok(tok):
    """The same tokenizer, made to add BOS and to carry a chat template that writes BOS too."""
    t = AutoTokenizer.from_pretrained(tok.name_or_path)
    t.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", t.bos_token_id)]
    )
    t.chat_template = CHATML
    assert t("x").input_ids[0] == t.bos_token_id
    return t


def test_plain_prompt_format():
    msgs = [{"role": "system", "content": "S."}, {"role": "user", "content": "U?"}]
    assert plain_prompt(msgs) == "### System:\nS.\n\n### User:\nU?\n\n### Assistant:\n"


def test_chat_template_used_and_bos_written_once(bos_tok):
    msgs = [{"role": "system", "content": "S."}, {"role": "user", "content": "U?"}]
    text = render_prompt(bos_tok, msgs, use_chat_template=True)
    assert text == "<s><|system|>\nS.\n<|user|>\nU?\n<|assistant|>\n"
    ids = encode_prompts(bos_tok, [text, "plain text"])
    bos = bos_tok.bos_token_id
    assert ids[0][0] == bos and ids[0][1] != bos  # the template's BOS, not a second one
    assert (
        ids[1][0] == bos and ids[1][1:] == bos_tok("plain text", add_special_tokens=False).input_ids
    )
    # use_chat_template=False ignores the template
    assert render_prompt(bos_tok, msgs, use_chat_template=False) == plain_prompt(msgs)


def test_missing_chat_template_warns_and_uses_plain(tok):
    msgs = [{"role": "user", "content": "U?"}]
    with pytest.warns(UserWarning, match="no chat template"):
        assert render_prompt(tok, msgs, use_chat_template=True) == plain_prompt(msgs)


def test_labels_cover_answer_and_eos_only(tok):
    ex = span_example("poorly controlled type 2 diabetes", "E11.9", DESCRIBE)
    out = tokenize_example(tok, ex, use_chat_template=False, max_length=512)
    prompt_ids = tok(plain_prompt(ex.messages), add_special_tokens=False).input_ids
    answer_ids = tok(ex.answer, add_special_tokens=False).input_ids
    assert out["input_ids"] == prompt_ids + answer_ids + [tok.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [tok.eos_token_id]
    assert out["length"] == len(out["input_ids"]) and out["prompt_length"] == len(prompt_ids)
    assert out["kind"] == "span" and not out["truncated"]
    labelled = [t for t in out["labels"] if t != IGNORE_INDEX]
    assert (
        tok.decode(labelled, skip_special_tokens=True)
        == "E11.9 - Type 2 diabetes mellitus without complications"
    )


def test_batched_equals_one_by_one(bos_tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exs = [
            doc_example(),
            span_example("high blood pressure", "I10", DESCRIBE),
            doc_example(NOTE[:80]),
        ]
        batched, stats = tokenize_examples(bos_tok, exs, use_chat_template=True, max_length=512)
        assert batched == [tokenize_example(bos_tok, e, True, 512) for e in exs]
    assert all(
        b["input_ids"][0] == bos_tok.bos_token_id and b["input_ids"][1] != bos_tok.bos_token_id
        for b in batched
    )
    assert stats.examples == {"doc": 2, "span": 1} and not stats.truncated
    assert stats.tokens == sum(b["length"] for b in batched)
    assert stats.loss_tokens == sum(sum(t != IGNORE_INDEX for t in b["labels"]) for b in batched)


@pytest.mark.parametrize("chat", [False, True])
def test_truncation_cuts_the_note_tail_only(tok, bos_tok, chat):
    t = bos_tok if chat else tok
    ex = doc_example()
    full = tokenize_example(t, ex, chat, max_length=512)
    assert not full["truncated"]
    max_length = full["length"] - 57
    out, stats = tokenize_examples(t, [ex], chat, max_length)
    (cut,) = out
    assert cut["truncated"] and stats.truncated == {"doc": 1}
    assert max_length - 3 <= cut["length"] <= max_length
    # answer untouched
    n_answer = full["length"] - full["prompt_length"]
    assert cut["input_ids"][-n_answer:] == full["input_ids"][-n_answer:]
    assert cut["labels"][-n_answer:] == full["labels"][-n_answer:]
    assert cut["labels"][: cut["prompt_length"]] == [IGNORE_INDEX] * cut["prompt_length"]
    # the prompt is exactly the prompt of a shorter note (a prefix of the original)
    prompt_text = t.decode(cut["input_ids"][: cut["prompt_length"]])
    instruction, note = ex.messages[1]["content"].split(NOTE_MARKER)
    assert instruction in prompt_text
    kept = prompt_text.split(NOTE_MARKER)[1]
    kept = kept[
        : kept.rindex("\n### Assistant") if not chat else kept.rindex("\n<|assistant|>")
    ].rstrip("\n")
    assert 0 < len(kept) < len(note) and note.startswith(kept)
    assert stats.tokens_removed == full["prompt_length"] - cut["prompt_length"]


def test_answer_too_long_is_a_clear_error(tok):
    ex = doc_example()
    answer_len = len(tok(ex.answer, add_special_tokens=False).input_ids) + 1
    with pytest.raises(
        ValueError, match=r"example 0 \(doc\): answer of \d+ tokens does not fit max_length"
    ):
        tokenize_examples(tok, [ex], False, max_length=answer_len + 5)


def test_document_templates_mark_the_note():
    for task in ("evidence", "codes_only", "cot"):
        ex = document_example(task, "the note", [], ["I10"], DESCRIBE)
        assert ex.messages[-1]["content"].endswith(NOTE_MARKER + "the note")


def _codiesp_examples(n: int) -> list[Example]:
    spans: dict[str, list[tuple[int, str, str]]] = {}
    with (CODIESP / "trainX.tsv").open(encoding="utf-8") as f:
        for doc_id, kind, code, text, offsets in csv.reader(f, delimiter="\t"):
            if kind == "DIAGNOSTICO" and ";" not in offsets:
                spans.setdefault(doc_id, []).append((int(offsets.split()[0]), text, code.upper()))
    out = []
    for doc_id in sorted(spans)[:n]:
        note = (CODIESP / "text_files" / f"{doc_id}.txt").read_text(encoding="utf-8")
        ev = sorted(spans[doc_id])
        out.append(
            document_example("evidence", note, [e[1] for e in ev], [e[2] for e in ev], lambda c: "")
        )
    return out


@pytest.mark.skipif(
    not CODIESP.is_dir(), reason="shared CodiEsp data not found at ../shared/data/codiesp"
)
def test_real_codiesp_notes_fit_and_keep_their_answers(tok):
    exs = _codiesp_examples(12)
    out, stats = tokenize_examples(tok, exs, False, max_length=1024)
    assert all(o["length"] <= 1024 for o in out)
    assert stats.truncated["doc"] >= 1  # real notes are longer than 1024 tiny-tokenizer tokens
    for ex, o in zip(exs, out, strict=True):
        answer = [t for t in o["labels"] if t != IGNORE_INDEX]
        assert tok.decode(answer, skip_special_tokens=True) == ex.answer


def test_examples_are_stored_once_in_one_array(bos_tok, monkeypatch):
    """Issue 24: tokenised span examples were Python lists of ints (~6 GB for the full code
    space); they are now one int32 array, tokenised a chunk at a time, read back as before."""
    import ccl.data.sft as sft

    monkeypatch.setattr(sft, "TOKENIZE_CHUNK", 2)  # several chunks
    exs = [span_example(f"finding number {i}", "I10", DESCRIBE) for i in range(5)] + [doc_example()]
    store, stats = tokenize_examples(bos_tok, exs, use_chat_template=True, max_length=512)
    assert isinstance(store, sft.TokenizedExamples) and len(store) == 6
    assert store._sealed.dtype.itemsize == 4 and store._sealed.size == sum(store.lengths) == stats.tokens
    assert list(store) == [tokenize_example(bos_tok, e, True, 512) for e in exs]
    assert store[-1]["kind"] == "doc" and store.tiers[0] == exs[0].tier
