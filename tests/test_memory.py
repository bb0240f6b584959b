"""harness.memory on CPU: a phase's peak sees a large temporary freed before the phase ends, and a reset
starts the next phase from the current resident size (not the process-lifetime peak)."""

from __future__ import annotations

import torch

from conftest import tiny_model
from harness import memory


def test_model_devices_lists_each_device_once():
    assert memory.model_devices(tiny_model("llama")) == [torch.device("cpu")]


def test_phase_peak_sees_a_freed_temporary_and_reset_forgets_it():
    method = memory.reset_peak(["cpu"])
    assert method in (memory.HWM_METHOD, memory.MAXRSS_METHOD)
    before = memory.current_bytes(["cpu"])
    size = 256 * 2**20
    x = torch.ones(size // 4, dtype=torch.float32)  # 256 MiB, touched
    del x
    peak = memory.peak_bytes(["cpu"])
    assert peak - before >= size * 0.9
    if method == memory.HWM_METHOD:  # clear_refs works here: the next phase does not inherit that peak
        memory.reset_peak(["cpu"])
        assert memory.peak_bytes(["cpu"]) < peak - size // 2
