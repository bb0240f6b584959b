"""scripts/bench_methods.py on a tiny random model: JSON fields, exact decode length, physical kv bytes, upsert."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["full", "streamingllm", "h2o", "snapkv", "keydiff", "nestedkv"]
RS = [0.5, 0.75, 0.9]
N = 160
FIELDS = {
    "model", "device", "dtype", "attn_impl", "torch_version", "transformers_version", "method", "r",
    "n_context_tokens", "decode_tokens", "n_generated_tokens", "prefill_s", "scoring_s", "scoring_fraction",
    "compress_s", "decode_s", "decode_ms_per_token", "kv_bytes_full", "kv_bytes_kept", "kv_bytes_ratio",
    "kept_fraction", "peak_mem_bytes", "peak_mem_prefill_bytes", "peak_mem_decode_bytes", "peak_mem_note",
    "budget_policy", "full_decode_ms_per_token", "decode_vs_full", "full_decode_s_all",
}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "scripts" / "bench_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    bench = _bench()
    argv = ["model=tiny-llama-random", f"lengths=[{N}]", f"methods=[{','.join(METHODS)}]",
            f"r=[{','.join(map(str, RS))}]", "decode_tokens=3", "repeats=2", "warmup=false",
            f"out={out}"]
    rows = bench.main(argv)
    return bench, argv, out, rows


def test_rows_and_fields(run, capsys):
    _, _, _, rows = run
    assert len(rows) == 1 + (len(METHODS) - 1) * len(RS)  # full: one row at r = 0
    for row in rows:
        assert FIELDS <= set(row), FIELDS - set(row)
        json.dumps(row)  # JSON-serialisable
        assert row["n_context_tokens"] == N and row["device"] == "cpu" and row["model"] == "tiny-llama-random"
        assert row["n_generated_tokens"] == row["decode_tokens"] == 3  # EOS disabled: exactly decode_tokens
        assert row["prefill_s"] > 0 and row["scoring_s"] >= 0 and row["decode_s"] > 0
        # the printed seconds are rounded to 1e-5 s: allow that rounding in the ratio of two of them
        rounding = 1e-5 / row["prefill_s"]
        assert row["scoring_fraction"] == pytest.approx(row["scoring_s"] / row["prefill_s"], rel=1e-2, abs=rounding)
        assert row["decode_ms_per_token"] == pytest.approx(1000 * row["decode_s"] / 3, rel=1e-2)
        assert row["peak_mem_bytes"] >= max(row["peak_mem_prefill_bytes"], row["peak_mem_decode_bytes"]) > 0
        assert row["peak_mem_note"]
    assert {(r["method"], r["r"]) for r in rows} == {("full", 0.0)} | {(m, r) for m in METHODS[1:] for r in RS}
    for row in rows:  # each configuration's decodes next to the full cache's, from the same rounds
        assert len(row["decode_s_all"]) == len(row["full_decode_s_all"]) == 2
        assert row["decode_vs_full"] == pytest.approx(row["decode_ms_per_token"] / row["full_decode_ms_per_token"],
                                                      rel=1e-2)
    table = run[0].summary(rows).splitlines()  # printed at the end of the run
    assert "vs full" in table[0] and len(table) == 2 + len(rows) + 1
    assert len([line for line in table if " nestedkv " in line]) == len(RS)


def test_kv_bytes_follow_r(run):
    _, _, _, rows = run
    for row in rows:
        ratio = row["kv_bytes_kept"] / row["kv_bytes_full"]
        if row["method"] == "full":
            assert ratio == 1.0
        elif row["budget_policy"] == "uniform":  # physically shrunk to (1 - r), up to rounding of n_kept
            assert ratio == pytest.approx(1 - row["r"], abs=1.5 / N), row
            assert ratio == pytest.approx(row["kept_fraction"], abs=1e-6)
        else:  # adaptive (nestedkv): the kept entries held ragged, plus one int64 offset per head
            assert row["budget_policy"] == "adaptive"
        assert abs(ratio - row["kept_fraction"]) < 0.01, row  # bytes held = the logical kept fraction


def test_jsonl_written_and_upserted(run):
    bench, argv, out, rows = run
    path = out / "tiny-llama-random-cpu.jsonl"
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(written) == len(rows)
    bench.main([a if not a.startswith("methods=") else "methods=[keydiff]" for a in argv])  # rerun one method
    again = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(again) == len(rows)  # replaced, not duplicated


def test_parse_args():
    bench = _bench()
    a = bench.parse_args(["lengths=1024,2048", "methods=[full, keydiff]", "r=[0.5]", "decode_tokens=8", "warmup=false"])
    assert a["lengths"] == [1024, 2048] and a["methods"] == ["full", "keydiff"] and a["r"] == [0.5]
    assert a["decode_tokens"] == 8 and a["warmup"] is False and a["repeats"] == a["prefill_repeats"] == 5
    assert bench.parse_args(["repeats=3", "prefill_repeats=1"])["prefill_repeats"] == 1
    for bad in (["nope=1"], ["r=[1.0]"], ["decode_tokens=0"], ["prefill_repeats=0"], ["context=books"], ["lengths"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
