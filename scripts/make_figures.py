"""Result figures (PNG and PDF, sized for a ~3.3 in paper column, 7-8 pt fonts) from the Parquet result rows.

    python scripts/make_figures.py RESULTS_DIR [RESULTS_DIR ...] --out OUTDIR

Writes, per model:
- ``score_<suite>_<bucket>_<model>``: suite headline vs r, one line per method, full cache as a dashed line;
  hollow markers = incomplete cells (some of the suite's tasks missing);
- ``tasks_<suite>_<bucket>_<model>``: per-task small multiples of score vs r (two-column width, 6.9 in, when
  there are more than 6 tasks);
- ``niah_<suite>_<model>_r<r>``: NIAH depth x context length heatmaps, one panel per method (rows with a
  ``depth`` column only);
- ``cost_<suite>_<bucket>_<model>[_<device>]``: KV-cache bytes kept and decode ms/token vs r; the decode times
  are each configuration's own, decoded alone, from scripts/bench_methods.py's JSON (``--perf``, default
  results/perf/) at its length nearest the rows' context length, else the rows' batch shares (the y label says
  which).

Reruns on the same input are byte-identical (fixed ``svg.hashsalt``, no dates or software versions in the PNG
and PDF metadata, DejaVu fonts shipped with matplotlib).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import report as R  # noqa: E402

COL_W = 3.3  # in: one paper column
TEXT_W = 6.9  # in: two columns
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "savefig.dpi": 300,
    "svg.hashsalt": "kvbench",
    "pdf.fonttype": 42,
    "path.simplify": False,
}
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
}
MARKERS = "os^Dv<>pPXh*"
SUITE_TITLE = {"ruler": "RULER", "longbench": "LongBench", "longbench_e": "LongBench-E", "loogle": "LooGLE",
               "infinitebench": "InfiniteBench", "mmlu_pro": "MMLU-Pro"}


class Styles:
    """One colour and marker per method variant, stable across all figures of a run."""

    def __init__(self, prep: pd.DataFrame):
        refs = R.reference_labels(prep)
        names = [v for v in R.order_variants(prep) if v not in refs]
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        self.map = {v: (cmap(i % cmap.N), MARKERS[i % len(MARKERS)]) for i, v in enumerate(names)}

    def __call__(self, v):
        return self.map.get(v, ("0.4", "x"))  # a variant only the benchmark has: grey


def save(fig, out: Path, stem: str, written: list[Path]) -> None:
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, format=ext, metadata=METADATA[ext])
        written.append(p)
    plt.close(fig)


def title_of(suite: str, bucket: int, allb: list[int], model: str) -> str:
    b = "" if bucket == R.NO_BUCKET else f" {R.bucket_label(suite, bucket, allb)}"
    return f"{SUITE_TITLE.get(suite, suite)}{b}, {model}"


def _lines(ax, g: pd.DataFrame, styles: Styles, x="r", y="score", complete_col="complete") -> None:
    g = g[g[x] != R.FIXED_BUDGET]  # fixed token budgets have no ratio to plot against
    full = g[g["reference"]]
    for v in R.order_variants(g):
        if v in set(full["variant"]):
            continue
        d = g[g["variant"] == v].sort_values(x)
        color, marker = styles(v)
        ax.plot(d[x], d[y], color=color, marker=marker, label=v, markerfacecolor=color)
        if complete_col in d and (~d[complete_col].astype(bool)).any():
            inc = d[~d[complete_col].astype(bool)]
            ax.plot(inc[x], inc[y], linestyle="none", marker=marker, markerfacecolor="white", color=color)
    if len(full) and not math.isnan(float(full[y].iloc[0])):
        ax.axhline(float(full[y].iloc[0]), color="black", linestyle="--", linewidth=0.9, label="full cache")
    rs = sorted(g.loc[~g["reference"], x].unique())
    if rs:
        ax.set_xticks(rs)
        ax.set_xticklabels([R.fmt_r(r) for r in rs])
    ax.grid(True)


def _legend(fig, ax_or_axes, ncol=3) -> None:
    axes = np.atleast_1d(ax_or_axes).ravel()
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncol=ncol,
                   frameon=False, handlelength=1.8, columnspacing=1.0)


def score_figures(hc: pd.DataFrame, styles: Styles, out: Path, written: list[Path]) -> None:
    for (model, suite, bucket), g in hc.groupby(R.TABLE_KEY, sort=True):
        if (g["reference"] | (g["r"] == R.FIXED_BUDGET)).all():  # nothing to plot against r
            continue
        allb = sorted(hc.loc[(hc["model"] == model) & (hc["suite"] == suite), "length_bucket"].unique())
        nv = g["variant"].nunique()
        fig, ax = plt.subplots(figsize=(COL_W, 2.3 + 0.14 * math.ceil(nv / 3)), layout="constrained")
        _lines(ax, g, styles)
        ax.set_xlabel("compression ratio r")
        ax.set_ylabel("score")
        ax.set_title(title_of(suite, bucket, allb, model))
        _legend(fig, ax)
        save(fig, out, R.slug(f"score_{suite}_{R.bucket_label(suite, bucket, allb)}_{model}"), written)


def generation_figures(prep: pd.DataFrame, styles: Styles, out: Path, written: list[Path]) -> None:
    """Long-generation suites (``tasks.long_generation``: GSM8K) run with fixed token budgets: score and mean
    output tokens against the budget, one line per method, the full cache dashed (the table is
    ``generation_*``)."""
    from tasks import long_generation

    if "budget_tokens" not in prep or "n_generated_tokens" not in prep:
        return
    for (model, suite, bucket), g in prep.groupby(R.TABLE_KEY, sort=True):
        budget = pd.to_numeric(g["budget_tokens"], errors="coerce")
        if not long_generation(str(suite)) or not (budget.notna() & ~g["reference"]).any():
            continue
        g = g.assign(budget=budget, line=g["variant"].str.replace(r"\[B=\d+\]", "", regex=True),
                     tokens=pd.to_numeric(g["n_generated_tokens"], errors="coerce"))
        allb = sorted(prep.loc[(prep["model"] == model) & (prep["suite"] == suite), "length_bucket"].unique())
        fig, axes = plt.subplots(1, 2, figsize=(2 * COL_W, 2.5), layout="constrained")
        full = g[g["reference"]]
        for ax, y, label in ((axes[0], "score", "score"), (axes[1], "tokens", "mean output tokens")):
            for line in R.order_variants(g[~g["reference"] & g["budget"].notna()], col="line"):
                d = g[(g["line"] == line) & g["budget"].notna()].groupby("budget")[y].mean()
                color, marker = styles(next(v for v in g.loc[g["line"] == line, "variant"]))
                ax.plot(d.index, d.values, color=color, marker=marker, label=line)
            if len(full):
                ax.axhline(float(full[y].mean()), color="black", linestyle="--", linewidth=0.9, label="full cache")
            budgets = sorted(g.loc[~g["reference"], "budget"].dropna().unique())
            ax.set_xticks(budgets)
            ax.set_xticklabels([str(int(b)) for b in budgets])
            ax.set_xlabel("budget (tokens per head, whole cache)")
            ax.set_ylabel(label)
            ax.grid(True)
        fig.suptitle(title_of(suite, bucket, allb, model))
        _legend(fig, axes)
        save(fig, out, R.slug(f"generation_{suite}_{R.bucket_label(suite, bucket, allb)}_{model}"), written)


def task_figures(tc: pd.DataFrame, hc: pd.DataFrame, styles: Styles, out: Path, written: list[Path]) -> None:
    for (model, suite, bucket), g in tc.groupby(R.TABLE_KEY, sort=True):
        if g["reference"].all():
            continue
        allb = sorted(hc.loc[(hc["model"] == model) & (hc["suite"] == suite), "length_bucket"].unique())
        tasks = R.task_order(suite, sorted(g["task"].unique()))
        wide = len(tasks) > 6
        ncols = 4 if wide else min(3, len(tasks))
        nrows = math.ceil(len(tasks) / ncols)
        width = TEXT_W if wide else COL_W
        panel_h = 1.25 if wide else 1.1
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.5), sharex=True, sharey=True,
                                 squeeze=False, layout="constrained")
        for ax, task in zip(axes.ravel(), tasks):
            _lines(ax, g[g["task"] == task], styles, complete_col="_none")
            ax.set_title(task, fontsize=7, pad=2)
        for ax in axes.ravel()[len(tasks):]:
            ax.set_visible(False)
        for j in range(ncols):  # x labels on the lowest visible panel of each column
            i = max(i for i in range(nrows) if i * ncols + j < len(tasks)) if j < len(tasks) else None
            if i is not None:
                axes[i, j].xaxis.set_tick_params(labelbottom=True)
                axes[i, j].set_xlabel("r")
        for ax in axes[:, 0]:
            ax.set_ylabel("score")
        fig.suptitle(title_of(suite, bucket, allb, model) + ": per task", fontsize=8)
        _legend(fig, axes, ncol=6 if wide else 3)
        save(fig, out, R.slug(f"tasks_{suite}_{R.bucket_label(suite, bucket, allb)}_{model}"), written)


def _depth_bins(depth: pd.Series) -> tuple[pd.Series, list[str]]:
    d = depth.astype(float).round(4)
    uniq = sorted(d.unique())
    if len(uniq) <= 11:
        return d.map({u: i for i, u in enumerate(uniq)}), [f"{u:.2g}" for u in uniq]
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(d, edges[1:-1]), 0, 9)
    return pd.Series(idx, index=depth.index), [f"{(edges[i] + edges[i + 1]) / 2:.2f}" for i in range(10)]


def niah_figures(prep: pd.DataFrame, styles: Styles, out: Path, written: list[Path]) -> None:
    if "depth" not in prep:
        return
    p = prep[pd.to_numeric(prep["depth"], errors="coerce").notna()].copy()
    if p.empty:
        return
    p["_dbin"], labels = _depth_bins(pd.to_numeric(p["depth"]))
    for (model, suite), g in p.groupby(["model", "suite"], sort=True):
        buckets = sorted(g["length_bucket"].unique())
        blabels = [R.bucket_label(suite, b, buckets) for b in buckets]
        rs = sorted(g.loc[~g["reference"], "r"].unique())
        for r in rs or [0.0]:
            d = g[(g["r"] == r) | g["reference"]]
            variants = R.order_variants(d)
            ncols = min(3, len(variants))
            nrows = math.ceil(len(variants) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(COL_W if ncols < 3 else TEXT_W * 0.75,
                                                            1.35 * nrows + 0.6),
                                     squeeze=False, sharex=True, sharey=True, layout="constrained")
            im = None
            for ax, v in zip(axes.ravel(), variants):
                dv = d[d["variant"] == v]
                grid = np.full((len(labels), len(buckets)), np.nan)
                m = dv.groupby(["_dbin", "length_bucket"])["score"].mean()
                for (bi, lb), val in m.items():
                    grid[int(bi), buckets.index(lb)] = val
                im = ax.imshow(grid, origin="upper", aspect="auto", vmin=0, vmax=100, cmap="viridis",
                               interpolation="nearest")
                ax.set_title(v, fontsize=7, pad=2)
                ax.set_xticks(range(len(buckets)))
                ax.set_xticklabels(blabels)
                ax.set_yticks(range(len(labels)))
                ax.set_yticklabels(labels, fontsize=6)
            for ax in axes.ravel()[len(variants):]:
                ax.set_visible(False)
            for ax in axes[-1, :]:
                ax.set_xlabel("context length")
            for ax in axes[:, 0]:
                ax.set_ylabel("needle depth")
            if im is not None:
                fig.colorbar(im, ax=axes, shrink=0.8, label="score")
            fig.suptitle(f"{SUITE_TITLE.get(suite, suite)} NIAH, {model}, r={R.fmt_r(r)}", fontsize=8)
            save(fig, out, R.slug(f"niah_{suite}_{model}_r{R.fmt_r(r)}"), written)


BENCH_KEYS = ("model", "device", "method", "r", "n_context_tokens", "decode_ms_per_token")


def load_bench(folder: Path | None) -> pd.DataFrame:
    """scripts/bench_methods.py rows (``*.jsonl`` under ``folder`` with its columns; other files are skipped),
    the newest per (model, device, method, r, length); empty when there are none."""
    import json

    rows = []
    for path in sorted(folder.rglob("*.jsonl")) if folder is not None and folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if all(k in row for k in BENCH_KEYS):
                rows.append({k: row.get(k) for k in (*BENCH_KEYS, "method_class", "created_at")})
    if not rows:
        return pd.DataFrame(columns=[*BENCH_KEYS, "method_class", "created_at"])
    b = pd.DataFrame(rows).sort_values("created_at", kind="stable", na_position="first")
    b["r"] = b["r"].astype(float).round(R.R_DECIMALS)
    return b.drop_duplicates(["model", "device", "method", "r", "n_context_tokens"], keep="last")


def bench_decode(bench: pd.DataFrame, g: pd.DataFrame, model: str, dev: str) -> tuple[pd.DataFrame, int] | None:
    """The per-configuration decode ms/token that bench_methods measured for the methods of cost cells ``g``
    (same model and device), at its length nearest the cells' mean context length: (rows shaped like ``g``:
    variant, r, reference, decode_ms_per_token; that length), or None when it has none of them."""
    b = bench[(bench["model"] == model) & (bench["device"] == dev)]
    full = b[b["method_class"].fillna(b["method"]) == "full"]
    b = b[b["method"].isin(set(g.loc[~g["reference"], "variant"]))]
    if b.empty:
        return None
    target = float(np.nanmean(g["n_context_tokens"])) if g["n_context_tokens"].notna().any() else 0.0
    lengths = sorted(set(b["n_context_tokens"]))
    n = min(lengths, key=lambda x: (abs(math.log(x / target)) if target > 0 else x, x))
    b, full = b[b["n_context_tokens"] == n], full[full["n_context_tokens"] == n]
    ref = g.loc[g["reference"], "variant"]
    rows = b.assign(variant=b["method"], reference=False)
    if len(full) and len(ref):
        rows = pd.concat([rows, full.iloc[-1:].assign(variant=ref.iloc[0], reference=True)], ignore_index=True)
    return rows[["variant", "r", "reference", "decode_ms_per_token"]], int(n)


def cost_figures(cc: pd.DataFrame, styles: Styles, out: Path, written: list[Path], bench: pd.DataFrame | None = None
                 ) -> None:
    """KV bytes held (the result rows) and decode ms/token: each configuration decoded alone as
    scripts/bench_methods.py measured it (``bench``, its JSON under results/perf/) where it has the cells'
    methods, else the rows' batch shares (``decode_s``: the decode batch's seconds split equally), labelled so."""
    multi_dev = cc.groupby("model")["device"].nunique().to_dict()
    bench = bench if bench is not None else load_bench(None)
    for (model, dev, suite, bucket), g in cc.groupby(["model", "device", "suite", "length_bucket"], sort=True):
        if g["reference"].all():
            continue
        allb = sorted(cc.loc[(cc["model"] == model) & (cc["suite"] == suite), "length_bucket"].unique())
        g = g.assign(kv_mib=g["kv_bytes_kept"] / 2**20)
        nv = g["variant"].nunique()
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(COL_W, 1.9 + 0.14 * math.ceil(nv / 3)), layout="constrained")
        _lines(a1, g, styles, y="kv_mib", complete_col="_none")
        alone = bench_decode(bench, g, model, dev)
        if alone is not None:
            _lines(a2, alone[0], styles, y="decode_ms_per_token", complete_col="_none")
            a2.set_ylabel(f"decode ms/token\n(each alone, n={alone[1]})")
        else:
            _lines(a2, g, styles, y="decode_share_ms_per_token", complete_col="_none")
            a2.set_ylabel("decode ms/token\n(share of a batch)")
        a1.set_ylabel("KV cache kept (MiB)")
        a1.set_ylim(bottom=0)
        for a in (a1, a2):
            a.set_xlabel("r")
        t = title_of(suite, bucket, allb, model) + (f" ({dev})" if dev else "")
        fig.suptitle(t, fontsize=8)
        _legend(fig, [a1, a2])
        stem = f"cost_{suite}_{R.bucket_label(suite, bucket, allb)}_{model}"
        if multi_dev.get(model, 1) > 1:
            stem += f"_{dev}"
        save(fig, out, R.slug(stem), written)


def build(paths: list[str], out: Path, perf: Path | None = None) -> list[Path]:
    """Every figure of the result rows under ``paths``; ``perf``: a folder of scripts/bench_methods.py JSON
    (results/perf/) whose per-configuration decode times the cost figures show."""
    df, prep, hc, tc, cc = R.load_prepared(paths)
    out.mkdir(parents=True, exist_ok=True)
    styles = Styles(prep)
    written: list[Path] = []
    with plt.rc_context(STYLE):
        score_figures(hc, styles, out, written)
        task_figures(tc, hc, styles, out, written)
        niah_figures(prep, styles, out, written)
        generation_figures(prep, styles, out, written)
        cost_figures(cc, styles, out, written, load_bench(perf))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="folder(s) with Parquet result part files (searched recursively)")
    ap.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    ap.add_argument("--perf", default=str(ROOT / "results" / "perf"),
                    help="folder of scripts/bench_methods.py JSON for the cost figures' decode times (default: "
                         "results/perf; 'none': the result rows' batch shares)")
    a = ap.parse_args(argv)
    perf = None if a.perf.lower() in ("", "none") else Path(a.perf)
    try:
        written = build(a.results, Path(a.out), perf)
    except R.ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    if not written:
        print("no figure to draw: the results hold only the full-cache reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
