"""Per-configuration costs: prefill, scoring (and its fraction of prefill), decode ms/token at each r next to the
full cache's, KV bytes held, peak memory. Each configuration is timed alone (batch of one), after a warm-up, over
several repeats; medians are reported, and a table is printed at the end.

    python scripts/bench_methods.py model=smollm2-135m lengths=[1024,2048] \
        methods=[full,streamingllm,h2o,snapkv,keydiff,nestedkv] r=[0.5,0.75,0.9] decode_tokens=16

    # on a GPU machine (random weights, no hub access needed):
    python scripts/bench_methods.py model=qwen3-4b-random lengths=[4096,8192,16384,32768] decode_tokens=32
    python scripts/bench_methods.py model=llama3.2-1b-random lengths=[4096,8192,16384,32768] decode_tokens=32

Keys (``key=value``; lists as ``[a,b]`` or ``a,b``): ``model`` (a conf/model name, directory or hub id),
``lengths``, ``methods`` (conf/method names), ``r``, ``decode_tokens``, ``repeats`` (timed repetitions of every
compression and decode, default 5; medians are reported, every value is kept in ``*_all``), ``prefill_repeats``
(of every prefill; default ``repeats``),
``context`` (``random``: uniform random token ids, seeded; ``noise``: RULER's noise sentence repeated), ``seed``,
``device``, ``dtype``, ``attn_impl``, ``threads`` (torch CPU threads; default torch's), ``warmup`` (true: one
untimed short prefill and decode per method first), ``out`` (folder, default ``results/perf``; ``none``: print
only).

For each (method, length): a context of exactly ``length`` token ids is prefilled with full attention, scoring
*that method only* (so ``scoring_s`` is its own; ``prefill_s`` excludes it, as the harness reports it, and
``scoring_fraction = scoring_s / prefill_s``). Then for each r the cache is compressed (``compress_s``: the
gather) and the prefilled cache is freed. Then ``repeats`` rounds each decode the full cache of the same context
(the reference) and every r once, in that order, each alone: ``decode_tokens`` tokens greedily, with EOS
disabled so that every configuration decodes exactly the same number of steps; the question part is a single
token, so every step is a one-token forward over the cache (``decode_ms_per_token = decode_s / decode_tokens``,
medians). ``full_decode_ms_per_token`` is the reference's median over the same rounds (a load that drifts
reaches both) and ``decode_vs_full`` the ratio. ``full`` has one row (r = 0). Prefill, selection, compression
and decode are the harness's own (``harness/configstep.py``, the path a sweep takes). One JSON line per (model,
method, length, r) is printed and upserted into ``<out>/<model>-<device>.jsonl`` (rows with the same model,
method, length, r, dtype, attn_impl, context and decode_tokens are replaced; the file is rewritten
atomically).

Memory: ``kv_bytes_kept`` is what the configuration's compressed cache holds (docs/protocol.md, "What a
compressed cache holds"). Peak memory, per phase (prefill incl. scoring; one decode): on CUDA the allocator
peak (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` and a synchronise) and its delta
over the bytes allocated before the phase. On CPU the process's resident-set high-water mark (``VmHWM``), reset
through ``/proc/self/clear_refs`` before each phase, and its delta over the resident size before the phase;
where the reset is not possible, ``ru_maxrss`` (monotonic over the process). ``peak_mem_note`` says which. A
decode phase holds the weights, the method's compressed contexts and the reference's full cache.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from harness import attention, memory  # noqa: E402
from harness.cell import Cell  # noqa: E402
from harness.configstep import ConfigStep  # noqa: E402
from harness.models import load_model  # noqa: E402
from harness.plan import build_method, load_method_config  # noqa: E402
from harness.sweep import device_name, git_commit, versions  # noqa: E402

DEFAULTS: dict = {
    "model": "smollm2-135m",
    "lengths": [1024, 2048],
    "methods": ["full", "streamingllm", "h2o", "snapkv", "keydiff", "nestedkv"],
    "r": [0.5, 0.75, 0.9],
    "decode_tokens": 32,
    "repeats": 5,
    "prefill_repeats": None,
    "context": "random",
    "seed": 0,
    "device": "auto",
    "dtype": "auto",
    "attn_impl": "sdpa",
    "threads": None,
    "warmup": True,
    "out": "results/perf",
}
LIST_KEYS = {"lengths": int, "methods": str, "r": float}
INT_KEYS = {"decode_tokens", "repeats", "prefill_repeats", "seed", "threads"}
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."  # RULER niah.py


# ------------------------------------------------------------------------------------------- arguments
def _as_list(value: str, cast) -> list:
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return [cast(v.strip().strip("'\"")) for v in value.split(",") if v.strip()]


def _as_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_key_values(argv: list[str], prog: str, defaults: dict, list_keys: dict, int_keys, bool_keys) -> dict:
    """``key=value`` arguments over ``defaults`` (the benchmarks' shared command line): unknown keys stop with the
    valid ones; list, integer (``none``/``null``: None) and boolean keys are converted, the rest kept as text."""
    args = dict(defaults)
    for a in argv:
        if "=" not in a:
            raise SystemExit(f"{prog}: expected key=value, got {a!r}; keys: {', '.join(defaults)}")
        key, value = a.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in defaults:
            raise SystemExit(f"{prog}: unknown key {key!r}; keys: {', '.join(defaults)}")
        if key in list_keys:
            args[key] = _as_list(value, list_keys[key])
        elif key in int_keys:
            args[key] = None if value.lower() in ("none", "null", "") else int(value)
        elif key in bool_keys:
            args[key] = _as_bool(value)
        else:
            args[key] = value
    return args


def parse_args(argv: list[str]) -> dict:
    """``key=value`` arguments over ``DEFAULTS``; unknown keys and bad values fail with the valid choices."""
    args = parse_key_values(argv, "bench_methods", DEFAULTS, LIST_KEYS, INT_KEYS, ("warmup",))
    for r in args["r"]:
        if not 0.0 <= r < 1.0:
            raise SystemExit(f"bench_methods: r={r} is outside [0, 1) (the fraction of context KV pairs removed)")
    if args["prefill_repeats"] is None:
        args["prefill_repeats"] = args["repeats"]
    if min(args["decode_tokens"], args["repeats"], args["prefill_repeats"]) < 1 or any(n < 2 for n in args["lengths"]):
        raise SystemExit("bench_methods: decode_tokens, repeats and prefill_repeats must be >= 1 and lengths >= 2")
    if args["context"] not in ("random", "noise"):
        raise SystemExit(f"bench_methods: context must be random or noise, got {args['context']!r}")
    return args


# ---------------------------------------------------------------------------------------------- inputs
def context_ids(tokenizer, vocab_size: int, n: int, kind: str, seed: int) -> torch.Tensor:
    """(1, n) token ids: uniform random ids (seeded; ids below 256 are skipped so special tokens stay out), or
    RULER's noise sentence tokenised and repeated, cut to exactly n."""
    if kind == "noise":
        unit = tokenizer(" " + NOISE, add_special_tokens=False).input_ids
        reps = -(-n // len(unit))
        return torch.tensor((unit * reps)[:n], dtype=torch.long)[None]
    g = torch.Generator().manual_seed(seed + n)
    return torch.randint(256, vocab_size, (1, n), generator=g)


def usable_vocab(model, tokenizer) -> int:
    """Ids valid for both the model's embedding and the tokenizer (random models use SmolLM2's tokenizer)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return min(int(cfg.vocab_size), len(tokenizer))


# ---------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of one phase: ``start()`` ... ``stop() -> (peak_bytes, delta_bytes)`` (``harness.memory``)."""

    def __init__(self, devices):
        self.devices = list(devices)
        self.method = memory.CUDA_METHOD if any(torch.device(d).type == "cuda" for d in self.devices) else None
        self.before = 0

    def start(self) -> None:
        self.method = memory.reset_peak(self.devices)
        self.before = memory.current_bytes(self.devices)

    def stop(self) -> tuple[int, int]:
        peak = memory.peak_bytes(self.devices)
        return peak, max(0, peak - self.before)

    def note(self) -> str:
        if self.method == memory.CUDA_METHOD:
            return ("CUDA allocator peak per phase (reset_peak_memory_stats + synchronize); *_delta_bytes = peak minus "
                    "memory_allocated before the phase (weights excluded); the caching allocator's reserve is not "
                    "counted")
        if self.method == memory.HWM_METHOD:
            return ("CPU: process resident-set high-water mark (VmHWM) reset via /proc/self/clear_refs before each "
                    "phase: peak_mem_*_bytes include weights, Python and allocator caches; *_delta_bytes = peak minus "
                    "RSS before the phase. glibc keeps freed heap pages resident, so an allocation that reuses them "
                    "is not counted in the delta (a lower bound); the prefill phase's delta includes the new cache")
        return ("CPU: ru_maxrss, the process-lifetime resident high-water mark (monotonic: a phase's value can be an "
                "earlier phase's peak); *_delta_bytes = that minus RSS before the phase")


# --------------------------------------------------------------------------------------------- running
def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def reference_context(step: ConfigStep, ids: torch.Tensor):
    """The full cache of ``ids`` as a decode context (the uncompressed reference every configuration is timed
    next to): (cell, context)."""
    from methods import make_method

    cell = Cell("full", make_method("full"), 0.0, None, "uniform", 0.2)
    pre = step.prefill(ids, [cell])
    return cell, step.compress(cell, pre)


def bench_method(model, tok, label, method, policy, safeguard, ids, q_ids, rs, args, mem, static, reference=None
                 ) -> list[dict]:
    """Rows of one method at one length. Prefill (``repeats`` times, scoring this method only), then each r's
    selection and compression (timed, ``repeats`` times); the prefilled cache is freed; then ``repeats`` rounds,
    each decoding the full-cache ``reference`` (cell, context) and every r once, in that order, each alone (batch
    of one): the medians of a configuration and of the reference come from the same rounds, so a load that
    drifts over the run reaches both."""
    device = next(model.parameters()).device
    step = ConfigStep(model, tok)  # the engine's prefill, select, compress, decode (harness/configstep.py)
    n = ids.shape[-1]
    cells = [Cell(label, method, float(r), None, policy, safeguard) for r in (rs if method.compresses else [0.0])]
    prefill_all, scoring_all = [], []
    pre = None
    pre_peak = pre_delta = 0
    for _ in range(args["prefill_repeats"]):
        del pre
        pre = None
        mem.start()
        pre = step.prefill(ids, cells[:1])  # one method: its scoring is timed alone
        pk, dl = mem.stop()
        pre_peak, pre_delta = max(pre_peak, pk), max(pre_delta, dl)
        prefill_all.append(pre.prefill_s)
        scoring_all.append(pre.seconds[cells[0].score_key])
    full_bytes = pre.full_bytes
    prefill_s, scoring_s = _median(prefill_all), _median(scoring_all)
    ctxs, compress_all = [], []
    for cell in cells:
        kept = step.select(cell, pre)
        times = []
        for _ in range(args["repeats"]):
            ctx = None
            attention.sync(device)
            t0 = time.perf_counter()
            ctx = step.compress(cell, pre, kept)
            attention.sync(device)
            times.append(time.perf_counter() - t0)
        ctxs.append(ctx)
        compress_all.append(times)
    del pre  # the decodes hold the weights, the compressed contexts and the reference only
    timed = list(zip(cells, ctxs)) if reference is None or not method.compresses else [reference, *zip(cells, ctxs)]
    decode_all: list[list[float]] = [[] for _ in timed]
    dec_peak, dec_delta = [0] * len(timed), [0] * len(timed)
    for _ in range(args["repeats"]):
        for i, (cell, ctx) in enumerate(timed):
            mem.start()
            _, ng, decode_s = step.decode([cell], [ctx], q_ids, args["decode_tokens"], None, eos=set())
            pk, dl = mem.stop()
            dec_peak[i], dec_delta[i] = max(dec_peak[i], pk), max(dec_delta[i], dl)
            if ng[0] != args["decode_tokens"]:
                raise RuntimeError(f"{label} r={cell.r}: decoded {ng[0]} tokens, expected {args['decode_tokens']}")
            decode_all[i].append(decode_s)
    ref_ms = 1000.0 * _median(decode_all[0]) / args["decode_tokens"]  # the reference, or the full method itself
    first = len(timed) - len(cells)
    rows = []
    for i, (cell, ctx) in enumerate(timed[first:], start=first):
        decode_s = _median(decode_all[i])
        ms = 1000.0 * decode_s / args["decode_tokens"]
        rows.append({
            **static,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": label,
            "method_class": method.name,
            "method_params": json.dumps(method.params(), sort_keys=True, default=str),
            "budget_policy": policy if method.compresses else "uniform",
            "r": float(cell.r),
            "n_context_tokens": int(n),
            "n_question_tokens": int(q_ids.shape[-1]),
            "decode_tokens": int(args["decode_tokens"]),
            "n_generated_tokens": int(args["decode_tokens"]),
            "prefill_s": round(prefill_s, 5),
            "scoring_s": round(scoring_s, 5),
            "scoring_fraction": round(scoring_s / prefill_s, 5) if prefill_s > 0 else None,
            "prefill_tokens_per_s": round(n / prefill_s, 1) if prefill_s > 0 else None,
            "compress_s": round(_median(compress_all[i - first]), 5),
            "decode_s": round(decode_s, 5),
            "decode_ms_per_token": round(ms, 3),
            # the full cache decoded in the same rounds (median): the paired reference of this row
            "full_decode_ms_per_token": round(ref_ms, 3),
            "decode_vs_full": round(ms / ref_ms, 4) if ref_ms > 0 else None,
            "n_kept_mean": float(ctx.n_kept_mean),
            "kept_fraction": round(float(ctx.kept_fraction), 5),
            "kv_bytes_full": int(full_bytes),
            "kv_bytes_kept": int(ctx.kv_bytes),
            "kv_bytes_ratio": round(ctx.kv_bytes / full_bytes, 5) if full_bytes else None,
            "peak_mem_prefill_bytes": int(pre_peak),
            "peak_mem_prefill_delta_bytes": int(pre_delta),
            "peak_mem_decode_bytes": int(dec_peak[i]),
            "peak_mem_decode_delta_bytes": int(dec_delta[i]),
            "peak_mem_bytes": int(max(pre_peak, dec_peak[i])),
            "peak_mem_method": mem.method,
            "peak_mem_note": mem.note(),
            "prefill_s_all": [round(x, 5) for x in prefill_all],
            "scoring_s_all": [round(x, 5) for x in scoring_all],
            "decode_s_all": [round(x, 5) for x in decode_all[i]],
            "full_decode_s_all": [round(x, 5) for x in decode_all[0]],
        })
    del ctxs
    return rows


def summary(rows: list[dict]) -> str:
    """A plain-text table of the rows: decode ms/token (median) next to the full cache's from the same rounds,
    KV bytes held and the decode phase's peak, per length, method and r."""
    head = f"{'n':>6} {'method':<22} {'policy':<8} {'r':>5} {'ms/token':>9} {'full':>8} {'vs full':>8} " \
           f"{'KV MiB':>8} {'KV %':>6} {'peak MiB':>9} {'+decode':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['n_context_tokens']:>6} {r['method']:<22} {r['budget_policy']:<8} {r['r']:>5.2f} "
            f"{r['decode_ms_per_token']:>9.2f} {r['full_decode_ms_per_token']:>8.2f} {r['decode_vs_full']:>8.3f} "
            f"{r['kv_bytes_kept'] / 2**20:>8.1f} {100 * r['kv_bytes_ratio']:>6.1f} "
            f"{r['peak_mem_decode_bytes'] / 2**20:>9.0f} {r['peak_mem_decode_delta_bytes'] / 2**20:>8.1f}")
    lines.append("ms/token: median decode ms/token of the configuration decoded alone; full: the full cache's median "
                 "over the same rounds; peak MiB: the decode phase's peak (" + (rows[0]["peak_mem_method"] if rows
                 else "") + "); +decode: its rise over the memory held before the decode")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "-" for c in text.lower()).strip("-") or "device"


