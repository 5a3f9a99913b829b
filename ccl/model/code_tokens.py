"""One new vocabulary token per label-space code (beyond the paper).

Each code string (``E11.9``) becomes a single added token, so decoding gives the
code back verbatim and :func:`ccl.icd.codes.extract_codes` finds it. The new
input-embedding row starts as the mean of the rows of the code description's
tokens (and the output-head row likewise when the head is not tied), which makes
codes learnable in far fewer steps than a random row.

Under LoRA the new rows are trained through peft's ``trainable_token_indices``
(see :func:`ccl.model.backbone.apply_training_mode`); :func:`code_head_parameters`
names the parameters that hold the output-head rows so the optimiser can give
them ``train.code_head_lr``. The ids are kept in ``model.config`` so they
survive ``save_pretrained``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tokenizers import AddedToken
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ccl.icd.codes import canonical_code

CONFIG_KEY = "ccl_code_token_ids"
DELTA_PARAM = "token_adapter.trainable_tokens_delta"


def code_token_ids(model: nn.Module) -> list[int]:
    """Ids of the code tokens added to ``model`` (empty when none were)."""
    config = getattr(model, "config", None)
    return list(getattr(config, CONFIG_KEY, None) or [])


def add_code_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    codes: Sequence[str],
    describe: Callable[[str], str],
) -> list[int]:
    """Add one token per code, resize and initialise the embeddings; return the codes' token ids.

    Must run before :func:`apply_training_mode` (peft wraps the rows that exist then).
    Codes are canonicalised; ids are returned in the order of ``codes``.
    """
    if hasattr(model, "peft_config"):
        raise TypeError("add_code_tokens: call it on the base model, before apply_training_mode")
    canon = list(dict.fromkeys(canonical_code(code) for code in codes))
    # Tokenise descriptions with the vocabulary as it is before the codes join it.
    description_ids = {code: _text_ids(tokenizer, describe(code) or "", code) for code in canon}
    known = tokenizer.get_vocab()
    old_size = model.get_input_embeddings().weight.shape[0]
    # single_word: "E11.9" must not match inside "E11.90"; normalized=False keeps the text verbatim.
    tokenizer.add_tokens(
        [AddedToken(code, single_word=True, normalized=False, special=False) for code in canon]
    )
    ids = tokenizer.convert_tokens_to_ids(canon)
    model.resize_token_embeddings(max(len(tokenizer), old_size), mean_resizing=False)
    # Embedding matrices may have spare rows beyond len(tokenizer): "new" means new to the vocabulary.
    new = [(code, i) for code, i in zip(canon, ids, strict=True) if code not in known]
    with torch.no_grad():
        _init_rows(model.get_input_embeddings().weight, new, description_ids)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            _init_rows(head.weight, new, description_ids)
    id_of = dict(zip(canon, ids, strict=True))
    setattr(model.config, CONFIG_KEY, sorted(set(code_token_ids(model)) | set(ids)))
    return [id_of[canonical_code(code)] for code in codes]


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str, code: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
    return ids or tokenizer(code, add_special_tokens=False)["input_ids"]


def _init_rows(
    weight: torch.Tensor, new: list[tuple[str, int]], description_ids: dict[str, list[int]]
) -> None:
    for code, row in new:
        source = torch.tensor(description_ids[code], device=weight.device)
        weight[row] = weight[source].mean(dim=0)


def code_head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that hold the output-head rows of the code tokens (LoRA mode).

    With tied embeddings the input and output rows are one tensor, so that
    tensor is returned. Empty when the model has no trainable code rows (for
    instance in full fine-tuning, where the rows live inside the whole matrix).
    """
    named = dict(model.named_parameters())
    deltas = {name: p for name, p in named.items() if DELTA_PARAM in name and p.requires_grad}
    head = {name: p for name, p in deltas.items() if "lm_head" in name}
    return list((head or deltas).values())


def merge_code_rows(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model with the LoRA weights and the trained code rows merged in.

    ``model`` is a peft model trained as every run trains it (only the output rows of its code tokens): its
    code tokens' output rows (``lm_head``) differ from their input rows. When the
    backbone ties input and output embeddings (SmolLM2), merging those rows into
    the shared matrix would also overwrite the input rows, so the head is untied
    first (its own copy of the matrix; ``config.tie_word_embeddings=False``). The
    result saves with ``save_pretrained`` as an ordinary full model (e.g. for
    vLLM). ``model`` itself is modified (its adapters are unloaded); raises
    ``TypeError`` if it is not a peft model.
    """
    if not hasattr(model, "merge_and_unload"):
        raise TypeError("merge_code_rows: expected a peft model (a LoRA adapter), got a plain model")
    base = model.get_base_model()
    head, embed = base.get_output_embeddings(), base.get_input_embeddings()
    head_linear, embed_weight = _unwrapped(head), _unwrapped(embed).weight
    if head_linear is not None and head_linear.weight is embed_weight:
        head_linear.weight = nn.Parameter(embed_weight.detach().clone(), requires_grad=False)
        base.config.tie_word_embeddings = False
        if hasattr(base.config, "get_text_config"):
            base.config.get_text_config().tie_word_embeddings = False
    merged = model.merge_and_unload()
    return merged


def _unwrapped(module: nn.Module | None) -> nn.Module | None:
    """The plain layer inside peft's wrappers (``TrainableTokensWrapper`` -> layer -> base layer)."""
    while module is not None:
        inner = module._modules.get("token_adapter") or module._modules.get("base_layer")
        if inner is None:
            return module
        module = inner
    return module
