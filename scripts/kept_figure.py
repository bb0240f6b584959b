"""Which context positions each method keeps on one RULER needle sample (PNG + PDF, one paper column wide).

    python scripts/kept_figure.py                       # niah_single_1 at 1k, SmolLM2-135M, r = 0.75
    python scripts/kept_figure.py --r 0.9 --task niah_multikey_2 --sample 1 --out results/figures

One panel per method (the full cache is left out: it keeps everything): an image of layers (y) x context
token positions (x) whose colour is the fraction of that layer's KV heads that keep the position. The
needle's tokens (``record.extra["needle_spans"]`` mapped to token positions by
``harness.inspect.needle_token_spans``) lie between the red lines; the red bar above each panel marks them
too. Each panel's title gives the share of (layer, KV head, needle token) triples kept and, unless
``--no-answers``, whether the method's greedy answer under the harness protocol scored 100 (one extra
sweep of the same sample through ``harness.run``, a few seconds on CPU).

Output: ``kept_<task>_<length>_<model>_r<r>.png/.pdf`` in ``--out`` (default ``results/figures``). Reruns
are byte-identical (the style and metadata of ``scripts/make_figures.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from make_figures import COL_W, METADATA, STYLE  # noqa: E402

METHODS = ["streamingllm", "h2o", "snapkv", "keydiff", "nestedkv"]
NEEDLE_COLOR = "#d62728"


def load_record(tokenizer, task: str, length: int, sample: int, seed: int):
    from tasks import make_task

    data = make_task("ruler", length=length, tasks=[task]).load(tokenizer, sample + 1, seed)
    recs = [r for r in data.records if r.task == task]
    if len(recs) <= sample:
        raise SystemExit(f"task {task} produced {len(recs)} record(s); no sample {sample}")
    return recs[sample]


def kept_fraction_image(kept: list[list], n: int) -> np.ndarray:
    """kept[layer][kv_head] -> positions  =>  (layers, n): fraction of each layer's KV heads keeping each position."""
    img = np.zeros((len(kept), n), dtype=np.float64)
    for li, heads in enumerate(kept):
        for pos in heads:
            img[li, pos.numpy()] += 1.0
        img[li] /= max(1, len(heads))
    return img


def answers(model_name: str, task: str, length: int, sample: int, seed: int, r: float, methods: list[str]) -> dict:
    """method -> (score, prediction) for the sample, through the harness's own sweep (one prefill)."""
    from harness.run import compose, run

    with tempfile.TemporaryDirectory(prefix="kvbench-kept-") as tmp:
        cfg = compose([f"model={model_name}", "task=ruler_1k", f"task.length={length}", f"task.tasks=[{task}]", f"methods=[{','.join(methods)}]",
                       f"r=[{r}]", f"n_samples={sample + 1}", f"seed={seed}", "dtype=float32", "device=cpu",
                       f"output_dir={tmp}", "progress=false", "job=kept"])
        rows = run(cfg)
    sid = sorted(rows["sample_id"].unique())[sample] if len(rows) else None
    rows = rows[rows["sample_id"] == sid]
    return {m: (float(g["score"].iloc[0]), str(g["prediction"].iloc[0])) for m, g in rows.groupby("method")}


