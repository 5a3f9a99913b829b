"""Each code token's rows stored once under LoRA (issue 24, "Bounded memory").

peft trains the code tokens' rows through ``trainable_token_indices``: a
``TrainableTokensLayer`` keeps the trained rows (``trainable_tokens_delta``, the
rows' values, not a difference) **and** a copy of the rows it replaces
(``trainable_tokens_original``, a buffer used only to undo a merge), while the base
matrix keeps those rows too. Its forward then builds a merged copy of the whole
matrix (every row, ``vocabulary x width``) at each call, and for the output head
the gradient of that whole copy. With the full code space on SmolLM2 (74,719 code
tokens, width 576) each such row copy is 172 MB and each whole-matrix copy 285 MB.

:func:`store_code_rows_once` turns those layers into :class:`CodeRowsLayer`: the
same parameters (so the same adapter files, optimiser groups and merge), no copy
of the original rows (the base matrix holds them), and an embedding forward that
reads the base matrix in place (it looks up the base rows and puts the trained rows
at the code tokens' positions: no merged copy of the whole matrix, no gradient for
the whole matrix). The output head keeps peft's product with the merged matrix: a
transient copy each forward, but split products (base rows | trained rows) would
change the logits in the last bit, and CCL's runs stay bit for bit those of peft's
layers (values and gradients, tests/test_code_rows.py).

What a code token then stores with ``backbone.code_token_side=output`` on a tied
backbone: its input row (the description-mean start, frozen, in the base matrix:
the input side does not train) and its trained output row (plus that row's
gradient and two AdamW moments). The two differ once training starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from torch import nn

from ccl.model.code_tokens import code_token_ids


class CodeRowsLayer(TrainableTokensLayer):
    """peft's ``TrainableTokensLayer`` without the copy of the original rows, and an embedding
    forward without the merged whole-matrix copy (module docstring).

    ``merge`` (``merge_and_unload``) works as in peft; ``unmerge`` needs the original rows
    and raises ``RuntimeError`` (CCL merges only to export a plain model)."""

    def update_layer(self, adapter_name, config=None, tied_adapter=None, **kwargs):  # type: ignore[override]
        """peft's, then the copy of the original rows is dropped (the base matrix holds them)."""
        super().update_layer(adapter_name, config=config, tied_adapter=tied_adapter, **kwargs)
        if tied_adapter is None and adapter_name in self.trainable_tokens_original:
            del self.trainable_tokens_original[adapter_name]

    def unmerge(self) -> None:
        """Not possible: the original rows are not kept (:func:`store_code_rows_once`)."""
        raise RuntimeError("code-token rows were merged into the base matrix and their original rows are not "
                           "kept (ccl.model.code_rows); reload the model to get the unmerged one")

    def forward_adapters(self, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
        if self.merged and (self.disable_adapters or not active_adapters):
            self.unmerge()  # raises: peft would restore the original rows here
        if self.disable_adapters or not active_adapters or self.merged:
            return self.base_layer(x, *args, **kwargs)
        self._check_overlapping_tokens(active_adapters)
        base = self.get_base_layer()
        if isinstance(base, nn.Embedding):
            return self._embed(x, base, active_adapters)
        # The head: peft's product with the merged matrix (its transient copy), which keeps the
        # logits bit for bit: split products (base rows | trained rows) differ in the last bit.
        return super().forward_adapters(x, active_adapters, *args, **kwargs)

    def _rows(self, adapter: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(self.token_indices[adapter], device=device, dtype=torch.long)
        return ids, self.trainable_tokens_delta[adapter]

    def _embed(self, x: torch.Tensor, base: nn.Embedding, adapters) -> torch.Tensor:
        # peft: F.embedding(x, W with the trained rows copied in) [* embed_scale]
        out = F.embedding(x, base.weight, base.padding_idx, base.max_norm, base.norm_type,
                          base.scale_grad_by_freq, base.sparse)
        scale = self._get_embed_scale()
        for adapter in adapters:
            ids, delta = self._rows(adapter, x.device)
            sorted_ids, order = ids.sort()
            at = torch.searchsorted(sorted_ids, x).clamp(max=len(ids) - 1)
            hit = sorted_ids[at] == x
            rows = F.embedding(torch.where(hit, order[at], 0), delta.to(out.dtype))
            out = torch.where(hit.unsqueeze(-1), rows, out)
        return out if scale is None else out * scale.to(out.dtype)


def store_code_rows_once(model: nn.Module) -> int:
    """Turn every peft ``TrainableTokensLayer`` in ``model`` into a :class:`CodeRowsLayer`
    (drops its copy of the original rows); returns how many layers were turned.

    Call it after ``get_peft_model`` / ``PeftModel.from_pretrained``. The parameters,
    their names and values, and the adapter files peft saves do not change."""
    turned = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and not isinstance(module, CodeRowsLayer):
            if module.tied_adapter is None:
                for name in list(module.trainable_tokens_original.keys()):
                    del module.trainable_tokens_original[name]
            module.__class__ = CodeRowsLayer
            turned += 1
    return turned


def load_adapter(model: nn.Module, adapter_dir) -> nn.Module:
    """``PeftModel.from_pretrained(model, adapter_dir)`` with its code rows stored once (as
    trained). ``model`` must already have its code tokens (:func:`ccl.model.code_tokens.add_code_tokens`)."""
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(model, adapter_dir)
    store_code_rows_once(loaded)
    return loaded


def code_row_storage(model: nn.Module) -> dict[str, int]:
    """Elements stored for code-token rows, by kind: ``trained`` (peft's trainable-token
    parameters), ``original_copies`` (peft's buffers of the rows they replace) and
    ``base_rows`` (the code tokens' rows in the base matrices, counted once per distinct
    matrix). Shared tensors are counted once."""
    seen: set[int] = set()
    out = {"trained": 0, "original_copies": 0, "base_rows": 0}
    n_codes = len(code_token_ids(model))
    for name, tensor in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]:
        key = tensor.data_ptr()
        if key in seen:
            continue
        if "trainable_tokens_delta" in name:
            out["trained"] += tensor.numel()
        elif "trainable_tokens_original" in name:
            out["original_copies"] += tensor.numel()
        elif tensor.ndim == 2 and ("embed" in name or "lm_head" in name):
            out["base_rows"] += n_codes * tensor.shape[1]
        else:
            continue
        seen.add(key)
    return out
