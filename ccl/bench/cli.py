"""``python -m ccl.bench train|predict|cost|data|scale``: measured speed against the obvious baseline.

* ``train``   real (non-padding) tokens/s and the share of computed tokens that
  are real: CCL's packing collator with token-budget batches vs random
  fixed-size batches padded to the longest (HF ``DataCollatorForSeq2Seq``),
  same examples, same model, the arms interleaved round by round; config arms
  (``--arms before,after,after_packed``, :data:`CONFIG_ARMS`) and TRL ``SFTTrainer`` arms
  (``trl_fast``, ``trl_default``: :mod:`ccl.bench.peers`, the ``peers`` extra) each train
  their own model, with peak RSS and a held-out loss per arm;
* ``predict`` documents/s of batched, length-sorted generation
  (:class:`~ccl.generation.hf_engine.HFEngine`) vs one document at a time;
* ``cost``    training FLOPs per epoch of document SFT vs CCL from a recipe's
  token lengths, beside the paper's 70 h vs 4 h per epoch;
* ``data``    seconds to parse the Alphabetic Index and build the full gold
  tier, and to load the Tabular List cold and cached;
* ``scale``   each data step at MIMIC-IV size on a synthetic corpus of ``--notes N``
  admissions (time and peak RSS per step, each in its own process: :mod:`ccl.bench.scale`).

Options come first (``--name value``); anything ``key=value`` is a Hydra
override of ``conf/`` as for ``python -m ccl.run``. Each command prints a
table and the command line, and ``--out FILE`` keeps the numbers as JSON with
the machine they ran on.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console

from ccl.bench.common import ARMS, command_line, write_result
from ccl.cli.errors import cli_main

# command -> its function, as ``module:function``: imported when chosen, so a command loads only
# what it measures (train: Lightning and the model code) and --help stays quick.
COMMANDS = {
    "train": "ccl.bench.train:bench_train",
    "predict": "ccl.bench.predict:bench_predict",
    "cost": "ccl.bench.cost:bench_cost",
    "data": "ccl.bench.data:bench_data",
    "scale": "ccl.bench.scale:bench_scale",
}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m ccl.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared cores)")
    parser.add_argument("--backbone", default="tiny", help="train/predict: the backbone config to load")
    parser.add_argument("--examples", type=int, default=96, help="train: examples of the mix per arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="train: arms to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="train/predict: interleaved rounds")
    parser.add_argument("--repeat", type=int, default=1,
                        help="train config arms: passes over each round's examples (a run shows each example ~3 times)")
    parser.add_argument("--held-out", type=int, default=0, help="train, config and peer arms: further "
                        "examples of the same epoch each arm's loss is measured on after the last round")
    parser.add_argument("--batch-size", type=int, default=8, help="train: the padded baseline's batch size")
    parser.add_argument("--budget", type=int, default=None, help="train: packed tokens per batch "
                        "(default train.max_batch_tokens)")
    parser.add_argument("--row-tokens", type=int, default=None, help="train: packed row length "
                        "(default: the longest example)")
    parser.add_argument("--docs", type=int, default=16, help="predict: documents")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="predict: new tokens per document "
                        "(default infer.max_new_tokens)")
    parser.add_argument("--batch-sizes", default="8,16", help="predict: generation batch sizes, comma-separated")
    parser.add_argument("--no-prefill", dest="prefill", action="store_false", help="predict: skip the extra "
                        "prompt-only pass that splits the time into prefill and decoding")
    parser.add_argument("--sft-docs", type=int, default=None, help="cost: documents in the document-SFT "
                        "recipe (default: the training split)")
    parser.add_argument("--sft-doc-tokens", type=float, default=None, help="cost: mean tokens of a "
                        "document-SFT example (default: as measured on docs=)")
    parser.add_argument("--ccl-all-spans", action="store_true", help="cost: the CCL epoch takes every span "
                        "pair once (default: as many as mix.span_share says)")
    parser.add_argument("--mfu", type=float, default=0.35, help="cost: assumed model FLOPs utilisation")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="cost: GPU peak bf16 TFLOP/s")
    parser.add_argument("--icd-dir", help="data: folder with the CDC index XML files")
    parser.add_argument("--notes", type=int, default=None, help="scale: training admissions of the "
                        "synthetic MIMIC-IV-shaped corpus (validation and test in the split's proportions)")
    parser.add_argument("--work", default=None, help="scale: folder for the corpus, caches and the run "
                        "folder (default outputs/bench_scale_N)")
    parser.add_argument("--steps", default=None, help="scale: steps to run, comma-separated (default all)")
    parser.add_argument("--seed", type=int, default=0, help="scale: the corpus's seed")
    parser.add_argument("--train-steps", type=int, default=3, help="scale: optimiser steps of the train step")
    parser.add_argument("--regenerate", action="store_true", help="scale: write the corpus even if present")
    args, rest = parser.parse_known_args(list(argv))
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (Hydra overrides look like key=value)")
    return args, rest


@cli_main("ccl.bench")
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    args.command_line = command_line(argv)
    torch.set_num_threads(max(1, args.threads))
    console = Console()
    console.print(f"[dim]{args.command_line}[/]")
    module, name = COMMANDS[args.command].split(":")
    result = getattr(importlib.import_module(module), name)(args, overrides, console)
    write_result(args.out, result, console)
    return result


if __name__ == "__main__":
    main()
