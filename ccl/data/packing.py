"""Packing: the examples of a batch concatenated into few full rows, each example kept apart.

:class:`PackingCollator` places a batch's examples into rows of at most
``max_tokens`` tokens by first-fit decreasing, so a batch computes almost no
padding (only the tail of rows shorter than the longest one). Inside a row:

* ``position_ids`` restart at 0 for every example (rotary positions as if alone);
* ``labels`` are ``-100`` on each example's first token: the loss shifts labels
  by one, so without this the previous example's last token would be trained to
  predict the next example's first token;
* attention never crosses examples. How depends on the attention kernel:

  - ``flash_attention_*``: all examples go into ONE row with no mask; transformers
    sees several sequences in the ``position_ids`` and calls the varlen kernel
    (it only does so for a single row, hence the flattening);
  - :data:`PACKED_SDPA` (:func:`use_packed_attention`): the same one-row layout,
    and attention runs as one causal SDPA call per example. This is varlen
    attention where flash-attention is missing (any CPU, a GPU without
    flash-attn): the cost is sum(n^2) over examples, not width^2 per row, and
    with a single row there is no padding at all;
  - ``sdpa``: a 4D boolean block-diagonal causal mask ``(rows, 1, width, width)``,
    which transformers 5 hands to SDPA unchanged;
  - anything else (eager, flex): no mask; transformers builds the block-diagonal
    mask itself from the restarted ``position_ids`` (only without a KV cache:
    call the model with ``use_cache=False``).

Padding at a row's tail is a segment of its own (positions from 0, attending only
to itself), so no attention row is empty. The batch also carries ``num_tokens``,
the real (non-padding) token count, since there is no 2D ``attention_mask`` to
count them from.

With ``loss_positions_only`` (the default) the batch also says where a loss is
taken: ``loss_mask``, a boolean ``(rows, width)`` mask of the positions whose next
token is a target, and ``loss_targets``, those targets.
:func:`ccl.model.module.causal_lm_forward` then projects only those hidden states
onto the vocabulary, so prompt tokens (most of a document example) cost no
``lm_head`` matmul and no softmax; the loss is the same, since the other
positions' logits only ever met ``-100``. Hand the batch to the model through
:func:`ccl.model.module.model_inputs` (``loss_*`` are not transformers arguments).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ccl.data.sft import IGNORE_INDEX

FLASH_PREFIX = "flash_attention"
PACKED_SDPA = "ccl_packed_sdpa"
# Batch keys a causal LM's forward takes (``num_tokens`` is for logging only).
MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "position_ids")
# Batch keys of the answer-position loss (ccl.model.module.causal_lm_forward), not the model's.
LOSS_KEYS = ("loss_mask", "loss_targets")


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` in rows whose lengths sum to at most ``capacity``.

    Longest first, each into the first row with room. An item longer than
    ``capacity`` gets a row of its own.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = int(lengths[i])
        slot = next((r for r, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append([i])
            free.append(capacity - n)
        else:
            rows[slot].append(i)
            free[slot] -= n
    return rows


def _checked(examples: Sequence[Mapping[str, Any]]) -> list[tuple[list[int], list[int]]]:
    if not examples:
        raise ValueError("cannot pack an empty batch")
    out = []
    for k, ex in enumerate(examples):
        ids, labels = list(ex["input_ids"]), list(ex["labels"])
        if not ids:
            raise ValueError(f"example {k} of the batch has no tokens")
        if len(ids) != len(labels):
            raise ValueError(f"example {k}: {len(ids)} input_ids but {len(labels)} labels")
        out.append((ids, labels))
    return out


class PackingCollator:
    """Packs a batch into rows of at most ``max_tokens`` (module docstring).

    ``attn_implementation`` is the model's (``model.config._attn_implementation``):
    it decides how attention is kept per example.
    """

    def __init__(self, max_tokens: int, pad_token_id: int, attn_implementation: str = "sdpa",
                 loss_positions_only: bool = True) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.pad_token_id = int(pad_token_id)
        self.attn_implementation = str(attn_implementation)
        self.loss_positions_only = bool(loss_positions_only)

    @property
    def flatten(self) -> bool:
        """One row per batch: for varlen kernels (flash-attention detects packing in one row only)."""
        return self.attn_implementation.startswith(FLASH_PREFIX) or self.attn_implementation == PACKED_SDPA

    def batch_tokens(self, lengths: Sequence[int]) -> int:
        return int(sum(lengths))

    def rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """Example indices per row."""
        if self.flatten:
            return [sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))]
        return first_fit_decreasing(lengths, self.max_tokens)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = _checked(examples)
        rows = self.rows([len(ids) for ids, _ in pairs])
        width = max(sum(len(pairs[i][0]) for i in row) for row in rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segments = torch.full(shape, -1, dtype=torch.long)  # example number per slot; -1: padding
        for r, row in enumerate(rows):
            col = 0
            for i in row:
                ids, lab = pairs[i]
                n = len(ids)
                input_ids[r, col : col + n] = torch.as_tensor(ids, dtype=torch.long)
                labels[r, col : col + n] = torch.as_tensor(lab, dtype=torch.long)
                labels[r, col] = IGNORE_INDEX  # never a target of the previous example
                position_ids[r, col : col + n] = torch.arange(n)
                segments[r, col : col + n] = i
                col += n
            position_ids[r, col:] = torch.arange(width - col)
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "num_tokens": torch.tensor(sum(len(ids) for ids, _ in pairs), dtype=torch.long),
        }
        if self.attn_implementation == "sdpa":
            batch["attention_mask"] = block_causal_mask(segments)
        if self.loss_positions_only:
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
            batch["loss_mask"] = targets != IGNORE_INDEX
            batch["loss_targets"] = targets[batch["loss_mask"]]
        return batch


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """``(rows, 1, width, width)`` bool: query q may see key k iff same segment and k <= q.

    ``segments`` is ``(rows, width)``; equal values mark one example. Padding
    (``-1``) is treated as one more segment, so its queries see themselves.
    """
    width = segments.shape[1]
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    return (same & causal)[:, None]


# ------------------------------------------------------------ varlen attention without flash-attn


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``(start, end)`` of each sequence: a sequence starts where its position is 0."""
    width = position_ids.shape[-1]
    bounds = []
    for row in position_ids.reshape(-1, width):
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        bounds.append(list(zip(starts, [*starts[1:], width], strict=True)))
    return bounds


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """One causal SDPA call per packed sequence; plain SDPA for anything else (masks, a KV cache).

    Packed means: no mask, as many keys as queries, and ``position_ids`` that
    restart inside a row.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    width = query.shape[2]
    packed = attention_mask is None and position_ids is not None and key.shape[2] == width
    bounds = segment_bounds(position_ids.expand(query.shape[0], -1)) if packed else []
    if not bounds or all(len(row) == 1 for row in bounds):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = []
    for r, row in enumerate(bounds):
        rows.append(torch.cat([
            torch.nn.functional.scaled_dot_product_attention(
                query[r : r + 1, :, s:e], key[r : r + 1, :, s:e], value[r : r + 1, :, s:e],
                dropout_p=dropout, scale=scaling, is_causal=e - s > 1)
            for s, e in row], dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _packed_sdpa_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """No mask for packed training rows (the attention splits them); SDPA's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    plain = (kwargs.get("attention_mask") is None and kwargs.get("q_length") == kwargs.get("kv_length")
             and not kwargs.get("q_offset") and not kwargs.get("kv_offset"))
    return None if plain else sdpa_mask(*args, **kwargs)


def use_packed_attention(model: Any) -> Any:
    """Switch ``model`` (a transformers model, before any PEFT wrapping) to :data:`PACKED_SDPA`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_sdpa_mask)
    model.set_attn_implementation(PACKED_SDPA)
    return model
