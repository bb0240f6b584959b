"""Regression check: a fixed small grid on SmolLM2-135M compared with a committed baseline.

    python scripts/regress.py              # run the grid, compare with the baseline, exit 1 on a regression
    python scripts/regress.py --update     # run the grid and rewrite the baseline
    python scripts/regress.py --tol 5      # allow task means to move by up to 5 points (0-100 scale)

Grid: offline RULER at 1k tokens (niah_single_1, niah_multikey_2, niah_multikey_3, vt, cwe, fwe), every
method of the demo (full, streamingllm, h2o, snapkv, keydiff, nestedkv) at r in {0.5, 0.75, 0.9},
2 samples per task (12 contexts x 16 configurations), seed 42, float32 on CPU, results in a temporary folder.

Baseline (``results/baselines/regress_smollm2.csv``): one row per (method, r, task, sample_id) with the
prediction and its score (0-100), sorted, so that a changed answer is one changed line in ``git diff``. The
full cache is one configuration whatever the ratios: its rows have ``r = 0``. In ``prediction`` a backslash,
newline, carriage return and tab are written ``\\\\``, ``\\n``, ``\\r``, ``\\t`` (one line per row); scores are
written with Python's shortest round-trip float repr, so reading them back gives the same floats.

What fails (exit 1): a (method, r, task) cell whose mean score moved by more than ``--tol`` (default 0:
on CPU float32 the grid is bit-for-bit reproducible run to run, see below), a missing or unexpected row.
Every changed prediction is reported under its cell; with ``--strict`` a changed prediction fails too, even
when its score did not move. Exit 2: no baseline (run with ``--update``) or a configuration error.

Determinism: the run pins torch to ``--threads`` intra-op threads (default 1: torch's own choice follows
the machine's core count, and a different thread count may split float reductions differently; on a shared
2-core CI box one thread is also the fastest, as oversubscribed OpenMP threads spin in barriers). Two runs on the same machine give identical
predictions and scores, hence the default tolerance 0. A CPU with other SIMD kernels can change float
rounding and, rarely, a greedy token; pass ``--tol`` there, or regenerate the baseline on that machine.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE = ROOT / "results" / "baselines" / "regress_smollm2.csv"
OFFLINE = "[niah_single_1,niah_multikey_2,niah_multikey_3,vt,cwe,fwe]"
GRID = [
    "model=smollm2-135m",
    "task=ruler_1k",
    f"task.tasks={OFFLINE}",
    "methods=[full,streamingllm,h2o,snapkv,keydiff,nestedkv]",
    "r=[0.5,0.75,0.9]",
    "n_samples=2",
    "seed=42",
    "dtype=float32",
    "device=cpu",
    "progress=false",
    "job=regress",
]
KEY = ["method", "r", "task", "sample_id"]
COLUMNS = KEY + ["score", "prediction"]
EPS = 1e-9  # float slack on top of the tolerance (means of the same scores are equal bit for bit anyway)


# ------------------------------------------------------------------------------------------ baseline frames
def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), "\\" + m.group(1)), text)


def to_baseline(rows: pd.DataFrame) -> pd.DataFrame:
    """Result rows (``harness.run.run``) -> the baseline frame: KEY + score + prediction, sorted; the full-cache
    reference (``harness.rows.reference``, the rule the engine and the tables use) has r = 0."""
    from harness.rows import reference

    df = rows[COLUMNS].copy()
    df["method"] = df["method"].astype(str)
    df["r"] = pd.to_numeric(df["r"], errors="coerce").astype(float).round(6)
    df.loc[reference(rows), "r"] = 0.0
    df["task"] = df["task"].astype(str)
    df["sample_id"] = df["sample_id"].astype(str)
    df["score"] = pd.to_numeric(df["score"], errors="coerce").astype(float)
    df["prediction"] = df["prediction"].fillna("").astype(str)
    dup = df.duplicated(KEY, keep=False)
    if dup.any():
        raise ValueError(f"result rows repeat (method, r, task, sample_id): {df.loc[dup, KEY].head().to_dict('records')}")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def write_baseline(df: pd.DataFrame, path: Path) -> None:
    out = df[COLUMNS].copy()
    out["prediction"] = out["prediction"].map(escape)
    out["r"] = out["r"].map(lambda v: f"{v:g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(path)


def read_baseline(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"method": str, "task": str, "sample_id": str, "prediction": str},
                     keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"baseline {path} lacks column(s) {missing}")
    df["r"] = df["r"].astype(float)
    df["score"] = pd.to_numeric(df["score"].replace("", math.nan)).astype(float)
    df["prediction"] = df["prediction"].map(unescape)
    return df[COLUMNS].sort_values(KEY, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------ comparison
@dataclass(frozen=True)
class Difference:
    """One difference between the baseline and the current run.

    kind: "mean" (a cell's mean score moved), "prediction" (one sample's answer changed), "missing" (a
    baseline row the run did not produce), "extra" (a row the baseline lacks). ``fails`` says whether it makes
    the check fail; ``message`` names method, ratio, task (and sample)."""

    kind: str
    method: str
    r: float
    task: str
    sample_id: str | None
    baseline: object
    current: object
    fails: bool
    message: str

    def __str__(self) -> str:
        return self.message


def _cell(method: str, r: float, task: str) -> str:
    return f"method={method} r={r:g} task={task}"


def _fmt(v) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare(baseline_df: pd.DataFrame, current_df: pd.DataFrame, tol: float = 0.0,
            strict: bool = False) -> list[Difference]:
    """Differences between two baseline frames (columns KEY + score + prediction), cell by cell.

    A (method, r, task) cell fails when its mean score moves by more than ``tol`` points (0-100 scale) or
    when rows are missing / unexpected; every changed prediction is reported (failing only with ``strict``).
    Returns [] when the frames agree. Ordered by (method, r, task), each cell's mean first."""
    base = baseline_df[COLUMNS].copy()
    cur = current_df[COLUMNS].copy()
    for df in (base, cur):
        df["r"] = df["r"].astype(float).round(6)
        df["score"] = df["score"].astype(float)
        df["prediction"] = df["prediction"].fillna("").astype(str)
    m = base.merge(cur, on=KEY, how="outer", suffixes=("_base", "_cur"), indicator=True)
    m = m.sort_values(KEY, kind="stable")
    out: list[Difference] = []
    for (method, r, task), g in m.groupby(["method", "r", "task"], sort=True):
        cell = _cell(method, r, task)
        both = g[g["_merge"] == "both"]
        mb = float(g["score_base"].mean()) if g["score_base"].notna().any() else math.nan
        mc = float(g["score_cur"].mean()) if g["score_cur"].notna().any() else math.nan
        delta = mc - mb
        moved = (math.isnan(mb) != math.isnan(mc)) or (not math.isnan(delta) and abs(delta) > tol + EPS)
        if moved:
            out.append(Difference(
                "mean", method, r, task, None, mb, mc, True,
                f"FAIL {cell}: mean score {_fmt(mb)} -> {_fmt(mc)} (delta {delta:+.2f}, tolerance {tol:g})"))
        elif not math.isnan(delta) and delta != 0.0:  # moved, but within the tolerance: say so
            out.append(Difference(
                "mean", method, r, task, None, mb, mc, False,
                f"ok   {cell}: mean score {_fmt(mb)} -> {_fmt(mc)} (delta {delta:+.2f}, within tolerance {tol:g})"))
        for _, row in g[g["_merge"] == "left_only"].iterrows():
            out.append(Difference("missing", method, r, task, row["sample_id"], row["score_base"], None, True,
                                  f"FAIL {cell} sample={row['sample_id']}: in the baseline, not produced by this run"))
        for _, row in g[g["_merge"] == "right_only"].iterrows():
            out.append(Difference("extra", method, r, task, row["sample_id"], None, row["score_cur"], True,
                                  f"FAIL {cell} sample={row['sample_id']}: produced by this run, not in the baseline "
                                  "(grid changed? rerun with --update)"))
        for _, row in both.iterrows():
            if row["prediction_base"] == row["prediction_cur"] and _same(row["score_base"], row["score_cur"]):
                continue
            tag = "FAIL" if strict else "changed"
            out.append(Difference(
                "prediction", method, r, task, row["sample_id"], row["prediction_base"], row["prediction_cur"],
                strict,
                f"  {tag} {cell} sample={row['sample_id']}: score {_fmt(row['score_base'])} -> "
                f"{_fmt(row['score_cur'])}\n      baseline: {_short(row['prediction_base'])}\n"
                f"      current:  {_short(row['prediction_cur'])}"))
    return out


