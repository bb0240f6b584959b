"""scripts/model_by_length.py: full-cache RULER accuracy per model and length, from rows alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_report_rows import cfg, row, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import model_by_length  # noqa: E402
from tasks.ruler import ALL_TASKS  # noqa: E402


def _full(model, length):
    return cfg(model=model, task=f"ruler_{length // 1024}k", task_params={"length": length}, method="full",
               method_class="full", r=None)


def test_per_task_means_headline_and_what_is_left_out(tmp_path):
    rows = []
    # model a at 1k: all 13 tasks, two samples each: 100 and 0 for niah_single_1, 50 and 50 elsewhere
    for t in ALL_TASKS:
        s = (100, 0) if t == "niah_single_1" else (50, 50)
        for i, v in enumerate(s):
            rows.append(row(f"{t}/{i}", v, _full("a", 1024), task=t, length_bucket=1024, context_id=f"{t}/{i}",
                            prefill_s=float(i + 1), n_context_tokens=1000))
    # model b at 4k: two tasks only (headline marked partial)
    for t, v in (("vt", 80), ("cwe", 40)):
        rows.append(row(f"{t}/0", v, _full("b", 4096), task=t, length_bucket=4096, context_id=f"{t}/0",
                        prefill_s=9.0, n_context_tokens=4000))
    # never counted: a compressed configuration, another suite's full-cache rows
    rows.append(row("vt/0", 0, cfg(model="a"), task="vt", length_bucket=1024, context_id="vt/0", prefill_s=1.0,
                    n_context_tokens=1000))
    rows.append(row("x/0", 0, _full("a", 1024), task="abstract_algebra", suite="mmlu", length_bucket=1024,
                    context_id="x/0", prefill_s=1.0, n_context_tokens=1000))
    write(rows, tmp_path / "runs" / "p.parquet")
    out, md = model_by_length.table([str(tmp_path / "runs")])
    a, b = out
    assert (a["model"], a["length"], b["model"], b["length"]) == ("a", 1024, "b", 4096)
    assert a["tasks"]["niah_single_1"] == 50.0 and a["tasks"]["vt"] == 50.0 and len(a["tasks"]) == 13
    assert a["mean_13"] == 50.0 and a["samples_per_task"] == [2] and a["prefill_s_median"] == 1.5
    assert b["mean_13"] is None and b["mean_ran"] == 60.0 and "abstract_algebra" not in a["tasks"]
    lines = [ln for ln in md.splitlines() if ln.startswith("| a ") or ln.startswith("| b ")]
    assert lines[0].split("|")[-4].strip() == "50.0" and lines[1].split("|")[-4].strip() == "60.0*"


def test_no_reference_rows_is_one_clear_error(tmp_path):
    write([row("vt/0", 10, cfg(), task="vt")], tmp_path / "runs" / "p.parquet")
    with pytest.raises(SystemExit, match="no full-cache RULER rows"):
        model_by_length.table([str(tmp_path / "runs")])
