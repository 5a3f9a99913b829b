"""``vllm.LLM`` with vLLM's constructor and ``generate`` signatures; greedy HF generation on the CPU.

Checks what vLLM checks for CCL's calls: engine arguments it does not know are a
``TypeError`` (vLLM's ``EngineArgs`` is a dataclass), a LoRA request needs
``enable_lora``, the adapter's rank must fit ``max_lora_rank``, and every adapter tensor
must be a LoRA matrix (``vllm/lora/utils.py`` ``parse_fine_tuned_lora_name``:
"... is unsupported LoRA weight"); a prompt longer than ``max_model_len`` is a
``ValueError``. Every engine built is kept in ``LLM.instances`` for the tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from vllm.outputs import CompletionOutput, Logprob, RequestOutput
from vllm.sampling_params import SamplingParams

# The EngineArgs fields CCL may pass through LLM(**kwargs).
ENGINE_ARGS = {"max_num_seqs", "max_model_len", "enable_lora", "max_loras", "max_lora_rank",
               "max_cpu_loras", "enable_prefix_caching", "disable_log_stats", "max_num_batched_tokens",
               "logits_processors", "kv_cache_memory_bytes"}
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


class LLM:
    instances: ClassVar[list[LLM]] = []
    events: ClassVar[list[str]] = []  # "LLM" appended when one is built (tests add their own)

    def __init__(
        self,
        model: str,
        *,
        task: str = "auto",
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        allowed_local_media_path: str = "",
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        seed: int | None = None,
        gpu_memory_utilization: float = 0.9,
        swap_space: float = 4,
        cpu_offload_gb: float = 0,
        enforce_eager: bool = False,
        max_seq_len_to_capture: int = 8192,
        disable_custom_all_reduce: bool = False,
        disable_async_output_proc: bool = False,
        hf_token: bool | str | None = None,
        hf_overrides: Any = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        override_pooler_config: Any = None,
        compilation_config: int | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path, self.tokenizer_path = str(model), str(tokenizer or model)
        self.kwargs = {"seed": seed, "gpu_memory_utilization": gpu_memory_utilization, "dtype": dtype, **kwargs}
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path).eval()
        self.tok = AutoTokenizer.from_pretrained(self.tokenizer_path)
        self.max_model_len = int(kwargs.get("max_model_len") or self.model.config.max_position_embeddings)
        self._lora: dict[int, Any] = {}
        self.lora_ids: set[int] = set()  # LoRA requests served (as the tests' recording real LLM keeps)
        LLM.instances.append(self)
        LLM.events.append("LLM")

    def get_tokenizer(self, lora_request: Any = None) -> Any:
        return self.tok

    def _check_adapter(self, path: str) -> None:
        from safetensors import safe_open

        cfg = json.loads((Path(path) / "adapter_config.json").read_text())
        if int(cfg["r"]) > int(self.kwargs.get("max_lora_rank", 16)):
            raise ValueError(f"LoRA rank {cfg['r']} is greater than "
                             f"max_lora_rank {self.kwargs.get('max_lora_rank', 16)}.")
        with safe_open(str(Path(path) / "adapter_model.safetensors"), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if not name.endswith(LORA_SUFFIXES):
                    raise ValueError(f"{name} is unsupported LoRA weight")

    def _model_for(self, lora_request: Any) -> Any:
        if lora_request is None:
            return self.model
        if not self.kwargs.get("enable_lora"):
            raise ValueError(f"LoRA request {lora_request.lora_name} provided but LoRA is not enabled!")
        self.lora_ids.add(lora_request.lora_int_id)
        if lora_request.lora_int_id not in self._lora:
            from peft import PeftModel

            self._check_adapter(lora_request.lora_path)
            self._lora[lora_request.lora_int_id] = PeftModel.from_pretrained(self.model, lora_request.lora_path).eval()
        return self._lora[lora_request.lora_int_id]

    def _processors(self, params: SamplingParams, width: int) -> Any:
        """CCL's guard, as ``LLM(logits_processors=[...])`` + ``extra_args`` switch it on in vLLM."""
        from transformers import LogitsProcessorList

        from ccl.generation.guards import GUARD_ARG, RepeatedLineGuard

        spec = (params.extra_args or {}).get(GUARD_ARG)
        if not spec or not self.kwargs.get("logits_processors"):
            return None

        return LogitsProcessorList([RepeatedLineGuard(self.tok, width, [spec["in_codes"]], spec["stop_id"])])

    def generate(
        self,
        prompts: Any,
        /,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        guided_options_request: Any = None,
        priority: list[int] | None = None,
    ) -> list[RequestOutput]:
        if isinstance(prompts, dict):
            prompts = [prompts]
        many = isinstance(sampling_params, (list, tuple))
        per_prompt = list(sampling_params) if many else [sampling_params or SamplingParams()] * len(prompts)
        params = per_prompt[0]
        model = self._model_for(lora_request)
        stops = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stops |= {self.tok.eos_token_id} if self.tok.eos_token_id is not None else set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        stops |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}
        outputs = []
        for i, prompt in enumerate(prompts):
            params = per_prompt[i]
            ids = list(prompt["prompt_token_ids"])
            if len(ids) + 1 > self.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                                 f"length of {self.max_model_len}.")
            processors = self._processors(params, len(ids))
            with torch.inference_mode():
                gen = model.generate(
                    **({"logits_processor": processors} if processors else {}),
                    input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=int(params.max_tokens), do_sample=False, temperature=None, top_p=None,
                    top_k=None, repetition_penalty=params.repetition_penalty, eos_token_id=sorted(stops),
                    pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id,
                    return_dict_in_generate=True, output_logits=params.logprobs is not None,
                )
            out = gen.sequences[0, len(ids):].tolist()
            cut = next((k for k, t in enumerate(out) if t in stops), None)
            new = out if cut is None else out[:cut]
            reason = "stop" if cut is not None else "length"
            text = self.tok.decode(new, skip_special_tokens=params.skip_special_tokens)
            logprobs = None
            if params.logprobs is not None:  # vLLM's default: the sampled token's raw log-probability
                logprobs = []
                for t, step in zip(new, gen.logits, strict=False):
                    lp = torch.log_softmax(step[0].float(), dim=-1)
                    logprobs.append({int(t): Logprob(float(lp[t]), 1)})
            outputs.append(RequestOutput(str(i), None, ids, None,
                                         [CompletionOutput(0, text, new, None, logprobs, reason)]))
        return outputs
