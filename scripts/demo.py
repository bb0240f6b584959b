"""`make demo`: a small real sweep on the embedded model, then its table and figure.

Every method at r in {0.5, 0.75, 0.9} on the six offline RULER tasks at 1k tokens with SmolLM2-135M-Instruct
(CPU, a few minutes on 2 cores). Results: results/demo/runs/*.parquet, tables and figures in results/demo/.
Extra arguments are Hydra overrides, e.g. `python scripts/demo.py n_samples=10`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OFFLINE = "[niah_single_1,niah_multikey_2,niah_multikey_3,vt,cwe,fwe]"
DEMO = ["+sweep=demo", "model=smollm2-135m", "task=ruler_1k", f"task.tasks={OFFLINE}", "n_samples=3",
        "output_dir=results/demo/runs", "job=demo"]


def main(argv: list[str]) -> None:
    from harness.run import compose, run

    keys = {a.split("=", 1)[0] for a in argv}
    t0 = time.time()
    run(compose([d for d in DEMO if d.split("=", 1)[0] not in keys] + argv))
    print(f"[demo] sweep finished in {time.time() - t0:.0f}s", file=sys.stderr)
    for script in ("make_tables.py", "make_figures.py"):
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), "results/demo/runs", "--out", "results/demo"],
                       check=True, cwd=ROOT)


if __name__ == "__main__":
    main(sys.argv[1:])