def figure(panels: list[dict], n: int, n_heads: int, spans: list[tuple[int, int]], r: float, title: str):
    plt.rcParams.update(STYLE)
    n_layers = panels[0]["img"].shape[0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(COL_W, 0.2 + 0.86 * len(panels)), sharex=True,
                             layout="constrained")
    axes = np.atleast_1d(axes)
    levels = n_heads + 1  # 0, 1/H, ..., 1: a discrete scale, one colour per head count
    cmap = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.06, 1.0, levels)))
    norm = BoundaryNorm(np.linspace(-0.5 / n_heads, 1 + 0.5 / n_heads, levels + 1), cmap.N)
    for ax, p in zip(axes, panels):
        im = ax.imshow(p["img"], aspect="auto", origin="lower", cmap=cmap, norm=norm, interpolation="nearest",
                       extent=(-0.5, n - 0.5, -0.5, n_layers - 0.5))
        for a, b in spans:
            for x in (a - 0.5, b - 0.5):
                ax.axvline(x, color=NEEDLE_COLOR, lw=0.6, alpha=0.9)
            ax.plot([a - 0.5, b - 0.5], [n_layers - 0.5 + 0.9] * 2, color=NEEDLE_COLOR, lw=2.0,
                    solid_capstyle="butt", clip_on=False)
        ax.set_ylim(-0.5, n_layers - 0.5)
        ax.set_yticks([0, n_layers - 1])
        ax.set_ylabel("layer", labelpad=1)
        ax.set_title(p["title"], loc="left", pad=4, fontsize=7)
        ax.tick_params(length=2, pad=1)
    axes[-1].set_xlabel("context token position")
    ticks = [0, 1 / 3, 2 / 3, 1] if n_heads == 3 else np.linspace(0, 1, min(levels, 5))
    cb = fig.colorbar(im, ax=axes, fraction=0.04, pad=0.01, aspect=40, ticks=ticks)
    cb.ax.set_yticklabels([f"{t:.2g}" for t in ticks])
    cb.set_label(f"fraction of {n_heads} KV heads keeping", fontsize=7)
    cb.ax.tick_params(labelsize=6, length=2)
    fig.suptitle(title, fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="niah_single_1", help="a RULER task with needle spans (niah_*)")
    ap.add_argument("--length", type=int, default=1024, help="RULER length in tokens (default 1024)")
    ap.add_argument("--sample", type=int, default=0, help="sample index within the task (default 0)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--r", type=float, default=0.75, help="fraction of context KV pairs removed (default 0.75)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method configs")
    ap.add_argument("--no-answers", action="store_true", help="skip decoding (no right/wrong in the titles)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "figures")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m and m != "full"]

    import torch

    import harness
    from harness.inspect import needle_token_spans
    from harness.protocol import encode_context

    torch.manual_seed(0)
    model, tok = harness.load_model(args.model, dtype="float32", device="cpu")
    rec = load_record(tok, args.task, args.length, args.sample, args.seed)
    ids = encode_context(tok, rec).context_ids
    n = ids.shape[-1]
    spans = needle_token_spans(tok, rec)
    res = {} if args.no_answers else answers(args.model, args.task, args.length, args.sample, args.seed, args.r,
                                              methods)
    panels = []
    for m in methods:
        kept = harness.kept_positions(model, ids, m, r=args.r)
        img = kept_fraction_image(kept, n)
        needle = np.concatenate([img[:, a:b] for a, b in spans], axis=1) if spans else np.zeros((1, 1))
        parts = [m, f"needle kept {100 * needle.mean():.0f}%"]
        if m in res:
            score, pred = res[m]
            parts.append(("right" if score >= 100 else "wrong" if score <= 0 else f"{score:.0f}/100")
                         + f' ("{pred.strip()[:24]}")')
        panels.append({"method": m, "img": img, "title": ", ".join(parts)})
        n_heads = max(len(h) for h in kept)
        print(f"[kept] {', '.join(parts)}", file=sys.stderr)
    title = (f"{args.model}, RULER {args.task} @{args.length}, sample {args.sample}\n"
             f"n={n} context tokens, answer {', '.join(rec.answers)}, r={args.r:g} (keeps {100 * (1 - args.r):.0f}%)")
    fig = figure(panels, n, n_heads, spans, args.r, title)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"kept_{args.task}_{args.length}_{args.model}_r{args.r:g}"
    written = []
    for ext in ("png", "pdf"):
        p = args.out / f"{stem}.{ext}"
        fig.savefig(p, format=ext, metadata=METADATA[ext])
        written.append(p)
    plt.close(fig)
    for p in written:
        print(p)
    return written


if __name__ == "__main__":
    main()
