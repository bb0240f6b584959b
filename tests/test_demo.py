"""scripts/demo.py: the comparison of a fresh demo run with the committed reference rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import demo  # noqa: E402

from harness.results import ResultWriter  # noqa: E402


def _row(run_id, sample_id, prediction, score):
    return {"run_id": run_id, "sample_id": sample_id, "model": "m", "suite": "ruler", "task": "vt",
            "method": "keydiff", "r": 0.5, "prediction": prediction, "score": score}


def test_compare_counts_identical_predictions_of_shared_configurations(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    ref = tmp_path / "results" / "demo" / "runs"
    writer = ResultWriter(ref, "demo")
    writer.add([_row("a", "vt/0", "x y", 100.0), _row("a", "vt/1", "z", 0.0), _row("b", "vt/0", "q", 50.0)])
    writer.close()
    rows = pd.DataFrame([_row("a", "vt/0", "x y", 100.0), _row("a", "vt/1", "w", 50.0), _row("c", "vt/0", "", 0.0)])
    text = demo.compare_with_reference(rows, ref)
    assert text.startswith("1 of 2 predictions identical") and "largest score change 50.00 points" in text
    assert "make regress" in text
    same = demo.compare_with_reference(rows.iloc[:1], ref)
    assert same.startswith("1 of 1 predictions identical") and "make regress" not in same


def test_compare_without_shared_configurations_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    ref = tmp_path / "ref"
    writer = ResultWriter(ref, "demo")
    writer.add([_row("a", "vt/0", "x", 1.0)])
    writer.close()
    assert "nothing to compare" in demo.compare_with_reference(pd.DataFrame([_row("z", "vt/0", "x", 1.0)]), ref)
    assert "no committed reference" in demo.compare_with_reference(pd.DataFrame([_row("z", "vt/0", "x", 1.0)]),
                                                                    tmp_path / "missing")
