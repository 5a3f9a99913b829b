"""The persistent call cache: keys, dedup, and a real kill -9 in the middle of a run."""

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccl.spans.llm.base import GenerationParams, LLMError
from ccl.spans.llm.cache import CachedLLM, CallCache, call_key

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 20

# A run of N fake-slow calls through the real cache; each backend invocation is
# appended (and fsynced) to a log before the call "returns".
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from ccl.spans.llm.base import GenerationParams, LLMBackend, LLMError
    from ccl.spans.llm.cache import CachedLLM

    db, log, out, delay, n = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    if len(sys.argv) > 6:  # a start barrier: wait until every worker has started
        barrier, workers = sys.argv[6], int(sys.argv[7])
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        while len(os.listdir(barrier)) < workers:
            time.sleep(0.01)

    class Slow(LLMBackend):
        name = "slow"

        @property
        def model_id(self):
            return "fake-1"

        def generate(self, batch, params):
            answers = []
            for conv in batch:
                prompt = conv[-1]["content"]
                with open(log, "a") as f:
                    f.write(prompt + "\\n")
                    f.flush()
                    os.fsync(f.fileno())
                time.sleep(delay)
                answers.append(prompt.upper())
            return answers

    llm = CachedLLM(Slow(), db, batch_size=2, progress=False)
    prompts = [[{"role": "user", "content": f"prompt {i:02d}"}] for i in range(n)]
    outputs = llm.complete(prompts, GenerationParams(max_new_tokens=5))
    with open(out, "w") as f:
        json.dump({"outputs": outputs, "stats": llm.stats.to_dict()}, f)
    """
)


def _run(tmp_path, tag, delay, barrier=()):
    script = tmp_path / "run_calls.py"
    script.write_text(SCRIPT)
    log, out = tmp_path / f"log_{tag}.txt", tmp_path / f"out_{tag}.json"
    args = [sys.executable, str(script), str(tmp_path / "calls.sqlite"), str(log), str(out), str(delay),
            str(N_PROMPTS), *map(str, barrier)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, cwd=ROOT, env=env), log, out


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _cached_prompts(db):
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request FROM calls").fetchall()
    return [json.loads(r[0])["messages"][-1]["content"] for r in rows]


def test_kill_9_midway_then_resume_repeats_no_finished_call(tmp_path):
    proc, log1, out1 = _run(tmp_path, "killed", delay=0.15)
    deadline = time.monotonic() + 60
    while len(_lines(log1)) < 7 and time.monotonic() < deadline:  # >= 3 batches of 2 committed
        assert proc.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out1.exists()

    everything = {f"prompt {i:02d}" for i in range(N_PROMPTS)}
    cached = _cached_prompts(tmp_path / "calls.sqlite")
    assert 6 <= len(cached) < N_PROMPTS
    assert len(cached) == len(set(cached))
    assert set(cached) <= set(_lines(log1))  # only calls that ran were stored

    proc, log2, out2 = _run(tmp_path, "resumed", delay=0.0)
    assert proc.wait(timeout=60) == 0
    invoked = _lines(log2)
    assert len(invoked) == len(set(invoked))
    assert set(invoked) == everything - set(cached)  # finished calls are not repeated
    result = json.loads(out2.read_text())
    assert result["outputs"] == [f"PROMPT {i:02d}" for i in range(N_PROMPTS)]
    assert result["stats"]["cache_hits"] == len(cached)
    assert result["stats"]["generated"] == N_PROMPTS - len(cached)
    final = _cached_prompts(tmp_path / "calls.sqlite")
    assert sorted(final) == sorted(everything)  # one row per call, no duplicates

    proc, log3, out3 = _run(tmp_path, "again", delay=0.0)
    assert proc.wait(timeout=60) == 0
    assert _lines(log3) == []
    assert json.loads(out3.read_text())["stats"]["cache_hits"] == N_PROMPTS


def test_two_concurrent_workers_never_generate_a_call_twice(tmp_path):
    """Issue 24: workers sharing the cache claim each call before generating it, so two
    processes over the same prompts split the calls (none twice) and both get every answer.
    The old cache let both compute the same missing list and generate all 20 each."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    runs = [_run(tmp_path, tag, delay=0.1, barrier=(barrier, 2)) for tag in ("a", "b")]
    for proc, _, _ in runs:
        assert proc.wait(timeout=120) == 0
    invoked = [line for _, log, _ in runs for line in _lines(log)]
    everything = {f"prompt {i:02d}" for i in range(N_PROMPTS)}
    assert sorted(invoked) == sorted(everything)  # each call generated once, by one worker
    for _, log, out in runs:
        result = json.loads(out.read_text())
        assert result["outputs"] == [f"PROMPT {i:02d}" for i in range(N_PROMPTS)]
        assert result["stats"]["generated"] == len(_lines(log))
        assert result["stats"]["generated"] + result["stats"]["cache_hits"] == N_PROMPTS
    assert all(_lines(log) for _, log, _ in runs)  # both did work
    assert sorted(_cached_prompts(tmp_path / "calls.sqlite")) == sorted(everything)
    with sqlite3.connect(tmp_path / "calls.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # all released


def _open_at_once(path, barrier, errors):
    barrier.wait()
    try:
        CallCache(path).close()
    except Exception as err:  # noqa: BLE001 - any failure to open is what the test counts
        errors.put(f"{type(err).__name__}: {err}")


def test_workers_opening_one_new_cache_at_once_all_open_it(tmp_path):
    """Shards started together open the same new cache file at the same moment. SQLite does not
    wait for the lock that switching a new file to WAL takes, so without serialising the opening
    some workers failed with "database is locked" (13 of 120 opens, 8 processes at a time)."""
    ctx = multiprocessing.get_context("fork")  # children share the imported modules: a fast start
    errors = ctx.Queue()
    n_workers, rounds = 8, 40
    for r in range(rounds):
        path = tmp_path / f"round{r}" / "calls.sqlite"
        barrier = ctx.Barrier(n_workers)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, errors)) for _ in range(n_workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert all(proc.exitcode == 0 for proc in procs)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []


def test_claims_skip_live_workers_and_take_over_dead_or_stale_ones(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    me, live = "me", f"{socket.gethostname()}:{os.getpid()}:x"
    dead = f"{socket.gethostname()}:{_dead_pid()}:y"
    assert cache.claim(["k1", "k2"], live, limit=8) == ["k1", "k2"]
    assert cache.claim(["k1", "k2", "k3"], me, limit=8) == ["k3"]  # k1, k2 held by a live worker
    assert cache.claim(["k1"], me, limit=8, ttl_s=0.0) == ["k1"]  # older than the ttl: taken over
    assert cache.claim(["k4", "k5"], dead, limit=8) == ["k4", "k5"]
    assert cache.claim(["k4", "k5", "k6"], me, limit=2) == ["k4", "k5"]  # its process has exited
    cache.put_many([("k4", "b", "m", "{}", "out")])
    assert cache.claim(["k4"], "other", limit=8) == []  # stored: nothing to generate
    cache.release(me)
    assert cache.claim(["k3", "k5"], "other", limit=8) == ["k3", "k5"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_keys_cover_backend_model_prompt_and_parameters():
    conv = [{"role": "user", "content": "x"}]
    base = call_key("hf", "m", conv, GenerationParams())
    assert base == call_key("hf", "m", [{"content": "x", "role": "user"}], GenerationParams())
    others = {
        call_key("openai", "m", conv, GenerationParams()),
        call_key("hf", "m2", conv, GenerationParams()),
        call_key("hf", "m", [{"role": "user", "content": "y"}], GenerationParams()),
        call_key("hf", "m", conv, GenerationParams(temperature=0.7)),
        call_key("hf", "m", conv, GenerationParams(max_new_tokens=7)),
        call_key("hf", "m", conv, GenerationParams(stop=("\n",))),
    }
    assert base not in others and len(others) == 6


def test_duplicate_prompts_in_one_request_are_generated_once(tmp_path, stand_in_llm):
    echo = stand_in_llm("echo", "echo-1", lambda prompt, params: f"{prompt}@{params.temperature}")
    llm = CachedLLM(echo, tmp_path / "c.sqlite", batch_size=3, progress=False)
    convs = [[{"role": "user", "content": t}] for t in ["a", "b", "a", "c", "b"]]
    assert llm.complete(convs, GenerationParams()) == ["a@0.0", "b@0.0", "a@0.0", "c@0.0", "b@0.0"]
    assert echo.prompts == ["a", "b", "c"]
    assert llm.complete(convs, GenerationParams(temperature=0.5))[0] == "a@0.5"  # new params: new calls
    assert echo.prompts == ["a", "b", "c", "a", "b", "c"]
    assert len(CallCache(tmp_path / "c.sqlite")) == 6


def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path):
    bad = tmp_path / "calls.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LLMError, match="calls.sqlite.*not a usable"):
        CallCache(bad)