def _short(text: str, width: int = 160) -> str:
    text = escape(text)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def report(diffs: list[Difference]) -> str:
    fails = [d for d in diffs if d.fails]
    changed = sum(d.kind == "prediction" for d in diffs)
    lines = [d.message for d in diffs]
    cells = sorted({(d.method, d.r, d.task) for d in fails})
    lines.append(f"{len(cells)} failing cell(s), {changed} changed prediction(s)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ running
def run_grid(out_dir: str | Path, overrides: list[str] | None = None, threads: int | None = 1) -> pd.DataFrame:
    """Run the grid (GRID, then ``overrides``) into ``out_dir``; the baseline frame of its rows."""
    import torch

    from harness.run import compose, run

    keys = {o.split("=", 1)[0] for o in overrides or []}
    cfg = compose([g for g in GRID if g.split("=", 1)[0] not in keys] + list(overrides or []) +
                  [f"output_dir={out_dir}"])
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return to_baseline(run(cfg))
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true", help="rewrite the baseline with this run's rows")
    ap.add_argument("--tol", type=float, default=0.0,
                    help="largest allowed move of a (method, r, task) mean score, in points 0-100 (default 0)")
    ap.add_argument("--strict", action="store_true", help="a changed prediction fails even when its score did not")
    ap.add_argument("--baseline", type=Path, default=BASELINE, help=f"baseline CSV (default {BASELINE.relative_to(ROOT)})")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's default)")
    ap.add_argument("--keep", type=Path, default=None, help="write the run's Parquet rows here instead of a temp dir")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides (e.g. model=...); for experiments only")
    args = ap.parse_args(argv)

    if not args.update and not args.baseline.exists():
        print(f"[regress] no baseline at {args.baseline}; create it with `make regress-update` "
              "(python scripts/regress.py --update) and commit it", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        if args.keep:
            current = run_grid(args.keep, args.overrides, args.threads)
        else:
            with tempfile.TemporaryDirectory(prefix="kvbench-regress-") as tmp:
                current = run_grid(tmp, args.overrides, args.threads)
    except ValueError as exc:  # harness.errors.UsageError is a ValueError
        print(f"[regress] {exc}", file=sys.stderr)
        return 2
    elapsed = time.time() - t0
    n_cells = current.groupby(["method", "r", "task"]).ngroups

    if args.update:
        old = read_baseline(args.baseline) if args.baseline.exists() else None
        write_baseline(current, args.baseline)
        print(f"[regress] baseline written: {args.baseline} ({len(current)} rows, {n_cells} cells) in {elapsed:.0f}s")
        if old is not None:
            diffs = compare(old, current, tol=0.0)
            print("[regress] changes against the previous baseline:\n" + (report(diffs) if diffs else "  none"))
        return 0

    diffs = compare(read_baseline(args.baseline), current, tol=args.tol, strict=args.strict)
    failed = any(d.fails for d in diffs)
    if diffs:
        print(report(diffs))
    status = "FAILED" if failed else "passed"
    print(f"[regress] {status}: {len(current)} rows, {n_cells} (method, r, task) cells vs {args.baseline.name}, "
          f"tolerance {args.tol:g}, {elapsed:.0f}s")
    if failed:
        print("[regress] if the change is intended, run `make regress-update` and commit the new baseline",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
