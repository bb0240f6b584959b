"""Reporting: loading/dedup of result part files, cell aggregation, tables and figures on synthetic rows."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from harness import report as R

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_figures  # noqa: E402
import make_tables  # noqa: E402


def row(method="keydiff", r=0.5, task="a", i=0, score=100.0, suite="ruler", bucket=4096, model="Qwen3-4B",
        run_id=None, created_at="2025-01-01T00:00:00Z", **kw):
    d = dict(
        run_id=run_id or f"{model}-{suite}-{bucket}-{method}-{r}", config_json="{}", created_at=created_at,
        git_commit="abc123", harness_version="0.1.0", torch_version="2.13.0", transformers_version="5.23",
        device="cpu", model=model, model_source="hub", dtype="float32", attn_impl="sdpa", method=method,
        method_params=json.dumps({}), r=float(r), budget_tokens=None,
        budget_policy="adaptive" if method in ("nestedkv", "keydiff_adaptive") else "uniform", query_aware=False,
        suite=suite, task=task, length_bucket=bucket, sample_id=f"{task}/{i}", context_id=f"{task}/{i}",
        n_context_tokens=4000, n_question_tokens=20, n_kept_mean=4000 * (1 - r), kept_fraction=1 - r,
        kv_bytes_full=2**20, kv_bytes_kept=2**20 * (1 - r), n_generated_tokens=10, prediction="x",
        answers=["x"], metric="string_match_all", score=float(score), prefill_s=2.0, scoring_s=0.1,
        decode_s=0.5, peak_mem_bytes=2**30,
    )
    d.update(kw)
    return d


def write(rows, folder: Path, name="part-000.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    pd.DataFrame(rows).to_parquet(p, index=False)
    return p


def grid_rows():
    """A small complete grid: tasks a (2 samples), b (4 samples); full + two methods at r in {0.25, 0.5}."""
    rows = []
    for i, s in enumerate([100, 0]):
        rows.append(row("full", 0.0, "a", i, s))
    for i, s in enumerate([100, 100, 100, 0]):
        rows.append(row("full", 0.0, "b", i, s))
    for r, (ka, kb) in {0.25: ([100, 100], [100, 0, 0, 0]), 0.5: ([0, 0], [100, 100, 0, 0])}.items():
        rows += [row("keydiff", r, "a", i, s) for i, s in enumerate(ka)]
        rows += [row("keydiff", r, "b", i, s) for i, s in enumerate(kb)]
    for r, (ka, kb) in {0.25: ([100, 0], [100, 100, 100, 100]), 0.5: ([100, 0], [100, 0, 0, 0])}.items():
        rows += [row("nestedkv", r, "a", i, s) for i, s in enumerate(ka)]
        rows += [row("nestedkv", r, "b", i, s) for i, s in enumerate(kb)]
    return rows


# ------------------------------------------------------------------------------------------------ loading
def test_summary_numbers_hand_checked(tmp_path):
    write(grid_rows(), tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res")).set_index(["method", "r"])
    # full: a = 50, b = 75 -> 62.5 over 6 samples
    assert s.loc[("full", 0.0), "score"] == pytest.approx(62.5)
    assert s.loc[("full", 0.0), "n"] == 6
    # keydiff r=0.25: a = 100, b = 25 -> 62.5; r=0.5: a = 0, b = 50 -> 25
    assert s.loc[("keydiff", 0.25), "score"] == pytest.approx(62.5)
    assert s.loc[("keydiff", 0.5), "score"] == pytest.approx(25.0)
    # nestedkv r=0.25: a = 50, b = 100 -> 75; r=0.5: 50, 25 -> 37.5
    assert s.loc[("nestedkv", 0.25), "score"] == pytest.approx(75.0)
    assert s.loc[("nestedkv", 0.5), "score"] == pytest.approx(37.5)
    assert s["complete"].all() and (s["n_tasks"] == 2).all()
    assert set(s["length_bucket"]) == {4096}
    text = R.format_summary(R.summary(R.load_results(tmp_path / "res")))
    assert "75.00 (6)" in text and "62.50 (6)" in text


def test_headline_uses_task_registry_never_constructing_and_warns_for_unknown_suites(tmp_path, monkeypatch, capsys):
    import tasks
    from tasks.base import Task

    class MaxSuite(Task):
        def __init__(self, length):  # a constructor that needs a parameter: the tables must not call it
            raise AssertionError("constructed")

        @staticmethod
        def headline(task_scores, counts=None):
            return max(task_scores.values())

    monkeypatch.setitem(tasks.SUITES, "maxsuite", MaxSuite)
    rows = [row("keydiff", 0.5, "a", 0, 20, suite="maxsuite"), row("keydiff", 0.5, "b", 0, 80, suite="maxsuite"),
            row("keydiff", 0.5, "a", 0, 20, suite="nosuchsuite"), row("keydiff", 0.5, "b", 0, 80,
                                                                            suite="nosuchsuite")]
    write(rows, tmp_path / "res")
    with pytest.warns(UserWarning, match="unknown suite 'nosuchsuite'.*unweighted mean"):
        s = R.summary(R.load_results(tmp_path / "res")).set_index("suite")
    assert s.loc["maxsuite", "score"] == 80 and bool(s.loc["maxsuite", "official"])  # max(20, 80), not the mean
    assert s.loc["nosuchsuite", "score"] == 50 and not bool(s.loc["nosuchsuite", "official"])
    make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    assert "warning: unknown suite 'nosuchsuite'" in capsys.readouterr().err  # said once, on stderr
    md = (tmp_path / "out" / "nosuchsuite_4k_Qwen3-4B.md").read_text()
    assert "FALLBACK" in md and "unweighted mean" in md and "knows no suite 'nosuchsuite'" in md
    assert "FALLBACK" not in (tmp_path / "out" / "maxsuite_4k_Qwen3-4B.md").read_text()


def test_longbench_headline_is_mean_of_category_means(tmp_path):
    scores = {"hotpotqa": [0, 20], "2wikimqa": [30, 30], "lcc": [80, 100]}  # multi-doc QA 20, code 90
    rows = [row("keydiff", 0.5, t, i, s, suite="longbench", bucket=None) for t, v in scores.items()
            for i, s in enumerate(v)]
    write(rows, tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res"))
    assert s["score"].iloc[0] == pytest.approx(55.0) and bool(s["official"].iloc[0])
    assert s["n"].iloc[0] == 6 and pd.isna(s["length_bucket"].iloc[0])


def test_full_rows_are_the_reference_whatever_their_r(tmp_path):
    rows = [row("full", r, "a", i, s, config_json=_cfg(method="full", method_class="full", r=r))
            for r in (0.0, 0.25, 0.5) for i, s in enumerate([100, 0, 100])]
    rows += [row("keydiff", 0.5, "a", i, 0) for i in range(3)]
    write(rows, tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res"))
    full = s[s["method"] == "full"]
    assert len(full) == 1 and full["r"].iloc[0] == 0.0
    assert full["n"].iloc[0] == 3 and full["score"].iloc[0] == pytest.approx(200 / 3)


def test_fixed_budget_rows_and_query_aware_get_their_own_labels(tmp_path):
    rows = [row("snapkv", float("nan"), "a", i, 40, budget_tokens=128) for i in range(2)]
    rows += [row("snapkv", 0.5, "a", i, 60, query_aware=True) for i in range(2)]
    rows += [row("snapkv", 0.5, "a", i, 20) for i in range(2)]
    write(rows, tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res")).set_index(["method", "r"])["score"].to_dict()
    assert s == {("snapkv[B=128]", R.FIXED_BUDGET): 40, ("snapkv (query-aware)", 0.5): 60, ("snapkv", 0.5): 20}
    make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    md = (tmp_path / "out" / "ruler_4k_Qwen3-4B.md").read_text()
    assert "| method | fixed B | r=0.50 |" in md and "| snapkv[B=128] | 40.00 | — |" in md


def test_dedup_keeps_newest_and_skips_temporary_files(tmp_path):
    res = tmp_path / "res"
    write([row(i=0, score=10, created_at="2025-01-01T00:00:00Z"), row(i=1, score=30)], res / "a", "p1.parquet")
    write([row(i=0, score=90, created_at="2025-02-01T00:00:00Z")], res / "b", "p2.parquet")
    write([row(i=0, score=10, created_at="2025-03-01T00:00:00Z")], res / "b", ".p3.parquet")  # in-flight
    write([row(i=0, score=10, created_at="2025-03-01T00:00:00Z")], res / "b", "p4.parquet.tmp")
    df = R.load_results(res)
    assert len(df) == 2
    assert df.set_index("sample_id").loc["a/0", "score"] == 90
    s = R.summary(df)
    assert s["n"].iloc[0] == 2 and s["score"].iloc[0] == pytest.approx(60)


def test_dedup_does_not_merge_configurations_sharing_a_run_id(tmp_path):
    # one run_id for a whole sweep: (run_id, sample_id) alone would collapse methods and ratios
    rows = [row("keydiff", r, "a", 0, 50, run_id="sweep") for r in (0.25, 0.5)]
    rows += [row("nestedkv", 0.25, "a", 0, 50, run_id="sweep")]
    write(rows, tmp_path / "res")
    assert len(R.load_results(tmp_path / "res")) == 3


def test_corrupt_file_error_names_file_and_remedy(tmp_path):
    write([row()], tmp_path / "res")
    bad = tmp_path / "res" / "sub" / "part-bad.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(R.ResultsError) as err:
        R.load_results(tmp_path / "res")
    msg = str(err.value)
    assert str(bad) in msg and "Move or delete it and rerun" in msg and "resume" in msg


def test_no_result_files_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(R.ResultsError, match="no result files"):
        R.load_results(tmp_path / "empty")
    assert make_tables.main([str(tmp_path / "empty"), "--out", str(tmp_path / "t")]) == 2
    assert make_figures.main([str(tmp_path / "empty"), "--out", str(tmp_path / "f")]) == 2
    assert "no result files" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ tables
def test_best_per_column_is_bold_and_full_row_on_top(tmp_path):
    write(grid_rows(), tmp_path / "res")
    make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    md = (tmp_path / "out" / "ruler_4k_Qwen3-4B.md").read_text().splitlines()
    body = [ln for ln in md if ln.startswith("| ") and not ln.startswith("| method")]
    assert body[0].startswith("| full |")
    assert body[0].count("**") == 0  # the reference is never marked best
    kd = next(ln for ln in body if ln.startswith("| keydiff |"))
    nk = next(ln for ln in body if ln.startswith("| nestedkv |"))
    assert kd == "| keydiff | 62.50 | 25.00 |"
    assert nk == "| nestedkv | **75.00** | **37.50** |"
    tex = (tmp_path / "out" / "ruler_4k_Qwen3-4B.tex").read_text()
    assert r"nestedkv & \textbf{75.00} & \textbf{37.50} \\" in tex
    csv = pd.read_csv(tmp_path / "out" / "ruler_4k_Qwen3-4B.csv")
    assert list(csv["method"]) == ["full", "keydiff", "nestedkv"]
    assert list(csv["r=0.25 n"]) == [6, 6, 6] and list(csv["r=0.25 best"]) == [0, 0, 1]


def test_incomplete_grid_and_sample_counts_are_marked(tmp_path):
    rows = grid_rows()
    # nestedkv r=0.5 lacks task b entirely (and would otherwise "win" with a = 100)
    rows = [x for x in rows if not (x["method"] == "nestedkv" and x["r"] == 0.5)]
    rows += [row("nestedkv", 0.5, "a", i, 100) for i in range(2)]
    # keydiff r=0.25 has one sample fewer in task b
    rows = [x for x in rows if not (x["method"] == "keydiff" and x["r"] == 0.25 and x["sample_id"] == "b/3")]
    # snapkv only at r=0.25
    rows += [row("snapkv", 0.25, t, i, 0) for t, n in (("a", 2), ("b", 4)) for i in range(n)]
    write(rows, tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res")).set_index(["method", "r"])
    assert not s.loc[("nestedkv", 0.5), "complete"] and s.loc[("nestedkv", 0.5), "missing"] == "b"
    assert s.loc[("nestedkv", 0.5), "score"] == 100  # over the tasks it has, flagged
    make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    md = (tmp_path / "out" / "ruler_4k_Qwen3-4B.md").read_text()
    lines = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if ln.startswith("| ")}
    assert lines["nestedkv"] == "| nestedkv | **75.00** | 100.00\\* (n=2) |"  # incomplete: marked, never best
    assert lines["keydiff"] == "| keydiff | 66.67 (n=5) | 25.00 |"  # a = 100, b = 100/3; sole complete cell: no bold
    assert lines["snapkv"] == "| snapkv | 0.00 | — |"
    assert "n = 6 samples per cell unless marked" in md
    assert "nestedkv r=0.50: incomplete, averaged over 1 of 2 tasks (missing: b)" in md
    tex = (tmp_path / "out" / "ruler_4k_Qwen3-4B.tex").read_text()
    assert r"100.00$^{*}$" in tex and r"\textsuperscript{n=5}" in tex
    csv = pd.read_csv(tmp_path / "out" / "ruler_4k_Qwen3-4B.csv").set_index("method")
    assert csv.loc["nestedkv", "r=0.50 complete"] == 0 and csv.loc["keydiff", "r=0.25 n"] == 5


def test_paper_numbers_and_ablation_and_cost(tmp_path):
    rows = []
    for m in ("full", "nestedkv", "nestedkv_uniform", "keydiff_adaptive", "keydiff"):
        for r in ((0.0,) if m == "full" else (0.5, 0.75)):
            rows += [row(m, r, "a", i, 50 + 10 * i, decode_s=0.1 * (1 + i), n_generated_tokens=10,
                         decode_batch_size=4) for i in range(2)]
    write(rows, tmp_path / "res")
    make_tables.build([str(tmp_path / "res")], tmp_path / "out", paper=True)
    md = (tmp_path / "out" / "ruler_4k_Qwen3-4B.md").read_text()
    assert "[79.32]" in md and "[60.22]" in md and "[70.91]" in md and "[71.33]" in md
    abl = (tmp_path / "out" / "ablation_Qwen3-4B.md").read_text()
    assert "| nestedkv_uniform | w/o adaptive budget |" in abl and "[79.32]" in abl
    cost = (tmp_path / "out" / "cost_Qwen3-4B.md").read_text()
    # prefill 2 s, scoring 0.1/2 = 5 %, decode (0.1 + 0.2) / 20 tokens = 15 ms/token (a share of batches of 4),
    # KV 0.25 MiB at r=0.75
    assert "| nestedkv | 0.75 | 2 | 2.000 | 5.00 | 15.00 | 4.0 | 0.2 | 25.0 | 1.00 |" in cost
    assert "decode ms/token (batch share)" in cost and "not one configuration's cost" in cost
    # without --paper no paper numbers
    make_tables.build([str(tmp_path / "res")], tmp_path / "out2")
    assert "[79.32]" not in (tmp_path / "out2" / "ruler_4k_Qwen3-4B.md").read_text()


def test_ablation_table_only_for_blocks_that_ran_an_ablation_variant(tmp_path):
    # RULER 4k ran the ablation; a LongBench comparison ran only the seed methods nestedkv and keydiff
    rows = [row(m, r, "a", i, 50, suite="ruler") for m in ("full", "nestedkv", "nestedkv_uniform", "keydiff")
            for r in ((0.0,) if m == "full" else (0.5,)) for i in range(2)]
    rows += [row(m, r, "hotpotqa", i, 20, suite="longbench", bucket=None) for m in ("full", "nestedkv", "keydiff")
             for r in ((0.0,) if m == "full" else (0.5,)) for i in range(2)]
    write(rows, tmp_path / "res")
    make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    abl = (tmp_path / "out" / "ablation_Qwen3-4B.md").read_text()
    assert "*RULER" in abl and "LongBench" not in abl
    assert "| nestedkv_uniform | w/o adaptive budget | **50.00** |" in abl  # all tie at 50: all bold
    # without any ablation-only variant there is no ablation table at all
    write([x for x in rows if x["method"] != "nestedkv_uniform"], tmp_path / "res2")
    make_tables.build([str(tmp_path / "res2")], tmp_path / "out2")
    assert not (tmp_path / "out2" / "ablation_Qwen3-4B.md").exists()


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean(tmp_path):
    write(grid_rows(), tmp_path / "res")
    prep = R.prepare(R.load_results(tmp_path / "res"))
    a = R.headline_cells(prep, ci=True)
    b = R.headline_cells(prep, ci=True)
    pd.testing.assert_frame_equal(a, b)
    assert ((a["ci_lo"] <= a["score"]) & (a["score"] <= a["ci_hi"])).all()
    # keydiff r=0.25 task a is [100, 100]: zero-width task interval
    t = R.task_cells(prep, ci=True).set_index(["variant", "r", "task"])
    assert t.loc[("keydiff", 0.25, "a"), "ci_lo"] == t.loc[("keydiff", 0.25, "a"), "ci_hi"] == 100


def test_tables_byte_identical_across_runs(tmp_path):
    rows = grid_rows() + [row("keydiff", 0.5, "hotpotqa", i, 10 * i, suite="longbench", bucket=None)
                          for i in range(3)] + [row("full", 0.0, "hotpotqa", i, 20, suite="longbench", bucket=None)
                                                for i in range(3)]
    write(rows[::2], tmp_path / "res" / "x")
    write(rows[1::2], tmp_path / "res" / "y")
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    cmd = [sys.executable, str(ROOT / "scripts" / "make_tables.py"), str(tmp_path / "res"), "--ci", "--paper"]
    p1 = subprocess.run(cmd + ["--out", str(out1)], capture_output=True, text=True, check=True)
    subprocess.run(cmd + ["--out", str(out2)], capture_output=True, text=True, check=True)
    names = sorted(p.name for p in out1.iterdir())
    assert names == sorted(p.name for p in out2.iterdir())
    assert {"all_tables.md", "cells.csv", "task_cells.csv", "variants.csv", "summary.txt",
            "longbench_all_Qwen3-4B_tasks.md", "ruler_4k_Qwen3-4B.tex", "cost_Qwen3-4B.csv"} <= set(names)
    match, mismatch, errors = filecmp.cmpfiles(out1, out2, names, shallow=False)
    assert not mismatch and not errors
    assert f"wrote {out1 / 'all_tables.md'}" in p1.stdout


# ------------------------------------------------------------------------------------------------ figures
def test_figures_written_and_reproducible(tmp_path):
    rows = []
    for m in ("full", "keydiff", "nestedkv"):  # kept small: each figure costs ~0.5 s to draw and save twice
        for r in ((0.0,) if m == "full" else (0.75,)):
            for b in (1024,):
                rows += [row(m, r, t, i, 100 * (i % 2), bucket=b, depth=i / 3) for t in ("niah_single_1", "vt")
                         for i in range(4)]
    write(rows, tmp_path / "res")
    w1 = make_figures.build([str(tmp_path / "res")], tmp_path / "f1")
    w2 = make_figures.build([str(tmp_path / "res")], tmp_path / "f2")
    names = sorted(p.name for p in w1)
    for stem in ("score_ruler_1k_Qwen3-4B", "tasks_ruler_1k_Qwen3-4B", "niah_ruler_Qwen3-4B_r0.75",
                 "cost_ruler_1k_Qwen3-4B"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    assert all(p.stat().st_size > 1000 for p in w1)
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "f1", tmp_path / "f2", names, shallow=False)
    assert not mismatch and not errors and len(w1) == len(w2)
    # with scripts/bench_methods.py rows for the model, the cost figure shows their decode times instead
    perf = tmp_path / "perf"
    perf.mkdir()
    bench = [dict(model="Qwen3-4B", device="cpu", method=m, method_class=m, r=r, n_context_tokens=n,
                  decode_ms_per_token=ms, created_at="2025-01-01T00:00:00+00:00")
             for m, r, n, ms in (("full", 0.0, 1024, 30.0), ("keydiff", 0.75, 1024, 20.0),
                                 ("full", 0.0, 8192, 90.0), ("keydiff", 0.75, 8192, 40.0))]
    (perf / "qwen3-4b-cpu.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bench))
    w3 = make_figures.build([str(tmp_path / "res")], tmp_path / "f3", perf)
    cost = "cost_ruler_1k_Qwen3-4B.png"
    assert not filecmp.cmp(tmp_path / "f1" / cost, tmp_path / "f3" / cost, shallow=False)
    assert len(w3) == len(w1)


def test_cost_figure_takes_the_benchmark_length_nearest_the_rows():
    cc = pd.DataFrame({"variant": ["full", "keydiff", "nestedkv"], "reference": [True, False, False],
                       "r": [0.0, 0.75, 0.75], "n_context_tokens": [3000.0, 3000.0, 3000.0]})
    bench = pd.DataFrame([dict(model="m", device="cpu", method=m, method_class=m, r=r, n_context_tokens=n,
                               decode_ms_per_token=ms)
                          for m, r, n, ms in (("full", 0.0, 2048, 30.0), ("keydiff", 0.75, 2048, 20.0),
                                              ("full", 0.0, 8192, 90.0), ("keydiff", 0.75, 8192, 40.0),
                                              ("snapkv", 0.75, 4096, 25.0))])
    rows, n = make_figures.bench_decode(bench, cc, "m", "cpu")
    # 3000 tokens: 2048 is nearer than 8192 on a log scale (x1.46 vs x2.73); snapkv is not in the rows
    assert n == 2048
    assert sorted(zip(rows["variant"], rows["decode_ms_per_token"])) == [("full", 30.0), ("keydiff", 20.0)]
    assert make_figures.bench_decode(bench, cc, "m", "cuda") is None  # no benchmark on that device


# ------------------------------------------------------------------------------- distinct configurations
def _cfg(**settings) -> str:
    base = {"model": "Qwen3-4B", "model_source": "hub", "dtype": "float32", "attn_impl": "sdpa", "task": "ruler_4k",
            "task_params": {"length": 4096, "tasks": ["a"]}, "seed": 42, "max_context": None,
            "max_new_tokens": None, "method": "keydiff", "r": 0.5, "safeguard": 0.2}
    return json.dumps({**base, **settings}, sort_keys=True)


@pytest.mark.parametrize("setting, values, column", [
    ("dtype", ("float32", "bfloat16"), True),
    ("seed", (42, 7), False),
    ("max_new_tokens", (None, 16), False),
])
def test_runs_differing_in_a_setting_are_kept_apart_and_named(tmp_path, setting, values, column):
    """Two runs of one model that differ in dtype, seed or max_new_tokens: never collapsed to the newest (the
    old tables kept one of them, silently for the full reference); each gets its own table, named."""
    rows = []
    for k, v in enumerate(values):
        extra = {setting: v} if column else {}
        for m, scores in (("full", (100, 100)), ("keydiff", (100, 0))):
            rows += [row(m, 0.5 if m != "full" else 0.0, "a", i, s if k == 0 else 100 - s,
                         run_id=f"{m}-{k}", config_json=_cfg(method=m, **{setting: v}),
                         created_at=f"2025-0{k + 1}-01T00:00:00Z", **extra) for i, s in enumerate(scores)]
    write(rows, tmp_path / "res")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped, so nothing to warn about
        s = R.summary(R.load_results(tmp_path / "res"))
    labels = {f"Qwen3-4B [{setting}={v if isinstance(v, str) else json.dumps(v)}]" for v in values}
    assert set(s["model"]) == labels
    assert (s["n"] == 2).all() and len(s) == 4  # full and keydiff for each setting, no row lost
    full = s[s["method"] == "full"].set_index("model")["score"].to_dict()
    assert sorted(full.values()) == [0.0, 100.0]  # the two full references stay apart
    written = make_tables.build([str(tmp_path / "res")], tmp_path / "out")
    mains = sorted(p.name for p in written if p.name.startswith("ruler_4k_") and p.suffix == ".md"
                   and not p.stem.endswith("_tasks"))
    assert len(mains) == 2 and all(setting in name for name in mains)
    md = (tmp_path / "out" / mains[0]).read_text()
    assert f"[{setting}=" in md and "each setting has its own tables" in md


def test_settings_that_differ_only_between_tables_do_not_relabel(tmp_path):
    """ruler_1k and ruler_4k rows differ in task.length and task, but never within one table: no label."""
    rows = [row("keydiff", 0.5, "a", 0, 50, bucket=b, run_id=f"k{b}",
                config_json=_cfg(task=f"ruler_{b // 1024}k", task_params={"length": b, "tasks": ["a"]}))
            for b in (1024, 4096)]
    rows += [row("keydiff", 0.5, "b", 0, 50, bucket=4096, run_id="kb",
                 config_json=_cfg(task_params={"length": 4096, "tasks": ["b"]}))]  # another sub-task selection
    write(rows, tmp_path / "res")
    assert set(R.summary(R.load_results(tmp_path / "res"))["model"]) == {"Qwen3-4B"}


def test_full_reference_repeated_per_r_is_one_configuration_but_other_configurations_stay_apart(tmp_path):
    """Older versions wrote the reference once per r: one configuration (its identity ignores budgets), so one
    row per sample, the newest. Two configurations that the labels do not tell apart (method_class differs)
    are never reduced to one: each keeps its row, and its label names the difference."""
    rows = [row("full", r, "a", 0, s, run_id=f"f{r}", config_json=_cfg(method="full", r=r), created_at=t)
            for r, s, t in ((0.25, 0, "2025-01-01T00:00:00Z"), (0.5, 100, "2025-02-01T00:00:00Z"))]
    rows += [row("keydiff", 0.5, "a", 0, 10, run_id="old", config_json=_cfg(method_class="KeyDiff"),
                 created_at="2025-01-01T00:00:00Z"),
             row("keydiff", 0.5, "a", 0, 90, run_id="new", config_json=_cfg(method_class="KeyDiff2"),
                 created_at="2025-02-01T00:00:00Z")]
    write(rows, tmp_path / "res")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped, nothing to warn about
        prep = R.prepare(R.load_results(tmp_path / "res"))
    full = prep[prep["reference"]]
    assert full[["variant", "r", "score"]].values.tolist() == [["full", 0.0, 100.0]]  # the newest of the two
    kd = prep[~prep["reference"]].set_index("variant")["score"].to_dict()
    assert kd == {"keydiff[method_class=KeyDiff]": 10.0, "keydiff[method_class=KeyDiff2]": 90.0}


def test_safeguards_get_their_own_variant(tmp_path):
    rows = [row("nestedkv", 0.5, "a", 0, s, run_id=f"n{g}", config_json=_cfg(method="nestedkv", safeguard=g))
            for g, s in ((0.2, 10), (0.1, 90))]
    write(rows, tmp_path / "res")
    s = R.summary(R.load_results(tmp_path / "res")).set_index("method")["score"].to_dict()
    assert s == {"nestedkv[safeguard=0.2]": 10, "nestedkv[safeguard=0.1]": 90}


def test_a_parquet_file_that_is_not_ours_is_named_not_called_corrupt(tmp_path):
    write([row()], tmp_path / "res")
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "res" / "my_data.parquet")
    with pytest.raises(R.ResultsError) as err:
        R.load_results(tmp_path / "res")
    msg = str(err.value)
    assert "my_data.parquet is a Parquet file but not a kvbench result file" in msg
    assert "lacks the column(s) run_id, sample_id" in msg and "(it has x)" in msg
    assert "delete" not in msg.lower() and "corrupt" not in msg.lower()
    (tmp_path / "res" / "my_data.parquet").write_text("a,b\n1,2\n")  # a CSV under a .parquet name
    with pytest.raises(R.ResultsError) as err:
        R.load_results(tmp_path / "res")
    msg = str(err.value)
    assert "my_data.parquet is not a kvbench result file: it cannot be read as Parquet" in msg
    assert "delete" not in msg.lower()
