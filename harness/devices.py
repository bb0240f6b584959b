"""Which device a run uses: ``device=auto|cpu|cuda|cuda:N|cuda:free``.

``cuda:free`` is for several jobs on one host with several GPUs (the joblib launcher): each run claims the first
GPU no other run on this host holds, through an exclusive lock file per GPU (``fcntl.flock``), keeps it for the
whole run and frees it when the run ends, so jobs that end early hand their GPU to the next job whatever the
order. When every GPU is held the run waits for one. Lock files live in ``$KVBENCH_LOCK_DIR`` (default: the
system temp folder) and are named by the GPU's ``CUDA_VISIBLE_DEVICES`` entry, so jobs that see different
subsets of the GPUs still agree on which physical GPU is which.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.errors import UsageError

FREE = "cuda:free"
WAIT_S = 5.0


def check_device(device: str) -> None:
    if not (device in ("auto", "cpu", "cuda", "mps", FREE) or re.fullmatch(r"cuda:\d+", device)):
        raise UsageError(f"device={device!r} is not a device; use auto, cpu, cuda, cuda:N or cuda:free (several "
                         f"jobs on one host: each takes a GPU no other job holds)")
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU build)"
            raise UsageError(f"device={device} needs a CUDA GPU and none is visible{build}; use device=cpu or device=auto")
        index = device.partition(":")[2]
        if index.isdigit() and int(index) >= count:
            raise UsageError(f"device={device}: only {count} CUDA GPU(s) visible (cuda:0 to cuda:{count - 1})")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device=mps needs Apple's Metal backend, which is not available here; use device=cpu or auto")


def lock_dir() -> Path:
    return Path(os.environ.get("KVBENCH_LOCK_DIR") or Path(tempfile.gettempdir()) / "kvbench-gpu-locks")


def gpu_names(count: int) -> list[str]:
    """Names of the visible GPUs 0..count-1 as the host knows them (their ``CUDA_VISIBLE_DEVICES`` entries)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


@contextlib.contextmanager
def claimed_device(device: str, wait_s: float = WAIT_S) -> Iterator[str]:
    """``device`` itself, or for ``cuda:free`` the ``cuda:N`` this run holds until the block ends (``device`` is
    checked by ``make_plan``, before this)."""
    if device != FREE:
        yield device
        return
    import fcntl

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UsageError("device=cuda:free needs CUDA GPUs and none is visible; use device=cpu")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    names = gpu_names(count)
    announced = False
    while True:
        for index, name in enumerate(names):
            handle = open(folder / f"gpu-{name}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()}\n")
                handle.flush()
                print(f"[kvbench] device=cuda:free: this run holds GPU {name} (cuda:{index})", file=sys.stderr)
                yield f"cuda:{index}"
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not announced:
            announced = True
            print(f"[kvbench] device=cuda:free: all {count} GPUs are held by other runs (locks in {folder}); waiting",
                  file=sys.stderr)
        time.sleep(wait_s)
