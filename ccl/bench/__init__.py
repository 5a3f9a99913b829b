"""Benchmarks: measured speed and memory against the obvious baseline (``benchmarks/`` keeps the results).

- ``python -m ccl.bench train|predict|cost|data|scale`` (:mod:`ccl.bench.cli`): one command per
  measurement, in :mod:`~ccl.bench.train` (with TRL's peer arms in :mod:`~ccl.bench.peers`),
  :mod:`~ccl.bench.predict`, :mod:`~ccl.bench.cost`, :mod:`~ccl.bench.data` and
  :mod:`~ccl.bench.scale`; shared pieces (machine info, FLOPs, peak RSS) in :mod:`~ccl.bench.common`.
- ``python -m ccl.bench.gpu``: Qwen3-4B + LoRA training throughput and MFU on a GPU.
- ``python -m ccl.bench.memory``: saved-activation bytes per token of LoRA training.
- ``python -m ccl.bench.gpu_check``: the GPU path end to end (this benchmark, a packed-vs-padded
  loss check and the pipeline on a small Qwen3), or ``--cpu`` as a seconds-long smoke test.

Nothing is imported here, so each command loads only what it measures.
"""
