"""scripts/bench_memory.py on a tiny random model, in-process: one row per (method, r), every mode measured where the
method can run it (the reason where not), kept bytes as the budget says, the upsert, the figure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "scripts" / "bench_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_modes_and_file(tmp_path):
    bench = _bench()
    args = ["model=tiny-llama-random", "device=cpu", "dtype=float32", "lengths=[128]", "methods=[full,h2o,nestedkv]",
            "r=[0.5,0.75]", "prefill_chunk=32", "decode_tokens=2", "isolate=false", f"out={tmp_path}"]
    rows = bench.main(args)
    assert [(r["method"], r["r"]) for r in rows] == [("full", 0.0), ("h2o", 0.5), ("h2o", 0.75), ("nestedkv", 0.5),
                                                     ("nestedkv", 0.75)]
    for r in rows:
        assert r["n_context_tokens"] == 128 and r["prefill_chunk"] == 32 and r["model_bytes"] > 0
        for mode in ("default", "layerwise", "decode"):
            assert r[f"peak_{mode}_bytes"] > 0
            assert r[f"peak_{mode}_above_model_bytes"] == r[f"peak_{mode}_bytes"] - r["model_bytes"]
    full, h2o, nested = rows[0], rows[1], rows[3]
    # tiny llama: 2 layers x 2 KV heads x 16 dims x (keys + values) x 4 bytes = 512 bytes per token
    assert full["kv_bytes_full"] == full["kv_bytes_kept"] == 128 * 512
    assert h2o["kv_bytes_kept"] == 64 * 512 and rows[2]["kv_bytes_kept"] == 32 * 512  # uniform: r = 0.5, 0.75
    assert full["peak_chunked_bytes"] > 0 and full["chunks"] == 4
    assert h2o["peak_chunked_bytes"] is None and "every query of the prefill" in h2o["chunked_skipped"]
    assert nested["budget_policy"] == "adaptive" and nested["chunked_budget_policy"] == "uniform"
    assert nested["peak_chunked_bytes"] > 0
    path = tmp_path / "memory_tiny-llama-random-cpu.jsonl"
    assert [json.loads(x)["method"] for x in path.read_text().splitlines()] == [r["method"] for r in rows]
    assert path.with_suffix(".png").exists()
    bench.main(args[:4] + ["methods=[full]", *args[5:]])  # the same key again: replaced, not appended
    assert len(path.read_text().splitlines()) == len(rows)
