"""Generation with vLLM on a CUDA GPU: a saved model directory, a LoRA adapter served as is.

vLLM is an optional extra (``pip install ccl[gpu]``) and is imported only when an
engine is built, so this module imports on any machine. The calls follow vLLM's
offline API (``vllm.LLM``, ``vllm.SamplingParams``, ``vllm.inputs.TokensPrompt``,
``vllm.lora.request.LoRARequest``; read from vLLM's source, 0.28-0.32):

* ``LLM(model=..., tokenizer=..., max_num_seqs=..., seed=..., gpu_memory_utilization=...,
  max_model_len=..., dtype=..., enable_lora=..., max_loras=..., max_lora_rank=...)``;
* prompts as token ids (``TokensPrompt(prompt_token_ids=ids)``), encoded by
  :func:`ccl.generation.chat.encode_prompts` with the run's own tokenizer (vLLM is pointed at
  the tokenizer saved with the run, so it decodes with the one training used), so vLLM
  sees the ids training saw (no second BOS from its own tokenisation);
* ``SamplingParams(temperature, max_tokens, repetition_penalty, stop_token_ids,
  skip_special_tokens)``: the same settings the HF engine decodes with; ``logprobs=0``
  when log-probabilities are recorded (each step's ``{token_id: Logprob}`` then holds the
  sampled token), and the structured outputs of restricted decoding (``sampling_kwargs``);
* each ``RequestOutput.outputs[0]`` gives ``text``, ``token_ids`` and ``finish_reason``
  (``"length"`` when ``max_tokens`` ended it), kept as a
  :class:`~ccl.generation.record.Generation`.

vLLM's LoRA loader accepts only LoRA matrices in an adapter file (names ending in
``lora_A.weight``, ``lora_B.weight``, ``lora_embedding_A``/``lora_embedding_B``;
``vllm/lora/utils.py: parse_fine_tuned_lora_name`` raises "is unsupported LoRA weight"
for anything else). An adapter with other tensors (code-token rows saved by peft as
``trainable_tokens_delta``, or whole ``modules_to_save`` rows) must be merged into a
full model first: :func:`unsupported_lora_keys` says which. The predict stage does the
merge (``model/merged/``); this module never merges.

dtype. vLLM serves the model and the LoRA matrices in the model's dtype (bf16 for the
hub backbones), while peft under HF generate keeps LoRA weights in fp32 over a bf16
base; greedy outputs of the two may differ in the last bits of a logit, so the two
engines' predictions agree up to rare near-tie tokens, not bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.generation.chat import encode_prompts
from ccl.generation.record import Generation

VLLM_HINT = "infer.engine=vllm needs vLLM and a CUDA GPU: `pip install ccl[gpu]` (or use infer=hf)"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the max_lora_rank values vLLM accepts
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# The tensor names vLLM's LoRA loader accepts (vllm/lora/utils.py parse_fine_tuned_lora_name).
VLLM_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


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


def adapter_tensor_names(adapter_dir: str | Path) -> list[str]:
    """Names of the tensors in the PEFT adapter file of ``adapter_dir`` (safetensors or .bin)."""
    folder = Path(adapter_dir)
    for name in ADAPTER_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return sorted(f.keys())
        import torch

        return sorted(torch.load(path, map_location="cpu", weights_only=True))
    raise FileNotFoundError(f"{folder}: no {' or '.join(ADAPTER_WEIGHTS)}; is it a PEFT adapter directory?")


def unsupported_lora_keys(adapter_dir: str | Path) -> list[str]:
    """Adapter tensors vLLM's LoRA loader would reject (empty: it can serve the adapter as is)."""
    return [k for k in adapter_tensor_names(adapter_dir) if not k.endswith(VLLM_LORA_SUFFIXES)]


class VLLMEngine:
    """``vllm.LLM`` over ``model_dir``, with the adapter in ``adapter_dir`` as a LoRA request.

    ``tokenizer_dir`` (default ``model_dir``) is the tokenizer vLLM loads: the run's saved
    one, so prompts are encoded and answers decoded as in training. Raises
    ``ImportError`` (with :data:`VLLM_HINT`) without vLLM, ``ValueError`` for an adapter
    vLLM cannot load (:func:`unsupported_lora_keys`).
    """

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        batch_size: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        *,
        tokenizer_dir: str | Path | None = None,
        repetition_penalty: float = 1.0,
        stop_token_ids: Sequence[int] = (),
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
            from vllm.inputs import TokensPrompt
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ImportError(VLLM_HINT) from e
        self._vllm, self._prompt = vllm, TokensPrompt
        self.temperature = float(temperature)
        self.repetition_penalty = float(repetition_penalty)
        self.stop_token_ids = sorted({int(i) for i in stop_token_ids})
        kwargs: dict[str, Any] = {
            "model": str(model_dir), "tokenizer": str(tokenizer_dir or model_dir),
            "max_num_seqs": int(batch_size), "seed": int(seed),
            "gpu_memory_utilization": float(gpu_memory_utilization),
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        self.lora = None
        if adapter_dir is not None:
            bad = unsupported_lora_keys(adapter_dir)
            if bad:
                raise ValueError(
                    f"{adapter_dir}: vLLM's LoRA loader accepts LoRA matrices only; this adapter also "
                    f"holds {len(bad)} other tensors (e.g. {bad[0]}): merge it into a full model first")
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

    def complete(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        """One :class:`~ccl.generation.record.Generation` per prompt, in input order.

        With ``record_logprobs`` each carries the log-probability of every sampled token
        (``SamplingParams(logprobs=0)``: vLLM returns the sampled token's own entry per
        step); ``sampling_kwargs`` (restricted decoding's structured outputs) join the
        SamplingParams.
        """
        params = self._vllm.SamplingParams(
            temperature=self.temperature, max_tokens=int(max_new_tokens),
            repetition_penalty=self.repetition_penalty, stop_token_ids=list(self.stop_token_ids),
            skip_special_tokens=True,
            **({"logprobs": 0} if self.record_logprobs else {}), **self.sampling_kwargs,
        )
        inputs = [self._prompt(prompt_token_ids=ids) for ids in encode_prompts(self.tokenizer, prompts)]
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        done = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = None
            if self.record_logprobs and c.logprobs is not None and len(c.logprobs) == len(ids):
                lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs, strict=True)]
            done.append(Generation(c.text, ids, "length" if c.finish_reason == "length" else "stop", lps))
        self.last_ids = [g.token_ids for g in done]
        self.last_logprobs = [g.logprobs or [] for g in done] if self.record_logprobs else []
        return done

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order."""
        return [g.text for g in self.complete(prompts, max_new_tokens)]
