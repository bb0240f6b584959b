"""Peak memory of the prefill modes and of decoding: default (full cache, then compression), layer-wise, chunked.

    python scripts/bench_memory.py model=smollm2-135m lengths=[1024,2048,4096] methods=[full,keydiff,snapkv] \
        r=[0.75] prefill_chunk=512 decode_tokens=4

    # on a GPU machine (random weights, no hub; scripts/gpu_check.sh runs it):
    python scripts/bench_memory.py model=qwen3-4b-random lengths=[8192,16384,32768] r=[0.5,0.75,0.9]

For each context length, method and r (``full``: once, r = 0) one JSON line with the peak memory of

- ``default``: the shared sweep's prefill (full attention, the whole cache of every layer, the method's scoring),
  then the compression at r (the full cache is held while the kept entries are gathered); the prefill itself runs
  once per method, the compression once per r;
- ``layerwise``: ``prefill=layerwise``, each layer compressed right after its attention;
- ``chunked``: ``prefill_chunk`` tokens per chunk, evicted to the budget after each chunk, layer-wise too (the
  serving setting: the cache never exceeds the budget plus one chunk). A method that cannot run chunked
  (docs/protocol.md, "Layer-wise and chunked prefill") gets null and ``chunked_skipped``; an adaptive method runs
  chunked with ``budget_policy=uniform`` (``chunked_budget_policy``);
- ``decode``: ``decode_tokens`` greedy steps (EOS off) over the compressed cache alone (the layer-wise prefill's,
  which is the default's), every prefill tensor freed first.

Every ``peak_*_bytes`` is the phase's peak (``harness/memory.py``); ``*_above_model_bytes`` subtracts the memory
held after the model loaded and warmed up (weights, runtime), so it is what the phase adds: caches, scores and
activations. On CUDA the allocator's peak is exact. On CPU it is the resident-set high-water mark (``VmHWM``, reset
before each phase); to make that track live tensors each context length runs in a worker process of its own with
glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``: large tensors are mapped and unmapped, not kept
in the heap), ``malloc_trim`` before each phase, and the weights copied into anonymous memory (a file-backed page
dropped under memory pressure and read again would count in a phase). Keys (``key=value``, lists ``[a,b]``): ``model``, ``lengths``,
``methods``, ``r``, ``modes`` (any of default, layerwise, chunked), ``prefill_chunk``, ``decode_tokens``,
``context`` (random | noise), ``seed``, ``device``, ``dtype``, ``attn_impl``, ``threads``, ``isolate`` (auto: a
worker per length on CPU), ``tokenizer`` (a tokenizer folder or model name replacing a random model's, e.g. the
SmolLM2 tokenizer scripts/gpu_check.sh carries where its package is not installed), ``out`` (folder, default results/perf; none: print only), ``figure`` (true: draw
``<out>/memory_<model>-<device>.png`` from the file). Rows upsert into ``<out>/memory_<model>-<device>.jsonl``.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from harness import memory  # noqa: E402
from harness.cell import Cell  # noqa: E402
from harness.configstep import ConfigStep  # noqa: E402
from harness.prefill_modes import prefill_error  # noqa: E402

MODES = ("default", "layerwise", "chunked")
DEFAULTS: dict = {
    "model": "smollm2-135m", "lengths": [1024, 2048, 4096], "methods": ["full", "keydiff", "snapkv"],
    "r": [0.5, 0.75, 0.9], "modes": list(MODES), "prefill_chunk": 512, "decode_tokens": 4, "context": "random",
    "seed": 0, "device": "auto", "dtype": "auto", "attn_impl": "sdpa", "threads": None, "isolate": "auto",
    "out": "results/perf", "figure": True, "tokenizer": None,
}
LIST_KEYS = {"lengths": int, "methods": str, "r": float, "modes": str}
INT_KEYS = {"prefill_chunk", "decode_tokens", "seed", "threads"}
ROW_KEY = ("model", "method", "n_context_tokens", "r", "dtype", "attn_impl", "context", "prefill_chunk")
MMAP_THRESHOLD = "65536"


def _bench_methods():
    """scripts/bench_methods.py (its context ids and vocabulary rule, so both benchmarks feed the same tokens)."""
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "scripts" / "bench_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv: list[str]) -> dict:
    """``key=value`` over ``DEFAULTS``; unknown keys and bad values stop with the valid choices."""
    args = _bench_methods().parse_key_values(argv, "bench_memory", DEFAULTS, LIST_KEYS, INT_KEYS, ("figure",))
    bad = [m for m in args["modes"] if m not in MODES]
    if bad:
        raise SystemExit(f"bench_memory: unknown mode {bad[0]!r}; modes: {', '.join(MODES)}")
    if any(not 0.0 <= r < 1.0 for r in args["r"]):
        raise SystemExit("bench_memory: every r must be in [0, 1) (the fraction of context KV pairs removed)")
    if args["decode_tokens"] < 1 or (args["prefill_chunk"] or 1) < 1 or any(n < 2 for n in args["lengths"]):
        raise SystemExit("bench_memory: decode_tokens and prefill_chunk must be >= 1 and lengths >= 2")
    if args["isolate"] not in ("auto", "true", "false"):
        raise SystemExit("bench_memory: isolate must be auto, true or false")
    return args


# --------------------------------------------------------------------------------------------- memory
def trim() -> None:
    """Free what Python and glibc hold on to, so a phase's resident peak starts from live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Phase:
    """``with Phase(devices) as p: ...`` -> ``p.peak`` (bytes), ``p.method``."""

    def __init__(self, devices):
        self.devices = devices

    def __enter__(self):
        if not any(torch.device(d).type == "cuda" for d in self.devices):
            trim()
        self.method = memory.reset_peak(self.devices)
        return self

    def __exit__(self, *exc):
        self.peak = memory.peak_bytes(self.devices)


