"""The regression check's comparison (scripts/regress.py) on hand-made frames and on a tiny random-model grid.

The real check (SmolLM2-135M, 12 contexts x 16 configurations) is `make regress`; it is too slow for this suite."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import regress  # noqa: E402


def frame(rows):
    return pd.DataFrame(rows, columns=regress.COLUMNS)


@pytest.fixture
def base():
    return frame([
        ("full", 0.0, "niah_single_1", "niah_single_1/0", 100.0, " 6350706."),
        ("full", 0.0, "niah_single_1", "niah_single_1/1", 100.0, " 1234567."),
        ("snapkv", 0.75, "niah_single_1", "niah_single_1/0", 100.0, " 6350706."),
        ("snapkv", 0.75, "niah_single_1", "niah_single_1/1", 0.0, " 11."),
        ("snapkv", 0.9, "vt", "vt/0", 50.0, "VAR ABC\nVAR DEF"),
        ("keydiff", 0.9, "vt", "vt/0", 100.0, "a, b"),
    ])


def test_identical_frames_pass(base):
    assert regress.compare(base, base.copy(), tol=0.0) == []
    # row order does not matter
    assert regress.compare(base, base.iloc[::-1].reset_index(drop=True), tol=0.0) == []


def test_score_shift_fails_naming_method_task_ratio(base):
    cur = base.copy()
    i = cur.index[(cur.method == "snapkv") & (cur.r == 0.75) & (cur.sample_id == "niah_single_1/1")][0]
    cur.loc[i, ["score", "prediction"]] = [100.0, " 1234567."]
    diffs = regress.compare(base, cur, tol=0.0)
    fails = [d for d in diffs if d.fails]
    assert len(fails) == 1
    msg = str(fails[0])
    assert "snapkv" in msg and "niah_single_1" in msg and "r=0.75" in msg
    assert "50.00 -> 100.00" in msg
    # the changed sample is listed under its cell, with both predictions
    pred = [d for d in diffs if d.kind == "prediction"]
    assert len(pred) == 1 and pred[0].sample_id == "niah_single_1/1" and not pred[0].fails
    assert "1234567" in pred[0].message and "11." in pred[0].message
    # other cells are not mentioned
    assert all(d.method == "snapkv" and d.r == 0.75 for d in diffs)
    assert "1 failing cell(s), 1 changed prediction(s)" in regress.report(diffs)


def test_tolerance(base):
    cur = base.copy()
    cur.loc[(cur.method == "snapkv") & (cur.task == "vt"), "score"] = 52.0
    assert [d.fails for d in regress.compare(base, cur, tol=0.0) if d.kind == "mean"] == [True]
    within = regress.compare(base, cur, tol=5.0)
    assert not any(d.fails for d in within)
    assert any(d.kind == "mean" and "within tolerance" in d.message for d in within)


def test_prediction_change_reported_not_failing_unless_strict(base):
    cur = base.copy()
    cur.loc[(cur.method == "keydiff") & (cur.task == "vt"), "prediction"] = "a, b, c"
    diffs = regress.compare(base, cur, tol=0.0)
    assert [(d.kind, d.method, d.r, d.task, d.fails) for d in diffs] == [("prediction", "keydiff", 0.9, "vt", False)]
    strict = regress.compare(base, cur, tol=0.0, strict=True)
    assert [d.fails for d in strict] == [True]


def test_missing_and_extra_rows_fail(base):
    cur = base[base.method != "keydiff"].copy()
    cur = pd.concat([cur, frame([("h2o", 0.5, "cwe", "cwe/0", 10.0, "x")])], ignore_index=True)
    diffs = regress.compare(base, cur, tol=100.0)
    kinds = {(d.kind, d.method, d.task) for d in diffs if d.fails}
    assert ("missing", "keydiff", "vt") in kinds and ("extra", "h2o", "cwe") in kinds


def test_nan_scores(base):
    b = base.copy()
    b.loc[0, "score"] = math.nan
    assert regress.compare(b, b.copy()) == []


def test_csv_round_trip_is_exact(tmp_path, base):
    cur = base.copy()
    cur.loc[len(cur)] = ("h2o", 0.5, "cwe", "cwe/0", 100 / 3, 'tab\there, "quoted", back\\slash\r\nend, ünï')
    cur = cur.sort_values(regress.KEY).reset_index(drop=True)
    p = tmp_path / "b.csv"
    regress.write_baseline(cur, p)
    back = regress.read_baseline(p)
    assert regress.compare(cur, back, tol=0.0, strict=True) == []
    assert len(p.read_text().splitlines()) == len(cur) + 1  # one line per row
    pd.testing.assert_frame_equal(back, cur[regress.COLUMNS].sort_values(regress.KEY).reset_index(drop=True))


TINY = ["model=tiny-llama-random", "task.tasks=[niah_single_1,vt]", "methods=[full,snapkv,keydiff]", "r=[0.5,0.9]",
        "n_samples=1", "task.length=1024"]


def test_tiny_grid_end_to_end(tmp_path, monkeypatch):
    """Run a tiny grid twice through the script's own runner: the reruns agree exactly; a shifted score and a
    monkeypatched method are reported naming the method, task and ratio."""
    first = regress.run_grid(tmp_path / "a", TINY, threads=1)
    assert set(first["method"]) == {"full", "snapkv", "keydiff"} and set(first["task"]) == {"niah_single_1", "vt"}
    assert sorted(first.loc[first.method == "full", "r"].unique()) == [0.0]
    p = tmp_path / "baseline.csv"
    regress.write_baseline(first, p)
    assert regress.main(["--baseline", str(p), "--threads", "1", *TINY]) == 0

    second = regress.run_grid(tmp_path / "b", TINY, threads=1)
    assert regress.compare(regress.read_baseline(p), second, tol=0.0, strict=True) == []

    shifted = second.copy()
    shifted.loc[(shifted.method == "keydiff") & (shifted.r == 0.9) & (shifted.task == "vt"), "score"] += 40.0
    fails = [d for d in regress.compare(regress.read_baseline(p), shifted, tol=0.0) if d.fails]
    assert len(fails) == 1
    assert all(s in fails[0].message for s in ("keydiff", "r=0.9", "task=vt", "+40.00"))

    # a method whose scoring changes: only its own rows may differ, and the report names them
    from methods.snapkv import SnapKV

    monkeypatch.setattr(SnapKV, "score", lambda self, layer: -layer.keys.float().norm(dim=-1))
    patched = regress.run_grid(tmp_path / "c", TINY, threads=1)
    diffs = regress.compare(regress.read_baseline(p), patched, tol=0.0, strict=True)
    assert diffs and {d.method for d in diffs} == {"snapkv"}
    for d in diffs:
        assert "method=snapkv" in d.message and f"task={d.task}" in d.message and f"r={d.r:g}" in d.message
