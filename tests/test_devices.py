"""device=cuda:free: several jobs on one host each hold a GPU of their own (lock files; GPUs faked)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from harness import devices
from harness.errors import UsageError


@pytest.fixture
def two_gpus(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("KVBENCH_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path / "locks"


def test_concurrent_runs_hold_different_gpus_and_a_third_waits(two_gpus, monkeypatch):
    waiting = threading.Event()  # set when a claim has tried every GPU and goes to sleep before the next round

    def sleep(seconds):
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr(devices, "time", SimpleNamespace(sleep=sleep))
    with devices.claimed_device("cuda:free") as first, devices.claimed_device("cuda:free") as second:
        assert {first, second} == {"cuda:0", "cuda:1"}
        got = []
        third = threading.Thread(target=lambda: got.append(_claim_once()))
        third.start()
        assert waiting.wait(timeout=10)  # both GPUs are held: the third run found none free...
        assert not got  # ...and is still waiting
    third.join(timeout=10)
    assert got and got[0] in {"cuda:0", "cuda:1"}  # it ran once a GPU was handed back


def _claim_once() -> str:
    with devices.claimed_device("cuda:free", wait_s=0.01) as dev:
        return dev


def test_a_gpu_is_handed_back_when_the_run_fails(two_gpus):
    with pytest.raises(RuntimeError):
        with devices.claimed_device("cuda:free"):
            raise RuntimeError("the run failed")
    with devices.claimed_device("cuda:free") as a, devices.claimed_device("cuda:free") as b:
        assert {a, b} == {"cuda:0", "cuda:1"}


def test_locks_are_named_by_the_physical_gpu(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with devices.claimed_device("cuda:free") as dev:
        assert dev == "cuda:0"
        assert (two_gpus / "gpu-3.lock").exists() and not (two_gpus / "gpu-0.lock").exists()


def test_other_devices_pass_through_and_bad_ones_are_one_clear_error(monkeypatch):
    for name in ("auto", "cpu", "cuda", "cuda:3"):
        with devices.claimed_device(name) as dev:
            assert dev == name
    with pytest.raises(UsageError, match="cuda:free"):
        devices.check_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="none is visible"):
        with devices.claimed_device("cuda:free"):
            pass