# --------------------------------------------------------------------------------------------- one length
def measure_length(model, tok, n: int, methods, args: dict, static: dict) -> list[dict]:
    """Every (method, r) row at context length ``n`` in this process."""
    bm = _bench_methods()
    devices = memory.model_devices(model)
    step = ConfigStep(model, tok)
    vocab = bm.usable_vocab(model, tok)
    q_ids = bm.context_ids(tok, vocab, 1, "random", args["seed"] + 7)
    chunk = args["prefill_chunk"]
    warm = bm.context_ids(tok, vocab, min(n, 256), args["context"], args["seed"])
    for label, method, _policy, safeguard in methods:  # kernels, lazily loaded libraries, allocator pools
        cell = Cell(label, method, 0.5, None, "uniform", safeguard)
        step.compress(cell, step.prefill(warm, [cell]))
        ok = "chunked" in args["modes"] and prefill_error(method, "uniform", False, "layerwise", 128) is None
        step.prefill_compress(warm, cell, layerwise=True, chunk=128 if ok else None)  # two chunks: the masked path
    del warm
    trim()
    base = memory.current_bytes(devices)  # the loaded, warmed-up model: GPU bytes allocated, or the resident set
    ids = bm.context_ids(tok, vocab, n, args["context"], args["seed"])
    rows = []
    for label, method, policy, safeguard in methods:
        cells = [Cell(label, method, float(r), None, policy, safeguard) for r in (args["r"] if method.compresses else [0.0])]
        out = {c.r: {} for c in cells}
        if "default" in args["modes"]:
            with Phase(devices) as p:
                pre = step.prefill(ids, cells[:1])
            prefill_peak, full_bytes = p.peak, pre.full_bytes
            for c in cells:
                with Phase(devices) as p:
                    ctx = step.compress(c, pre)
                out[c.r].update(peak_default_bytes=max(prefill_peak, p.peak), default_prefill_s=round(pre.prefill_s, 4),
                                kv_bytes_full=int(full_bytes), kv_bytes_kept=int(ctx.kv_bytes))
                del ctx
            del pre
        for c in cells:
            row = out[c.r]
            with Phase(devices) as p:
                ctx, cost = step.prefill_compress(ids, c, layerwise=True)
            if "layerwise" in args["modes"]:
                row.update(peak_layerwise_bytes=p.peak, layerwise_prefill_s=round(cost.prefill_s, 4))
            row.update(kv_bytes_full=int(cost.full_bytes), kv_bytes_kept=int(ctx.kv_bytes),
                       kept_fraction=round(float(ctx.kept_fraction), 5))
            with Phase(devices) as p:
                _, n_gen, decode_s = step.decode([c], [ctx], q_ids, args["decode_tokens"], None, eos=set())
            row.update(peak_decode_bytes=p.peak, decode_ms_per_token=round(1000 * decode_s / args["decode_tokens"], 3))
            del ctx
            if "chunked" in args["modes"]:
                cc = c
                if c.policy != "uniform" and prefill_error(c.method, "uniform", False, "layerwise", chunk) is None:
                    cc = Cell(c.label, c.method, c.r, None, "uniform", c.safeguard)
                why = prefill_error(cc.method, cc.policy, False, "layerwise", chunk)
                if why:
                    row.update(peak_chunked_bytes=None, chunked_skipped=why)
                else:
                    with Phase(devices) as p:
                        ctx, cost = step.prefill_compress(ids, cc, layerwise=True, chunk=chunk)
                    row.update(peak_chunked_bytes=p.peak, chunked_prefill_s=round(cost.prefill_s, 4),
                               chunked_budget_policy=cc.policy, chunks=cost.n_chunks)
                    del ctx
        for c in cells:
            row = {**static, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "method": label, "method_class": method.name, "budget_policy": c.policy, "r": float(c.r),
                   "n_context_tokens": int(n), "prefill_chunk": chunk, "decode_tokens": int(args["decode_tokens"]),
                   "peak_mem_method": p.method, "model_bytes": int(base), **out[c.r]}
            for mode in (*MODES, "decode"):
                v = row.get(f"peak_{mode}_bytes")
                row[f"peak_{mode}_above_model_bytes"] = None if v is None else int(v - base)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _load(args: dict):
    from harness.models import load_model, model_spec
    from harness.plan import build_method, load_method_config

    if args["threads"]:
        torch.set_num_threads(int(args["threads"]))
    torch.manual_seed(args["seed"])
    spec = model_spec(args["model"])
    if args.get("tokenizer"):
        spec.tokenizer = args["tokenizer"]
    model, tok = load_model(spec, dtype=args["dtype"], device=args["device"], attn_impl=args["attn_impl"])
    methods = [build_method(load_method_config(name)) for name in args["methods"]]
    if next(model.parameters()).device.type == "cpu":  # weights read from a file mapping are file-backed pages, which
        with torch.no_grad():  # the kernel may drop and fault in again inside a phase: copied into anonymous memory
            for t in [*model.parameters(), *model.buffers()]:
                t.data = t.data.clone()
    return model, tok, methods


