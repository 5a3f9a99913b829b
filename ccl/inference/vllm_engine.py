"""Generation with vLLM on a CUDA GPU, LoRA adapters served without merging.

vLLM is an optional extra (``pip install ccl[gpu]``) and is imported only when
an engine is built, so this module imports on any machine. Prompts are encoded
by :func:`ccl.data.sft.encode_prompts` and handed over as token ids, so vLLM
sees the same ids as training (no second BOS from its own tokenisation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.data.sft import encode_prompts

VLLM_HINT = "infer.engine=vllm needs vLLM and a CUDA GPU: `pip install ccl[gpu]` (or use infer=hf)"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the max_lora_rank values vLLM accepts


def adapter_max_lora_rank(adapter_dir: str | Path) -> int:
    """Smallest vLLM ``max_lora_rank`` that holds the PEFT adapter in ``adapter_dir``."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no adapter_config.json; is {adapter_dir} a PEFT adapter directory?")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        ranks = [int(cfg["r"]), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the LoRA rank 'r': {e}") from None
    r = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if r <= allowed:
            return allowed
    raise ValueError(f"{path}: LoRA rank {r} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


class VLLMEngine:
    """``vllm.LLM`` over ``model_dir``, with the adapter in ``adapter_dir`` as a LoRA request."""

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        batch_size: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ImportError(VLLM_HINT) from e
        self._vllm = vllm
        self.temperature = float(temperature)
        kwargs: dict[str, Any] = {"model": str(model_dir), "max_num_seqs": int(batch_size), "seed": seed}
        self.lora = None
        if adapter_dir is not None:
            kwargs |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": adapter_max_lora_rank(adapter_dir)}
            self.lora = LoRARequest("ccl", 1, str(adapter_dir))
        self.llm = vllm.LLM(**(kwargs | llm_kwargs))
        self.tokenizer = self.llm.get_tokenizer()
        # Issue 16: extra SamplingParams (structured outputs of restricted decoding) and the
        # log-probability of each sampled token (logprobs=0), kept like HFEngine's.
        self.sampling_kwargs: dict[str, Any] = {}
        self.record_logprobs = False
        self.last_ids: list[list[int]] = []
        self.last_logprobs: list[list[float]] = []

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order."""
        params = self._vllm.SamplingParams(
            temperature=self.temperature, max_tokens=int(max_new_tokens), skip_special_tokens=True,
            **({"logprobs": 0} if self.record_logprobs else {}), **self.sampling_kwargs,
        )
        inputs = [{"prompt_token_ids": ids} for ids in encode_prompts(self.tokenizer, prompts)]
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        if self.record_logprobs:
            self.last_ids = [list(o.outputs[0].token_ids) for o in outputs]
            self.last_logprobs = [[float(step[t].logprob) for t, step in zip(o.outputs[0].token_ids,
                                   o.outputs[0].logprobs or [], strict=False)] for o in outputs]
        return [o.outputs[0].text for o in outputs]
