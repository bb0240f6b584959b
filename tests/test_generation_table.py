"""The generation table (scripts/make_tables.py ``generation_tables``): score next to output length, limit hits,
time to first token and decode speed, for suites whose answers are long generations (``Task.long_generation``)."""

from __future__ import annotations

import sys
from pathlib import Path

from test_report_rows import cfg, row, write

import tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_tables  # noqa: E402


def _lines(md: str) -> dict[str, list[str]]:
    return {ln.split("|")[1].strip(): [x.strip() for x in ln.split("|")[3:-1]]
            for ln in md.splitlines() if ln.startswith("| ") and "method" not in ln}


def _rows() -> list[dict]:
    """Two problems. full: scores 100, 0; 100 and 256 tokens (the second cut at the limit); TTFT 0.1, 0.3 (median
    0.2); rates 20, 30 (median 25). h2o_online[B=128]: scores 0, 0; 256 and 256 tokens, both at the limit."""
    task = dict(task="gsm8k", task_params={})
    full = cfg(method="full", method_class="full", r=None, **task)
    h2o = cfg(method="h2o_online", method_class="h2o", r=None, budget_tokens=128, **task)
    gen = dict(task="gsm8k", suite="gsm8k", length_bucket=None, context_id="gsm8k/shots")
    rows = [row("gsm8k/1", 100, full, n_generated_tokens=100, hit_limit=False, ttft_s=0.1, decode_tokens_per_s=20.0,
                **gen),
            row("gsm8k/2", 0, full, n_generated_tokens=256, hit_limit=True, ttft_s=0.3, decode_tokens_per_s=30.0,
                **gen)]
    rows += [row(f"gsm8k/{i}", 0, h2o, n_generated_tokens=256, hit_limit=True, ttft_s=0.2, decode_tokens_per_s=10.0,
                 budget_tokens=128, **gen) for i in (1, 2)]
    return rows


def test_per_method_and_budget_means(tmp_path):
    """The hand-worked means of ``_rows``."""
    write(_rows(), tmp_path / "runs" / "p.parquet")
    make_tables.build([str(tmp_path / "runs")], tmp_path / "out")
    lines = _lines(next((tmp_path / "out").glob("generation_gsm8k*.md")).read_text())
    assert lines["full"] == ["2", "50.00", "178.0", "50.0", "0.200", "25.0"]
    assert lines["h2o_online[B=128]"] == ["2", "0.00", "256.0", "100.0", "0.200", "10.0"]


def test_only_long_generation_suites(tmp_path):
    """RULER's short answers get no generation table: the suite does not declare long generation."""
    assert tasks.long_generation("gsm8k") and not tasks.long_generation("ruler")
    assert not tasks.long_generation("no_such_suite")
    write([row("a/0", 10, n_generated_tokens=3, hit_limit=False, ttft_s=0.1, decode_tokens_per_s=5.0)],
          tmp_path / "runs" / "p.parquet")
    make_tables.build([str(tmp_path / "runs")], tmp_path / "out")
    assert not list((tmp_path / "out").glob("generation_*"))


def test_generation_figure_against_budget(tmp_path):
    """Fixed-budget rows have no ratio: no empty score-vs-r figure, a score/output-length-vs-budget one instead."""
    import make_figures

    write(_rows(), tmp_path / "runs" / "p.parquet")
    names = {p.name for p in make_figures.build([str(tmp_path / "runs")], tmp_path / "out")}
    assert "generation_gsm8k_all_m.png" in names
    assert not any(n.startswith("score_") for n in names)
