"""Peak extra memory of H2O's chunked attention column sums vs the n x n attention matrix (CPU).

One layer of random post-RoPE queries/keys (default SmolLM2-135M's shape: 9 query heads, 3 KV heads,
d = 64) at n = 16384. The measurement runs in a fresh child process: glibc is told to serve every
allocation over 64 KiB with mmap (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set at
once, and the kernel's resident high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right
before the call) minus the resident size just before the call is the peak extra memory of the call.
Prints one JSON line: n, block_size, peak_extra_bytes, dense_bytes (H_q * n * n * 4, float32), fraction,
seconds, plus the shape and the analytic size of the largest temporary.

    .venv/bin/python scripts/bench_h2o_memory.py [--n 16384] [--block-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, ROOT)
    import torch

    from harness import memory
    from methods.attention import column_sums

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, h_q, h_kv, n = args.dim, args.heads, args.kv_heads, args.n
    scaling = d**-0.5
    # warm-up on a small input so that kernels and lazily loaded libraries are resident before measuring
    column_sums(torch.randn(h_q, 256, d), torch.randn(h_kv, 256, d), scaling, args.block_size)
    q = torch.randn(h_q, n, d)
    k = torch.randn(h_kv, n, d)

    method = memory.reset_peak(["cpu"])
    rss_before = memory.current_bytes(["cpu"])
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    out = column_sums(q, k, scaling, args.block_size)
    seconds = time.perf_counter() - t0
    peak = memory.peak_bytes(["cpu"])
    if method == memory.MAXRSS_METHOD and maxrss_before > rss_before:
        method += ": an earlier peak may mask this one"
    assert torch.isfinite(out).all()
    # the column sums of a causal softmax add up to n (every row sums to 1)
    assert abs(out.double().sum().item() / (h_q * n) - 1.0) < 1e-3
    g = h_q // h_kv
    dense = h_q * n * n * 4
    extra = max(0, peak - rss_before)
    return {
        "n": n,
        "block_size": args.block_size,
        "peak_extra_bytes": extra,
        "dense_bytes": dense,
        "fraction": extra / dense,
        "seconds": round(seconds, 3),
        "heads": h_q,
        "kv_heads": h_kv,
        "dim": d,
        "threads": args.threads,
        "largest_temporary_bytes": g * args.block_size * n * 4,  # one block's float32 logits
        "measure": method,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, os.path.abspath(__file__), "--child"] + sys.argv[1:]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(res.returncode)
    print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
