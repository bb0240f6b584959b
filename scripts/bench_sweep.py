"""Shared sweep vs one configuration at a time (the kvpress way), on the same contexts.

    python scripts/bench_sweep.py model=smollm2-135m task=ruler_2k n_contexts=8 \
        methods=[full,streamingllm,h2o,snapkv,keydiff,nestedkv] r=[0.25,0.5,0.75,0.9]

Prints one JSON line: {"model", "task", "contexts", "configs", "shared_s", "independent_s", "speedup",
"identical_predictions", ...} and appends it to ``results/perf/bench_sweep.jsonl`` (``out=PATH`` to change,
``out=`` to skip). Both arms run the same engine code; the independent arm prefills once per
(configuration, context) with only that configuration's method scored and decodes alone (batch of one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.models import load_model  # noqa: E402
from harness.plan import make_plan  # noqa: E402
from harness.run import cap_answer_tokens, compose, run_context  # noqa: E402
from harness.sweep import SweepRunner, git_commit, group_by_context  # noqa: E402


def progress(arm: str, done: int, total: int, t0: float) -> None:
    """One stderr line per step of an arm: steps done, elapsed and estimated time left."""
    spent = time.perf_counter() - t0
    left = spent / done * (total - done)
    print(f"[bench_sweep] {arm}: {done}/{total} done, {spent:.0f} s spent, ~{left:.0f} s left", file=sys.stderr)


def main(argv: list[str]) -> dict:
    n_contexts = 8
    out = str(Path(__file__).resolve().parent.parent / "results" / "perf" / "bench_sweep.jsonl")
    overrides = []
    for a in argv:
        if a.startswith("n_contexts="):
            n_contexts = int(a.split("=", 1)[1])
        elif a.startswith("out="):
            out = a.split("=", 1)[1]
        else:
            overrides.append(a)
    defaults = ["model=smollm2-135m", "task=ruler_2k", "methods=[full,streamingllm,h2o,snapkv,keydiff,nestedkv]",
                "r=[0.25,0.5,0.75,0.9]", "progress=false"]
    keys = {o.split("=", 1)[0] for o in overrides}
    cfg = compose([d for d in defaults if d.split("=", 1)[0] not in keys] + overrides)
    plan = make_plan(cfg)
    model, tok = load_model(plan.model, dtype=cfg.dtype, device=cfg.device, attn_impl=cfg.attn_impl)
    context = run_context(cfg, plan, str(model.dtype).replace("torch.", ""), str(model.device))
    cells = [c.bind(context) for c in plan.cells]
    # sample i of every sub-task, round robin, until n_contexts contexts
    per_task = max(1, -(-n_contexts // 6))
    data = plan.task.load(tok, per_task, int(cfg.seed))
    cap_answer_tokens(cfg, data.records)  # max_new_tokens=N, as in the harness
    groups = list(group_by_context(data.records).values())
    by_task: dict[str, list] = {}
    for g in groups:
        by_task.setdefault(g[0].task, []).append(g)
    chosen = []
    while len(chosen) < n_contexts and any(by_task.values()):
        for t in sorted(by_task):
            if by_task[t] and len(chosen) < n_contexts:
                chosen.append(by_task[t].pop(0))
    kw = dict(window=plan.window, score=plan.task.score)

    shared = SweepRunner(model, tok, cells, {}, decode_batch_size=max(1, int(cfg.decode_batch_size)), **kw)
    t0 = time.perf_counter()
    shared_rows = []
    for i, g in enumerate(chosen):
        shared_rows += shared.run_group(g, set())
        progress("shared", i + 1, len(chosen), t0)
    shared_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    indep_rows = []
    for i, cell in enumerate(cells):
        alone = SweepRunner(model, tok, [cell], {}, decode_batch_size=1, **kw)
        for g in chosen:
            indep_rows += alone.run_group(g, set())
        progress("independent", i + 1, len(cells), t0)
    independent_s = time.perf_counter() - t0

    key = lambda r: (r["run_id"], r["sample_id"])  # noqa: E731
    a = {key(r): r["prediction"] for r in shared_rows}
    b = {key(r): r["prediction"] for r in indep_rows}
    diff = sorted(k for k in a if a[k] != b.get(k))
    result = {
        "model": plan.model.name,
        "task": plan.task_name,
        "contexts": len(chosen),
        "configs": len(cells),
        "shared_s": round(shared_s, 2),
        "independent_s": round(independent_s, 2),
        "speedup": round(independent_s / shared_s, 2),
        "identical_predictions": not diff and a.keys() == b.keys(),
        "n_rows": len(a),
        "n_different": len(diff),
        "decode_batch_size": int(cfg.decode_batch_size),
        "max_new_tokens": cfg.get("max_new_tokens"),  # null: each task's official answer length
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(result))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