ROW_KEY = ("model", "method", "n_context_tokens", "r", "dtype", "attn_impl", "context", "decode_tokens")


def write_rows(path: Path, rows: list[dict]) -> None:
    """Upsert ``rows`` into the jsonl at ``path`` (same ROW_KEY replaced), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = lambda r: tuple(json.dumps(r.get(k)) for k in ROW_KEY)  # noqa: E731
    new = {key(r) for r in rows}
    old = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            old = [json.loads(line) for line in f if line.strip()]
    kept = [r for r in old if key(r) not in new] + rows
    kept.sort(key=lambda r: (r.get("method", ""), r.get("n_context_tokens", 0), r.get("r", 0.0)))
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r, sort_keys=False) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> list[dict]:
    args = parse_args(argv)
    if args["threads"]:
        torch.set_num_threads(int(args["threads"]))
    torch.manual_seed(args["seed"])
    model, tok = load_model(args["model"], dtype=args["dtype"], device=args["device"], attn_impl=args["attn_impl"])
    device = next(model.parameters()).device
    spec = model.kvbench_spec
    vocab = usable_vocab(model, tok)
    methods = []
    for name in args["methods"]:
        label, method, policy, safeguard = build_method(load_method_config(name))
        methods.append((label, method, policy, safeguard))
    static = {
        "model": spec.name,
        "model_source": spec.hub_id or spec.path or spec.package or spec.source,
        "device": device_name(device),
        "device_type": device.type,
        "dtype": str(model.dtype).replace("torch.", ""),
        "attn_impl": getattr(model, "kvbench_attn_impl", args["attn_impl"]),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "context": args["context"],
        "repeats": int(args["repeats"]),
        "prefill_repeats": int(args["prefill_repeats"]),
        "git_commit": git_commit(),
        **versions(),
    }
    devices = memory.model_devices(model)
    mem = PeakMemory(devices)
    q_ids = context_ids(tok, vocab, 1, "random", args["seed"] + 7)  # one-token question: every step is 1 token
    if args["warmup"]:  # untimed: kernels, lazily loaded libraries, allocator pools
        w = context_ids(tok, vocab, min(256, min(args["lengths"])), args["context"], args["seed"])
        ref = reference_context(ConfigStep(model, tok), w)
        for label, method, policy, safeguard in methods:
            bench_method(model, tok, label, method, policy, safeguard, w, q_ids, args["r"][:1],
                         {**args, "repeats": 1, "prefill_repeats": 1, "decode_tokens": 2}, PeakMemory(devices),
                         static, ref)
    out = None if str(args["out"]).lower() in ("none", "null", "") else Path(args["out"])
    if out is not None and not out.is_absolute():
        out = ROOT / out
    path = out / f"{_slug(spec.name)}-{_slug(static['device'])}.jsonl" if out else None
    all_rows = []
    for n in args["lengths"]:
        ids = context_ids(tok, vocab, n, args["context"], args["seed"])
        reference = reference_context(ConfigStep(model, tok), ids)
        for label, method, policy, safeguard in methods:
            rows = bench_method(model, tok, label, method, policy, safeguard, ids, q_ids, args["r"], args, mem, static,
                                reference)
            for row in rows:
                print(json.dumps(row), flush=True)
            all_rows += rows
            if path is not None:
                write_rows(path, rows)  # after each method: an interrupted run keeps what it measured
        del reference
    print(summary(all_rows), flush=True)
    return all_rows


if __name__ == "__main__":
    main(sys.argv[1:])
