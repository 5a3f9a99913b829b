"""Shared pieces of the benchmarks: the machine the numbers ran on, the command line and JSON
result, training FLOPs, and the peak resident memory of a block."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the CPU is shared: the load average says how much)."""
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line(argv: Sequence[str]) -> str:
    return "python -m ccl.bench " + shlex.join(argv)


def write_result(path: str | None, result: dict[str, Any], console: Console) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results: {out}")


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def attention_flops(lengths: Sequence[int] | np.ndarray, n_layers: int, attn_width: int) -> float:
    """Forward + backward FLOPs of causal attention (QK^T and AV) over sequences of ``lengths``.

    Per layer a sequence of n does n(n+1)/2 query-key pairs, each 2 matmuls of
    ``attn_width`` multiply-adds (x2 FLOPs) forward, x3 with the backward.
    """
    n = np.asarray(lengths, dtype=np.float64)
    return float(3 * 2 * 2 * n_layers * attn_width * (n * (n + 1) / 2).sum())


def train_flops(
    lengths: Sequence[int] | np.ndarray, n_params: float, n_layers: int | None, attn_width: int | None
) -> dict[str, float]:
    """``6 N`` per token (forward 2N, backward 4N) plus causal attention; attention 0 when unknown."""
    tokens = float(np.asarray(lengths, dtype=np.float64).sum())
    dense = 6.0 * float(n_params) * tokens
    attn = attention_flops(lengths, n_layers, attn_width) if n_layers and attn_width else 0.0
    return {"tokens": tokens, "dense": dense, "attention": attn, "total": dense + attn}


class RssPeak:
    """Peak resident memory (bytes) of this process while a block runs, sampled every ``interval`` s.

    Freed heap is handed back to the OS first (glibc ``malloc_trim``) so that an
    earlier block's peak does not hide this one's.
    """

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        import psutil

        self.interval, self.process, self.threading = interval, psutil.Process(), threading
        self.start = self.peak = 0

    def __enter__(self) -> RssPeak:
        _malloc_trim()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = self.threading.Event()
        self._thread = self.threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _malloc_trim() -> None:
    import ctypes
    import gc

    gc.collect()
    # Not glibc: the peaks may then include earlier arms' freed heap.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# The train benchmark's batch arms (:func:`ccl.bench.train.make_arms`), the default of ``--arms``.
ARMS = ("packed", "packed_mask", "padded")
