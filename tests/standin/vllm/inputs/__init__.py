"""``vllm.inputs.TokensPrompt``: a prompt given as token ids (a TypedDict in vLLM)."""

from typing import TypedDict


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]
    token_type_ids: list[int]
    multi_modal_data: dict
    mm_processor_kwargs: dict
    cache_salt: str
