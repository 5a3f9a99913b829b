"""One generation layer for prediction and for the span-tier LLMs.

- :mod:`~ccl.generation.chat`: messages -> prompt text -> prompt ids (one ``has_chat_template``).
- :mod:`~ccl.generation.record`: the :class:`~ccl.generation.record.Generation` record and the
  answer-length bound.
- :mod:`~ccl.generation.hf_engine`, :mod:`~ccl.generation.vllm_engine`: the engines;
  :mod:`~ccl.generation.engine`: their interface and factory (``infer.engine``).
- :mod:`~ccl.generation.guards`, :mod:`~ccl.generation.logprobs`: logits processors the HF
  engine runs (repeated-line guard, token log-probabilities).
- :mod:`~ccl.generation.loading`: devices, dtypes, tokenizers and stop tokens for generation.
- :mod:`~ccl.generation.progress`: progress of a generation run.

Nothing is imported here, so ``ccl.generation.chat`` stays light (no torch).
"""
