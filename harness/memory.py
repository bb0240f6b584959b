"""Peak memory of one phase (prefill, decode), as the result columns and the benchmarks report it.

CUDA: the caching allocator's peak (``max_memory_allocated`` after ``reset_peak_memory_stats`` and a
synchronise), summed over every GPU the model sits on (``device=auto`` spreads layers over several; the caches
live with their layers). CPU: the process's resident-set high-water mark ``VmHWM``, reset through
``/proc/self/clear_refs`` at the start of a phase (Linux >= 4.0); where that is not available, ``ru_maxrss``,
the process-lifetime high-water mark (monotonic: a phase then reports an earlier phase's peak if higher).
"""

from __future__ import annotations

import resource

import torch

CUDA_METHOD = "cuda max_memory_allocated"
HWM_METHOD = "VmHWM after clear_refs"
MAXRSS_METHOD = "ru_maxrss (monotonic)"


def model_devices(model) -> list[torch.device]:
    """The distinct devices of a model's parameters, in layer order."""
    seen: list[torch.device] = []
    for p in model.parameters():
        if p.device not in seen:
            seen.append(p.device)
    return seen


def _cuda(devices) -> list[torch.device]:
    return [torch.device(d) for d in devices if torch.device(d).type == "cuda"]


def status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``), or None where there is no procfs."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := current RSS
        return True
    except OSError:
        return False


def reset_peak(devices) -> str:
    """Start a phase: reset the peak counters; returns the method the phase's peak is measured with."""
    cuda = _cuda(devices)
    if cuda:
        for d in cuda:
            torch.cuda.synchronize(d)
            torch.cuda.reset_peak_memory_stats(d)
        return CUDA_METHOD
    if _reset_hwm() and status_bytes("VmHWM") is not None:
        return HWM_METHOD
    return MAXRSS_METHOD


def current_bytes(devices) -> int:
    """Bytes held now: allocated on the GPUs, or the process's resident set on CPU."""
    cuda = _cuda(devices)
    if cuda:
        return sum(int(torch.cuda.memory_allocated(d)) for d in cuda)
    return status_bytes("VmRSS") or 0


def peak_bytes(devices) -> int:
    """Peak bytes since the last ``reset_peak``: summed allocator peaks over the GPUs, or the resident peak."""
    cuda = _cuda(devices)
    if cuda:
        for d in cuda:
            torch.cuda.synchronize(d)
        return sum(int(torch.cuda.max_memory_allocated(d)) for d in cuda)
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