def _static(model, args: dict) -> dict:
    from harness.sweep import device_name, git_commit, versions

    spec, device = model.kvbench_spec, next(model.parameters()).device
    return {"model": spec.name, "model_source": spec.hub_id or spec.path or spec.package or spec.source,
            "device": device_name(device), "device_type": device.type, "dtype": str(model.dtype).replace("torch.", ""),
            "attn_impl": getattr(model, "kvbench_attn_impl", args["attn_impl"]), "context": args["context"],
            "threads": torch.get_num_threads() if device.type == "cpu" else None, "git_commit": git_commit(),
            **versions()}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "-" for c in text.lower()).strip("-") or "device"


def write_rows(path: Path, rows: list[dict]) -> None:
    """Upsert ``rows`` into the jsonl at ``path`` (rows with the same ``ROW_KEY`` are replaced), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = lambda r: tuple(json.dumps(r.get(k)) for k in ROW_KEY)  # noqa: E731
    new = {key(r) for r in rows}
    old = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []
    kept = [r for r in old if key(r) not in new] + rows
    kept.sort(key=lambda r: (r.get("method", ""), r.get("n_context_tokens", 0), r.get("r", 0.0)))
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)


def figure(path: Path) -> Path | None:
    """``memory_<model>-<device>.png`` next to the jsonl: per r, peak above the model vs context length, one line
    per (method, mode); the uncompressed reference's default prefill and the full cache's own bytes for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    rs = sorted({r["r"] for r in rows if r["r"] > 0})
    if not rows or not rs:
        return None
    styles = {"default": "-", "layerwise": "--", "chunked": ":", "decode": "-."}
    methods = sorted({r["method"] for r in rows if r["r"] > 0})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    lengths = sorted({r["n_context_tokens"] for r in rows})
    fig, axes = plt.subplots(1, len(rs), figsize=(max(6.5, 4.6 * len(rs)), 4.4), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], rs):
        full = sorted((x for x in rows if x["method"] == "full"), key=lambda x: x["n_context_tokens"])
        pts = [(x["n_context_tokens"], x.get("peak_default_above_model_bytes")) for x in full]
        pts = [(a, b / 2**20) for a, b in pts if b is not None]
        if pts:
            ax.plot(*zip(*pts), color="k", lw=2, marker="o", ms=3, label="full: default prefill")
        cache = sorted({(x["n_context_tokens"], x["kv_bytes_full"]) for x in rows if x.get("kv_bytes_full")})
        if cache:
            ax.plot([a for a, _ in cache], [b / 2**20 for _, b in cache], color="0.6", lw=1, label="full KV cache itself")
        for m in methods:
            pts = sorted((x for x in rows if x["method"] == m and x["r"] == r), key=lambda x: x["n_context_tokens"])
            for mode, ls in styles.items():
                xs = [(x["n_context_tokens"], x.get(f"peak_{mode}_above_model_bytes")) for x in pts]
                xs = [(a, b / 2**20) for a, b in xs if b is not None]
                if xs:
                    ax.plot(*zip(*xs), ls=ls, color=colors[m], marker="o", ms=3, label=f"{m}: {mode}")
        ax.set_title(f"r = {r}", fontsize=10)
        ax.set_xlabel("context tokens")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("peak memory above the loaded model (MiB)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    head = rows[0]
    chunk = next((x.get("prefill_chunk") for x in rows if x.get("prefill_chunk")), None)
    fig.suptitle(f"{head['model']}, {head['device']}, {head['dtype']}: peak memory of the prefill modes "
                 f"(chunks of {chunk}) and of decoding", fontsize=9)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main(argv: list[str]) -> list[dict]:
    if argv[:1] == ["--worker"]:  # one length in a process of its own: JSON rows on stdout
        args = json.loads(argv[1])
        model, tok, methods = _load(args)
        return measure_length(model, tok, int(args["lengths"][0]), methods, args, _static(model, args))
    args = parse_args(argv)
    cpu = args["device"] == "cpu" or (args["device"] == "auto" and not torch.cuda.is_available())
    isolate = args["isolate"] == "true" or (args["isolate"] == "auto" and cpu)
    rows: list[dict] = []
    out = None if str(args["out"]).lower() in ("none", "null", "") else Path(args["out"])
    out = ROOT / out if out is not None and not out.is_absolute() else out
    path = None

    def keep(got: list[dict]) -> None:  # after each length: an interrupted run keeps what it measured
        nonlocal path
        if got and out is not None:
            path = out / f"memory_{_slug(got[0]['model'])}-{_slug(got[0]['device'])}.jsonl"
            write_rows(path, got)
            print(f"[bench_memory] {len(got)} rows -> {path}", file=sys.stderr)

    if isolate:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
        for n in args["lengths"]:
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps({**args, "lengths": [n]})],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            got = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
            for row in got:
                print(json.dumps(row), flush=True)
            keep(got)
            if done.returncode:
                raise SystemExit(f"bench_memory: the worker for length {n} failed (exit {done.returncode})")
            rows += got
    else:
        model, tok, methods = _load(args)
        static = _static(model, args)
        for n in args["lengths"]:
            got = measure_length(model, tok, n, methods, args, static)
            keep(got)
            rows += got
    if path is not None and args["figure"]:
        print(f"[bench_memory] figure -> {figure(path)}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
