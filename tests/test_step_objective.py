"""One training objective whatever the micro-batching (issue 23, item 1).

The loss of an optimiser step is the mean cross-entropy over all answer tokens of the
step: with ``train.grad_accum`` micro-batches of unequal answer-token counts (documents
and spans sit in separate length-grouped micro-batches), packed or padded, the step's
gradient equals that of one batch of the same examples, and the logged loss (and the
progress line) is that per-token mean.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ccl.config import MixConfig, TrainConfig
from ccl.data.datamodule import NUM_ITEMS, MixDataModule, PaddingCollator, answer_targets
from ccl.data.packing import PackingCollator
from ccl.model.module import SFTModule
from ccl.model.train_progress import TrainProgress

VOCAB = 64


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      attention_dropout=0.0, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).double()


def example(kind: str, prompt: int, answer: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (prompt + answer,), generator=g).tolist()
    return {"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "length": len(ids),
            "prompt_length": prompt, "kind": kind}


def data() -> tuple[list[dict], list[dict]]:
    """Documents with long answers, spans with short ones (as the CPU recipe's two kinds)."""
    docs = [example("document", 30, 14 + k, seed=k) for k in range(2)]
    spans = [example("span", 6, 2 + (k % 2), seed=100 + k) for k in range(2)]
    return docs, spans


def datamodule(batch_size: int, grad_accum: int, collator=None) -> MixDataModule:
    docs, spans = data()
    cfg = TrainConfig(mode="full", batch_size=batch_size, max_batch_tokens=4096, grad_accum=grad_accum,
                      max_steps=1, max_epochs=None, lr=1e-3, warmup_steps=0)
    mix = MixConfig(span_warmup_steps=0, span_share=0.5, resample_each_epoch=False)
    return MixDataModule(docs, spans, mix, cfg, seed=0, pad_token_id=0, collator=collator)


class Grads(pl.Callback):
    """The gradient of the first optimiser step, flattened, as the optimiser would see it."""

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.grad is None:
            self.grad = torch.cat([p.grad.detach().flatten() for p in pl_module.parameters()
                                   if p.grad is not None]).clone()


def one_step(dm: MixDataModule, grad_accum: int, **trainer: object) -> tuple[torch.Tensor, SFTModule, TrainProgress]:
    module = SFTModule(tiny_model(), dm.train_cfg)
    grads, progress = Grads(), TrainProgress(log_lines=False)
    pl.Trainer(max_steps=1, max_epochs=1, accelerator="cpu", accumulate_grad_batches=grad_accum, **trainer,
               precision="64-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, use_distributed_sampler=False, deterministic=True,
               callbacks=[grads, progress]).fit(module, datamodule=dm)
    return grads.grad, module, progress


def reference(dm: MixDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and loss of ONE batch holding every example of the first step: the sum of the
    token losses over all answer tokens divided by their number, on one device."""
    step = [i for b in dm.plan[: int(dm.train_cfg.grad_accum)] for i in b.indices]
    batch = PaddingCollator(0)([dm.examples[i] for i in step])
    model = tiny_model()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    loss = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep], reduction="sum") / keep.sum()
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return grad, loss.detach()


def _compare(got: torch.Tensor, want: torch.Tensor) -> None:
    cos = torch.nn.functional.cosine_similarity(got, want, dim=0).item()
    rel = ((got - want).norm() / want.norm()).item()
    assert cos > 1 - 1e-7 and rel < 1e-5, f"cosine {cos:.6f}, relative difference {rel:.3g}"


def test_the_micro_batches_of_a_step_have_unequal_answer_tokens():
    """The setting the fix is about: the plan's two micro-batches of step 1 are the two
    documents and the two spans (length grouping), with very different answer tokens."""
    dm = datamodule(batch_size=2, grad_accum=2)
    counts = [sum(dm.targets[i] for i in b.indices) for b in dm.plan[:2]]
    assert len(dm.plan) == 2 and max(counts) >= 4 * min(counts)
    batches = list(dm.train_dataloader())
    assert [int(b[NUM_ITEMS]) for b in batches] == [sum(counts)] * 2


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_grad_accum_step_gradient_equals_one_batch_of_the_same_examples(packed):
    collator = PackingCollator(4096, 0, attn_implementation="sdpa") if packed else None
    got, module, progress = one_step(datamodule(batch_size=2, grad_accum=2, collator=collator), grad_accum=2)
    want, loss = reference(datamodule(batch_size=2, grad_accum=2))
    _compare(got, want)
    # The logged loss, the module's step loss and the progress line's loss are the step's
    # per-token mean (not the last micro-batch's mean, nor a mean divided by grad_accum).
    assert module.step_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert module.trainer.callback_metrics["train/loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert progress.loss == pytest.approx(loss.item(), rel=1e-6)


def test_one_packed_batch_per_step_optimises_the_same_objective():
    """The GPU preset (grad_accum 1, one packed batch) and the CPU default (2 padded
    micro-batches) give the same step gradient and loss on the same examples."""
    gpu, gpu_module, _ = one_step(
        datamodule(batch_size=4, grad_accum=1, collator=PackingCollator(4096, 0, attn_implementation="sdpa")),
        grad_accum=1)
    cpu, cpu_module, _ = one_step(datamodule(batch_size=2, grad_accum=2), grad_accum=2)
    _compare(cpu, gpu)
    assert cpu_module.step_loss.item() == pytest.approx(gpu_module.step_loss.item(), rel=1e-6)


def test_step_items_cover_every_rank_of_the_step():
    """Under DDP a step's count sums the micro-batches of all ranks: rank r's batches j*W+r."""
    docs = [example("document", 30, 10 + k, seed=k) for k in range(6)]
    spans = [example("span", 6, 2 + k % 3, seed=100 + k) for k in range(6)]
    cfg = TrainConfig(batch_size=2, max_batch_tokens=4096, grad_accum=2, max_steps=0, max_epochs=1)
    dm = MixDataModule(docs, spans, MixConfig(span_warmup_steps=0, span_share=0.5), cfg, seed=0, pad_token_id=0)
    dm.world_size = 2
    plan, items = dm.plan, dm.step_items()
    assert len(plan) == 6 and dm.planned_steps == 2  # steps of 4, 2 batches (a short last step)
    per_step = [sum(dm.targets[i] for b in plan[s:s + 4] for i in b.indices) for s in (0, 4)]
    assert items == [per_step[0]] * 4 + [per_step[1]] * 2
    for rank in (0, 1):
        dm.rank = rank
        got = [int(b[NUM_ITEMS]) for b in dm.train_dataloader()]
        assert got == [per_step[0], per_step[0], per_step[1]]


def test_answer_targets_counts_what_the_loss_counts():
    ex = {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}
    assert answer_targets(ex) == 2
    # A label on the first token is never a target (nothing predicts it).
    assert answer_targets({"input_ids": [1, 2], "labels": [1, 2]}) == 1


DDP_WORKER = '''
import json, sys
import pytorch_lightning as pl
import torch
sys.path.insert(0, {tests!r})
import test_step_objective as t

dm = t.ddp_datamodule()
grad, module, progress = t.one_step(dm, grad_accum=2, strategy="ddp", devices=2)
if module.trainer.is_global_zero:
    torch.save({{"grad": grad, "loss": module.step_loss.item(), "progress": progress.loss,
                "world": module.trainer.world_size}}, {out!r})
'''


def ddp_datamodule() -> MixDataModule:
    """8 examples, micro-batches of 2: one optimiser step = 2 micro-batches on each of 2 ranks."""
    docs = [example("document", 30, 12 + k, seed=k) for k in range(4)]
    spans = [example("span", 6, 2 + k % 2, seed=100 + k) for k in range(4)]
    cfg = TrainConfig(mode="full", batch_size=2, max_batch_tokens=4096, grad_accum=2, max_steps=1,
                      max_epochs=None, lr=1e-3, warmup_steps=0)
    mix = MixConfig(span_warmup_steps=0, span_share=0.5, resample_each_epoch=False)
    return MixDataModule(docs, spans, mix, cfg, seed=0, pad_token_id=0)


@pytest.mark.slow
def test_ddp_step_gradient_equals_one_batch_of_all_ranks_examples(tmp_path):
    """Two gloo ranks x grad_accum 2 (four micro-batches of unequal answer tokens): the
    averaged gradient and the logged loss are those of one batch of all 8 examples."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "rank0.pt"
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(tests=str(Path(__file__).parent), out=str(out)))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(script)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(out)
    assert got["world"] == 2
    dm = ddp_datamodule()
    dm.world_size = 1  # the reference: every batch of the step on one device
    dm.train_cfg.grad_accum = 4
    want, loss = reference(dm)
    _compare(got["grad"], want)
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert got["progress"] == pytest.approx(loss.item(), rel=1e-6)


def test_the_objective_rule_is_in_the_train_key(monkeypatch):
    """A model trained under the old rule (mean of micro-batch means) is not reused as cached."""
    from types import SimpleNamespace

    from ccl.stages import keys
    from tests.test_config import _compose

    cfg, bundle = _compose([]), SimpleNamespace(key="data")
    now = keys.train_key(cfg, bundle)
    monkeypatch.setattr(keys, "OBJECTIVE_VERSION", "micro-batch-mean")
    assert keys.train_key(cfg, bundle) != now
