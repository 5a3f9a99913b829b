"""Reuse the frozen lower decoder layers' output across the epochs of a run.

With LoRA on the top layers only (``train.lora.top_layers``) and code tokens trained on
the output side (every run; the both-sides path is the bench's ``before`` arm), the embedding and every decoder
layer below the lowest LoRA layer are frozen, and (without dropout in the base model)
the hidden state entering that layer is a fixed function of an example's token ids. The
default CPU recipe shows each document three times and each span pair about as often
(``train.max_epochs=3``), so most of the forward work of those lower layers is repeated.

:class:`FrozenPrefix` computes that hidden state once per distinct example (a right-
padded row's real tokens are independent of the padding after them under a causal
mask) and keeps it, keyed by the example's token ids. A training step then runs only
the trainable top layers: the decoder's ``layers`` are swapped for their top slice for
the duration of one forward, which gets the cached states as ``inputs_embeds``. The
result equals the full forward up to floating-point summation order (tested to 1e-5);
backward already stopped at the lowest trainable layer, so the saving is forward
compute: about (k / n) x (1 - 1 / repeats) of it for k frozen of n layers.

Memory: one float per hidden unit per distinct training token (SmolLM2-135M on the demo
world: about 60 k tokens x 576 x 4 B = 140 MB). Hence off in the GPU recipe
(``conf/train/lora_gpu.yaml``), where a 4-8B model's states would take gigabytes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def find_decoder(model: nn.Module) -> nn.Module | None:
    """The decoder stack of a (peft-wrapped) causal LM: the module holding ``layers``
    (a ``ModuleList``), ``embed_tokens`` and ``norm``, as transformers' Llama, Qwen,
    Mistral and Gemma models do; None when there is none."""
    for module in model.modules():
        if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "embed_tokens") \
                and hasattr(module, "norm"):
            return module
    return None


def first_trainable_layer(model: nn.Module) -> int | None:
    """Index of the lowest decoder layer with a trainable parameter, or None when the
    prefix is not frozen (a trainable input embedding, no decoder, or dropout in the base
    model's attention makes the lower layers' output vary between steps)."""
    decoder = find_decoder(model)
    if decoder is None:
        return None
    if any(p.requires_grad for p in decoder.embed_tokens.parameters()):
        return None
    config = getattr(model, "config", None) or getattr(decoder, "config", None)
    if float(getattr(config, "attention_dropout", 0.0) or 0.0) > 0.0:
        return None
    for i, layer in enumerate(decoder.layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return None


class FrozenPrefix:
    """Per-example cache of the hidden states entering decoder layer ``k``.

    Args:
        model: the (peft) causal LM being trained.
        k: the first trainable decoder layer (:func:`first_trainable_layer`); layers
            ``0..k-1`` and the embedding must be frozen.

    :meth:`inputs` turns a right-padded batch (``input_ids``, ``attention_mask``; shapes
    ``(rows, width)``) into ``inputs_embeds`` of shape ``(rows, width, hidden)``;
    :meth:`upper_only` is the context in which the model's forward runs only layers
    ``k..``. Packed batches (several examples per row) are not supported: the run keeps
    the plain forward for them.
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        decoder = find_decoder(model)
        if decoder is None or k <= 0:
            raise ValueError("FrozenPrefix needs a decoder stack with at least one frozen layer")
        self.decoder, self.k = decoder, int(k)
        self.cache: dict[bytes, torch.Tensor] = {}
        self.computed = 0  # examples whose lower layers ran (for tests and the log)
        self.served = 0  # examples served from the cache

    @staticmethod
    def _key(ids: torch.Tensor) -> bytes:
        return ids.detach().cpu().numpy().tobytes()

    @contextlib.contextmanager
    def _layers(self, layers: nn.ModuleList, norm: nn.Module | None = None) -> Iterator[None]:
        full_layers, full_norm = self.decoder.layers, self.decoder.norm
        self.decoder.layers = layers
        if norm is not None:
            self.decoder.norm = norm
        try:
            yield
        finally:
            self.decoder.layers, self.decoder.norm = full_layers, full_norm

    def upper_only(self) -> contextlib.AbstractContextManager[None]:
        """Within this context the decoder runs layers ``k..`` only."""
        return self._layers(self.decoder.layers[self.k:])

    @torch.no_grad()
    def _lower(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hidden states after layer ``k - 1`` of each token row (unpadded, ``(len,)``)."""
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=rows[0].dtype, device=rows[0].device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        with self._layers(self.decoder.layers[: self.k], nn.Identity()):
            hidden = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return [hidden[i, : len(r)].detach().clone() for i, r in enumerate(rows)]

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """``inputs_embeds`` for a right-padded batch: cached rows, the others computed."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        rows = [ids[i, : int(n)] for i, n in enumerate(lengths)]
        if not all(bool(mask[i, : int(n)].all()) for i, n in enumerate(lengths)):
            raise ValueError("FrozenPrefix needs right-padded rows (attention_mask 1...1 0...0)")
        keys = [self._key(r) for r in rows]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            for i, h in zip(missing, self._lower([rows[i] for i in missing]), strict=True):
                self.cache[keys[i]] = h
        self.computed += len(missing)
        self.served += len(rows) - len(missing)
        first = self.cache[keys[0]]
        out = torch.zeros(ids.shape[0], ids.shape[1], first.shape[-1], dtype=first.dtype, device=first.device)
        for i, key in enumerate(keys):
            out[i, : int(lengths[i])] = self.cache[key]
        return out


def forward(model: nn.Module, inputs: dict[str, Any], prefix: FrozenPrefix | None) -> Any:
    """``model(**inputs, use_cache=False)``, through ``prefix`` when there is one and the batch
    is padded (packed rows come without an ``attention_mask`` and take the plain forward)."""
    if prefix is None or "attention_mask" not in inputs or "input_ids" not in inputs:
        return model(**inputs, use_cache=False)
    inputs = {k: v for k, v in inputs.items() if k != "input_ids"} | {"inputs_embeds": prefix.inputs(inputs)}
    with prefix.upper_only():
        return model(**inputs, use_cache=False)
