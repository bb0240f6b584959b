"""scripts/bench_sweep.py on a tiny random model: both arms run every configuration on the same contexts, the
predictions agree, and the JSON line is printed and appended to the output file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "scripts" / "bench_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_sweep_compares_both_arms(tmp_path, capsys):
    out = tmp_path / "perf" / "bench_sweep.jsonl"
    argv = ["model=tiny-llama-random", "task=ruler_1k", "task.tasks=[niah_single_1,vt]", "n_contexts=2",
            "methods=[full,keydiff,streamingllm]", "r=[0.5,0.9]", "max_new_tokens=4", "decode_batch_size=3",
            f"out={out}"]
    out.parent.mkdir()
    out.write_text('{"earlier": "line"}\n')
    result = _bench().main(argv)
    assert result["contexts"] == 2
    assert result["configs"] == 5  # full once (independent of r) + 2 methods x 2 ratios
    assert result["n_rows"] == 10
    assert result["max_new_tokens"] == 4  # the cap reached the records (it used to be ignored)
    assert result["identical_predictions"] is True and result["n_different"] == 0
    assert result["shared_s"] > 0 and result["independent_s"] > 0
    # speedup is the ratio of the unrounded times; the printed times are rounded to 0.01 s, the speedup too
    s, i = result["shared_s"], result["independent_s"]
    rounding = 0.005 + 0.005 * (1 / s + i / s**2)
    assert result["speedup"] == pytest.approx(i / s, abs=rounding)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"earlier": "line"}, result]  # appended, not overwritten
