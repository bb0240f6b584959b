"""The multi-query table (scripts/make_tables.py ``multiquery_tables``): first vs later questions of one cache."""

from __future__ import annotations

import sys
from pathlib import Path

from test_report_rows import cfg, row, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_tables  # noqa: E402


def test_first_vs_later_and_per_context_mean(tmp_path):
    """Two contexts of 3 questions. keydiff r=0.5 (query-agnostic): context 0 scores 100, 40, 10; context 1 scores
    80, 20, 30. First = (100 + 80) / 2 = 90; later = (40 + 10 + 20 + 30) / 4 = 25; gap 65; per-context mean =
    (50 + 43.33) / 2 = 46.67. The query-aware run of the same method is its own row; the full cache its own, and its
    gap is subtracted from the others' in the last column."""
    agn = cfg(task="squad_mq_4k", task_params={"length": 4096})
    aware = cfg(task="squad_mq_4k", task_params={"length": 4096}, query_aware=True)
    full = cfg(task="squad_mq_4k", task_params={"length": 4096}, method="full", method_class="full", r=None)
    rows = []
    for c, scores in ((agn, [[100, 40, 10], [80, 20, 30]]), (aware, [[100, 0, 0], [100, 0, 50]]),
                      (full, [[100, 100, 50], [100, 50, 50]])):
        for i, ctx in enumerate(scores):
            for q, s in enumerate(ctx):
                rows.append(row(f"squad_mq/{i}/{q}", s, c, task="squad_mq", suite="squad_mq",
                                context_id=f"squad_mq/{i}", query_index=q))
    write(rows, tmp_path / "runs" / "p.parquet")
    make_tables.build([str(tmp_path / "runs")], tmp_path / "out")
    md = next((tmp_path / "out").glob("multiquery_squad_mq*.md")).read_text()
    lines = {ln.split("|")[1].strip() + "@" + ln.split("|")[2].strip(): [x.strip() for x in ln.split("|")[3:-1]]
             for ln in md.splitlines() if ln.startswith("| ") and "method" not in ln}
    # full: first 100, later (100 + 50 + 50 + 50) / 4 = 62.5, gap 37.5; keydiff's gap beyond it: 65 - 37.5
    assert lines["keydiff@0.50"] == ["2", "46.67", "90.00", "25.00", "65.00", "27.50"]
    # query-aware: first (100 + 100) / 2 = 100, later (0 + 0 + 0 + 50) / 4 = 12.5; 87.5 - 37.5 = 50
    aware_row = next(v for k, v in lines.items() if k.startswith("keydiff (query-aware)"))
    assert aware_row[2:] == ["100.00", "12.50", "87.50", "50.00"]
    full_row = next(v for k, v in lines.items() if k.startswith("full"))
    assert full_row[2:] == ["100.00", "62.50", "37.50", "—"]


def test_no_multiquery_rows_no_table(tmp_path):
    write([row("a/0", 10), row("b/0", 30)], tmp_path / "runs" / "p.parquet")
    make_tables.build([str(tmp_path / "runs")], tmp_path / "out")
    assert not list((tmp_path / "out").glob("multiquery_*"))
