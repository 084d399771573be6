"""Compute threads that fit the machine as it is: the cores free now, re-checked between epochs, stored with the run."""
import json
import subprocess
import sys
import time

import pytest
import torch

from engine.models import threads


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    monkeypatch.delenv("PLL_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, cpus, busy, expected", [
    (2, 2, 0.0, 2),
    (2, 2, 1.0, 1),     # one other busy process on a 2-core machine: one thread, not two waiting for each other
    (2, 2, 2.0, 1),     # never fewer than one
    (4, 8, 5.2, 3),     # affinity 4 of 8 CPUs, 5.2 busy elsewhere: 2.8 free -> 3
    (4, 8, 0.3, 4),     # never more than the allowed cores
])
def test_threads_follow_the_free_cores(monkeypatch, cores, cpus, busy, expected):
    monkeypatch.setattr(threads, "allowed_cores", lambda: cores)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda sample_s=threads.SAMPLE_S: busy)
    choice = threads.choose_threads()
    assert choice.threads == expected, choice
    assert choice.busy_elsewhere == pytest.approx(busy)


def test_an_explicit_number_wins(monkeypatch):
    monkeypatch.setattr(threads, "busy_elsewhere", lambda sample_s=0: pytest.fail("measured although fixed"))
    assert threads.choose_threads(3).threads == 3
    monkeypatch.setenv("PLL_THREADS", "1")
    assert threads.choose_threads().threads == 1 and "PLL_THREADS" in threads.choose_threads().reason


def test_a_busy_process_is_seen():
    """A real spinning process beside this one: at least most of a core counts as busy elsewhere (other load on
    the machine can only add to it)."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.busy_elsewhere(0.5) >= 0.6
    finally:
        spin.kill()
        spin.wait()


def test_refit_changes_threads_between_long_epochs_and_records_why(monkeypatch):
    torch.set_num_threads(2)
    free = iter([1, 1, 2])
    monkeypatch.setattr(threads, "choose_threads", lambda explicit=None: threads.ThreadChoice(
        next(free), "test", 2, 1.0))
    said = []
    refit = threads.Refit(log=said.append)
    refit(0.1)  # too short an epoch to measure: nothing happens
    assert torch.get_num_threads() == 2 and refit.changes == []
    refit(5.0)
    assert torch.get_num_threads() == 1 and refit.changes[0]["from"] == 2 and refit.changes[0]["threads"] == 1
    refit(5.0)  # still 1 free: no change recorded
    refit(5.0)
    assert torch.get_num_threads() == 2 and len(refit.changes) == 2 and said == ["threads: 2 -> 1 (test)",
                                                                                 "threads: 1 -> 2 (test)"]


def test_a_run_uses_the_threads_it_is_given_and_stores_the_choice(tmp_path):
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    seen = []
    spec = RunSpec(data="sim:personas=2,train_per_persona=2,val_per_persona=1,test_per_persona=1", model="tiny-random",
                   methods=["unified"], threads=1, train={"epochs": 2, "max_new_tokens": 2, "patience": 0})
    execute_run(spec, tmp_path / "r", progress=lambda *a, **k: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {1}
    config = json.loads(json.loads((tmp_path / "r" / "run.json").read_text())["config_json"])
    assert config["threads_used"]["initial"]["threads"] == 1 and config["threads_used"]["changes"] == []
    with pytest.raises(Exception, match="threads must be an integer >= 1"):
        RunSpec(data="sim", threads=0).check()


def test_the_trainer_calls_back_after_every_epoch():
    from engine.data.dataset import load_dataset
    from engine.models.loading import load_model
    from engine.training.config import TrainConfig
    from engine.training.encode import encode_example
    from engine.training.lora import inject_lora, remove_lora
    from engine.training.trainer import train_adapters_batched
    lm = load_model("tiny-random", precision="fp32")
    cfg = TrainConfig(r=2, epochs=3, patience=0, batch_size=2, max_new_tokens=2)
    ds = load_dataset("sim:personas=1,train_per_persona=2,val_per_persona=1,test_per_persona=1")
    data = [[encode_example(lm.tokenizer, e, cfg) for e in ds.split("train")]]
    inject_lora(lm.model, 1, cfg.r, cfg.alpha, 0.0, cfg.targets)
    calls = []
    try:
        stats = train_adapters_batched(lm, data, cfg, between_epochs=calls.append)
    finally:
        remove_lora(lm.model)
    assert len(calls) == stats.epochs[0] == 3 and all(s >= 0 for s in calls)
