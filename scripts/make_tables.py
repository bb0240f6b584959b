"""Result tables (Markdown, LaTeX, CSV) from the harness's Parquet result rows.

    python scripts/make_tables.py RESULTS_DIR [RESULTS_DIR ...] --out OUTDIR [--ci] [--paper]

Writes, for each model:
- ``<suite>_<bucket>_<model>``: the suite headline, compressed methods as rows (full-cache reference on top),
  compression ratios r as columns (RULER / LongBench-E: one table per length bucket);
- ``<suite>_<bucket>_<model>_tasks``: per-task columns plus the headline ("Avg"), one block of rows per r
  (the LongBench layout; written for every suite);
- ``ablation_<model>``: NestedKV and its three ablations (nestedkv, nestedkv_uniform, keydiff_adaptive,
  keydiff), one block per (suite, bucket);
- ``cost_<model>``: prefill, scoring share, decode ms/token (a batch share) and batch size, KV bytes kept, peak
  memory (prefill or batch) per method x r;
plus ``all_tables.md`` (everything on one page), ``cells.csv`` / ``task_cells.csv`` (every aggregated cell,
long format), ``variants.csv`` (what each method label stands for) and ``summary.txt``.

Output is deterministic: the same rows give byte-identical files (sorted, fixed formats, no timestamps).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from harness import report as R  # noqa: E402

# The NestedKV paper's reported numbers for Qwen3-4B (Chen et al., "Nested Memory Routing for Long-Context KV
# Cache Compression", arXiv 2605.26678: its ablation table and its headline numbers for Qwen3-4B).
# Key: (suite, length_bucket or None = any, method, r or None = any r); value: (score, approximate?). The paper used kvpress defaults (query-agnostic, default params).
# The NestedKV paper's ablation table: (method config, description) in the paper's order. The table is built
# from these method configs' rows when a run holds them (conf/sweep/ablation.yaml); the engine knows no method.
ABLATION = (
    ("nestedkv", "NestedKV"),
    ("nestedkv_uniform", "w/o adaptive budget"),
    ("keydiff_adaptive", "w/o three-scale score"),
    ("keydiff", "w/o both (KeyDiff)"),
)
ABLATION_ONLY = ("nestedkv_uniform", "keydiff_adaptive")  # the ablation's variants that are not seed methods
PAPER_MODEL = "qwen3-4b"  # matched case-insensitively as a substring of the model name
PAPER = {
    ("ruler", 4096, "nestedkv", 0.75): (79.32, False),
    ("ruler", 4096, "nestedkv_uniform", 0.75): (70.91, False),  # without the adaptive budget
    ("ruler", 4096, "keydiff_adaptive", 0.75): (71.33, False),  # without the three-scale score
    ("ruler", 4096, "keydiff", 0.75): (60.22, False),
    ("longbench", None, "nestedkv", 0.75): (50.06, False),
    ("longbench", None, "keydiff", 0.75): (30.77, False),
    ("longbench", None, "nestedkv", 0.95): (37.32, False),
    ("longbench", None, "keydiff", 0.95): (17.55, False),
    ("mmlu_pro", None, "nestedkv", 0.25): (36.5, False),
    ("mmlu_pro", None, "full", None): (36.3, False),
    ("mmlu_pro", None, "nestedkv", 0.75): (33.1, False),
    ("mmlu_pro", None, "snapkv", 0.75): (22.0, True),  # "about 22"
    ("mmlu_pro", None, "pyramidkv", 0.75): (22.0, True),
}

DASH = "—"
TASK_ABBREV = {
    "narrativeqa": "NrtvQA", "qasper": "Qasper", "multifieldqa_en": "MF-en", "multifieldqa_zh": "MF-zh",
    "hotpotqa": "HotpotQA", "2wikimqa": "2WikiMQA", "musique": "Musique", "dureader": "DuReader",
    "gov_report": "GovReport", "qmsum": "QMSum", "multi_news": "MultiNews", "vcsum": "VCSum", "trec": "TREC",
    "triviaqa": "TriviaQA", "samsum": "SAMSum", "lsht": "LSHT", "passage_count": "PCount",
    "passage_retrieval_en": "PRe", "passage_retrieval_zh": "PRz", "lcc": "LCC", "repobench-p": "RB-P",
}
SUITE_TITLE = {"ruler": "RULER", "longbench": "LongBench", "longbench_e": "LongBench-E", "loogle": "LooGLE",
               "infinitebench": "InfiniteBench", "mmlu_pro": "MMLU-Pro", "mmlu": "MMLU",
               "squad_mq": "SQuAD multi-query"}


# ============================================================================================ table model
@dataclass
class Cell:
    score: float | None = None  # None: no data
    n: int | None = None
    sig: str | None = None  # per-task sample counts; cells whose sig differs from the table's mode get "n="
    complete: bool = True
    ci: tuple[float, float] | None = None
    paper: tuple[float, bool] | None = None
    text: str | None = None  # preformatted (cost table)
    best: bool = False
    n_mark: bool = False
    rankable: bool = True  # may be marked best (not the full reference)


@dataclass
class Table:
    name: str
    title: str
    label_cols: list[str]
    columns: list[str]
    rows: list[tuple[tuple[str, ...], list[Cell]] | str] = field(default_factory=list)  # str = group heading
    notes: list[str] = field(default_factory=list)
    mark_best: bool = True
    show_n: bool = True


def finish(table: Table) -> None:
    """Best per column (within each group; complete, rankable cells) and n= marks where counts differ."""
    blocks: list[list[list[Cell]]] = [[]]
    for row in table.rows:
        if isinstance(row, str):
            blocks.append([])
        else:
            blocks[-1].append(row[1])
    if table.mark_best:
        for block in blocks:
            for j in range(len(table.columns)):
                cand = [r[j] for r in block if r[j].score is not None and r[j].complete and r[j].rankable
                        and not math.isnan(r[j].score)]
                if len(cand) < 2:
                    continue
                top = max(round(c.score, 2) for c in cand)
                for c in cand:
                    c.best = round(c.score, 2) == top
    if not table.show_n:
        return
    modes = []
    for block in blocks:
        cells = [c for r in block for c in r if c.score is not None and c.sig is not None]
        mode = R.modal(c.sig for c in cells)
        for c in cells:
            c.n_mark = c.sig != mode
        modes.append(None if mode is None else R.modal(c.n for c in cells if c.sig == mode))
    used = [m for m in modes if m is not None]
    marked = any(c.n_mark for b in blocks for r in b for c in r)
    tail = " unless marked (n=...), where sample counts differ." if marked else "."
    if len(set(used)) == 1:
        table.notes.insert(0, f"n = {used[0]} samples per cell{tail}")
    elif used:  # blocks with different counts: say it in each block's heading
        k = 0
        for i, row in enumerate(table.rows):
            if isinstance(row, str):
                k += 1
                if modes[k] is not None:
                    table.rows[i] = f"{row} (n = {modes[k]})"
        table.notes.insert(0, f"n: samples per cell, given in each block's heading{tail}")


def _f(x: float, d: int = 2) -> str:
    return f"{x:.{d}f}"


def cell_md(c: Cell) -> str:
    if c.text is not None:
        return c.text
    if c.score is None or math.isnan(c.score):
        return DASH
    s = _f(c.score)
    s = f"**{s}**" if c.best else s
    if not c.complete:
        s += "\\*"
    if c.ci:
        s += f" ±{_f((c.ci[1] - c.ci[0]) / 2)}"
    if c.paper:
        s += f" [{'~' if c.paper[1] else ''}{c.paper[0]:.2f}]"
    if c.n_mark:
        s += f" (n={c.n})"
    return s


def tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}"),
                 ("—", "--"), ("±", r"$\pm$"), ("×", r"$\times$"), ("≈", r"$\approx$")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
    return s.replace("\x00", r"\textbackslash{}")


def cell_tex(c: Cell) -> str:
    if c.text is not None:
        return tex_escape(c.text)
    if c.score is None or math.isnan(c.score):
        return "--"
    s = _f(c.score)
    s = rf"\textbf{{{s}}}" if c.best else s
    if not c.complete:
        s += r"$^{*}$"
    if c.ci:
        s += rf"{{\scriptsize$\pm${_f((c.ci[1] - c.ci[0]) / 2)}}}"
    if c.paper:
        approx = r"$\approx$" if c.paper[1] else ""
        s += rf" {{\scriptsize[{approx}{c.paper[0]:.2f}]}}"
    if c.n_mark:
        s += rf"\textsuperscript{{n={c.n}}}"
    return s


def render_md(t: Table) -> str:
    head = t.label_cols + t.columns
    out = [f"### {t.title}", "", "| " + " | ".join(head) + " |",
           "|" + "|".join([":--"] * len(t.label_cols) + ["--:"] * len(t.columns)) + "|"]
    for row in t.rows:
        if isinstance(row, str):
            out.append("| " + " | ".join([f"*{row}*"] + [""] * (len(head) - 1)) + " |")
        else:
            out.append("| " + " | ".join(list(row[0]) + [cell_md(c) for c in row[1]]) + " |")
    out.append("")
    out += [f"- {n}" for n in t.notes]
    return "\n".join(out) + "\n"


def render_tex(t: Table) -> str:
    ncol = len(t.label_cols) + len(t.columns)
    out = [r"% generated by scripts/make_tables.py; needs \usepackage{booktabs}", r"\begin{table}[t]",
           r"\centering", r"\small", rf"\caption{{{tex_escape(t.title)}}}",
           rf"\label{{tab:{t.name}}}",
           r"\begin{tabular}{" + "l" * len(t.label_cols) + "r" * len(t.columns) + "}", r"\toprule",
           " & ".join(tex_escape(h) for h in t.label_cols + t.columns) + r" \\", r"\midrule"]
    first = True
    for row in t.rows:
        if isinstance(row, str):
            if not first:
                out.append(r"\midrule")
            out.append(rf"\multicolumn{{{ncol}}}{{l}}{{\emph{{{tex_escape(row)}}}}} \\")
        else:
            out.append(" & ".join([tex_escape(x) for x in row[0]] + [cell_tex(c) for c in row[1]]) + r" \\")
        first = False
    out += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        out.append(r"\par\smallskip\footnotesize " + " ".join(tex_escape(n) for n in t.notes))
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def _csv_num(x: float | None, d: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def render_csv(t: Table) -> str:
    head = ["group"] + t.label_cols
    for col in t.columns:
        if t.mark_best or t.show_n:
            head += [col, f"{col} n", f"{col} complete", f"{col} best", f"{col} ci_lo", f"{col} ci_hi",
                     f"{col} paper"]
        else:
            head.append(col)
    lines = [",".join(_csv_quote(h) for h in head)]
    group = ""
    for row in t.rows:
        if isinstance(row, str):
            group = row
            continue
        vals = [group] + list(row[0])
        for c in row[1]:
            if t.mark_best or t.show_n:
                vals += [_csv_num(c.score), "" if c.n is None else str(c.n),
                         "" if c.score is None else str(int(c.complete)), str(int(c.best)),
                         _csv_num(c.ci[0]) if c.ci else "", _csv_num(c.ci[1]) if c.ci else "",
                         _csv_num(c.paper[0], 2) if c.paper else ""]
            else:
                vals.append(c.text if c.text not in (None, DASH) else "")
        lines.append(",".join(_csv_quote(v) for v in vals))
    return "\n".join(lines) + "\n"


def _csv_quote(s: str) -> str:
    s = str(s)
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s


# ============================================================================================ building
def paper_value(model: str, suite: str, bucket: int, variant: str, r: float | None):
    if PAPER_MODEL not in str(model).lower().replace("_", "-").replace("/", "-"):
        return None
    for (s, b, m, pr), v in PAPER.items():
        if s == suite and (b is None or b == bucket) and m == variant and (pr is None or
                                                                          (r is not None and abs(pr - r) < 1e-9)):
            return v
    return None


def headline_cell(c: pd.Series | None, paper=None, rankable=True) -> Cell:
    if c is None:
        return Cell(paper=paper, rankable=rankable)
    ci = (c["ci_lo"], c["ci_hi"]) if "ci_lo" in c and not math.isnan(c["ci_lo"]) else None
    return Cell(score=float(c["score"]), n=int(c["n"]), sig=c["n_signature"], complete=bool(c["complete"]),
                ci=ci, paper=paper, rankable=rankable)


def common_notes(hc: pd.DataFrame, ci: bool, paper_used: bool) -> list[str]:
    notes = []
    refs = R.reference_labels(hc)
    if refs:
        notes.append(f"{', '.join(refs)}: full-cache reference (independent of r), repeated in every column.")
    notes.append("Bold: best compressed method per column (complete cells only).")
    inc = hc[~hc["complete"]]
    for _, c in inc.iterrows():
        rr = "" if c["reference"] else f" r={R.fmt_r(c['r'])}"
        notes.append(f"* {c['variant']}{rr}: incomplete, averaged over {c['n_tasks']} of "
                     f"{c['n_tasks_expected']} tasks (missing: {c['missing'].replace(',', ', ')}).")
    if ci:
        notes.append(f"±: half-width of the 95 % percentile bootstrap interval ({R.BOOTSTRAP_RESAMPLES} resamples "
                     f"of the samples within each task, seed {R.BOOTSTRAP_SEED}).")
    if paper_used:
        notes.append("[x]: the NestedKV paper's reported number for Qwen3-4B (~: approximate).")
    return notes


def headline_note(suite: str, official: bool) -> str:
    if official:
        return f"Score: {SUITE_TITLE.get(suite, suite)} headline as defined by tasks.make_task({suite!r}).headline."
    return (f"Score: unweighted mean of the task scores (FALLBACK: the task registry knows no suite {suite!r}, "
            "so its official headline could not be used).")


def block_title(suite: str, bucket: int, allb: list[int]) -> str:
    """"RULER 4k": the suite's title and, when the rows have a length bucket, its label among ``allb``."""
    return SUITE_TITLE.get(suite, suite) + ("" if bucket == R.NO_BUCKET else f" {R.bucket_label(suite, bucket, allb)}")


def rcol(r: float) -> str:
    return R.fmt_r(r) if r == R.FIXED_BUDGET else f"r={R.fmt_r(r)}"


def column_rs(hc: pd.DataFrame) -> list[float]:
    return sorted(hc.loc[~hc["reference"], "r"].unique()) or [0.0]


def variant_cells(g: pd.DataFrame, v: str, rs: list, model: str, suite: str, bucket, paper: bool):
    """One method row of headline cells, one per ratio (the full cache repeats its single cell), and whether
    a paper number was shown in it."""
    gv = g[g["variant"] == v]
    ref = bool(gv["reference"].any())
    cells, used = [], False
    for r in rs:
        sel = gv if ref else gv[gv["r"] == r]
        pv = paper_value(model, suite, bucket, v, None if ref else r) if paper else None
        used |= pv is not None
        cells.append(headline_cell(sel.iloc[0] if len(sel) else None, pv, rankable=not ref))
    return cells, used


def main_tables(hc: pd.DataFrame, ci: bool, paper: bool) -> list[Table]:
    tables = []
    for (model, suite, bucket), g in hc.groupby(R.TABLE_KEY, sort=True):
        allb = sorted(hc.loc[(hc["model"] == model) & (hc["suite"] == suite), "length_bucket"].unique())
        bl = R.bucket_label(suite, bucket, allb)
        rs = column_rs(g)
        t = Table(name=R.slug(f"{suite}_{bl}_{model}"),
                  title=block_title(suite, bucket, allb)
                  + f", {model}: score by compression ratio r",
                  label_cols=["method"], columns=[rcol(r) for r in rs])
        paper_used = False
        for v in R.order_variants(g):
            cells, used = variant_cells(g, v, rs, model, suite, bucket, paper)
            paper_used |= used
            t.rows.append(((v,), cells))
        t.notes = [headline_note(suite, bool(g["official"].all()))] + common_notes(g, ci, paper_used)
        if str(model).endswith("]") and " [" in str(model):
            t.notes.append(f"[{str(model).split(' [', 1)[1]}: this model's runs differ in these settings; each "
                           "setting has its own tables, never averaged together.")
        finish(t)
        tables.append(t)
    return tables


def task_tables(tc: pd.DataFrame, hc: pd.DataFrame, ci: bool) -> list[Table]:
    tables = []
    for (model, suite, bucket), g in tc.groupby(R.TABLE_KEY, sort=True):
        h = hc[(hc["model"] == model) & (hc["suite"] == suite) & (hc["length_bucket"] == bucket)]
        allb = sorted(hc.loc[(hc["model"] == model) & (hc["suite"] == suite), "length_bucket"].unique())
        bl = R.bucket_label(suite, bucket, allb)
        tasks = R.task_order(suite, sorted(g["task"].unique()))
        rs = column_rs(h)
        t = Table(name=R.slug(f"{suite}_{bl}_{model}_tasks"),
                  title=block_title(suite, bucket, allb)
                  + f", {model}: per-task scores",
                  label_cols=["method"], columns=[TASK_ABBREV.get(x, x) for x in tasks] + ["Avg"])
        variants = R.order_variants(g)
        refs = R.reference_labels(g)
        if refs:
            t.rows.append("full-cache reference")
            t.rows += [((v,), _task_row(g, h, v, 0.0, tasks, rankable=False)) for v in refs]
        for r in rs:
            if r == 0.0 and len(refs) == len(variants):
                break
            t.rows.append(f"r = {R.fmt_r(r)}")
            for v in variants:
                if v not in refs:
                    t.rows.append(((v,), _task_row(g, h, v, r, tasks)))
        t.notes = [headline_note(suite, bool(h["official"].all()) if len(h) else False).replace(
            "Score:", "Avg:"),
                   "Bold: best compressed method per column within each r block (complete Avg only).",
                   f"{DASH}: no result for that task. Avg*: the row lacks some of the table's tasks "
                   "(averaged over the tasks it has)."]
        if ci:
            t.notes.append(f"±: half-width of the 95 % percentile bootstrap interval ({R.BOOTSTRAP_RESAMPLES} "
                           f"resamples within each task, seed {R.BOOTSTRAP_SEED}).")
        abbrev = [f"{TASK_ABBREV[x]} = {x}" for x in tasks if x in TASK_ABBREV and TASK_ABBREV[x] != x]
        if abbrev:
            t.notes.append("Columns: " + ", ".join(abbrev) + ".")
        finish(t)
        tables.append(t)
    return tables


def _task_row(g: pd.DataFrame, h: pd.DataFrame, v: str, r: float, tasks: list[str], rankable=True) -> list[Cell]:
    gv = g[(g["variant"] == v) & (g["r"] == r)]
    cells = []
    for task in tasks:
        sel = gv[gv["task"] == task]
        if len(sel):
            c = sel.iloc[0]
            ci = (c["ci_lo"], c["ci_hi"]) if "ci_lo" in c and not math.isnan(c["ci_lo"]) else None
            cells.append(Cell(score=float(c["score"]), n=int(c["n"]), sig=f"{int(c['n'])}", ci=ci,
                              rankable=rankable))
        else:
            cells.append(Cell(rankable=rankable))
    hv = h[(h["variant"] == v) & (h["r"] == r)]
    avg = headline_cell(hv.iloc[0] if len(hv) else None, rankable=rankable)
    avg.sig = None  # the per-task cells carry the sample counts
    cells.append(avg)
    return cells


def ablation_tables(hc: pd.DataFrame, ci: bool, paper: bool) -> list[Table]:
    names = [v for v, _ in ABLATION]
    desc = dict(ABLATION)
    tables = []
    for model, gm in hc.groupby("model", sort=True):
        # a block is an ablation when it ran a variant that exists only for the ablation: nestedkv and keydiff
        # are seed methods, so a plain method comparison that holds both is not one (it showed rows of dashes)
        blocks = [(k, g) for k, g in gm.groupby(["suite", "length_bucket"], sort=True)
                  if g["variant"].isin(ABLATION_ONLY).any() and g.loc[g["variant"].isin(names), "variant"].nunique() >= 2]
        if not blocks:
            continue
        rs = sorted({r for _, g in blocks for r in g.loc[g["variant"].isin(names), "r"]})
        t = Table(name=R.slug(f"ablation_{model}"), title=f"NestedKV ablations, {model}",
                  label_cols=["method", "variant"], columns=[rcol(r) for r in rs])
        paper_used = False
        sub = []
        for (suite, bucket), g in blocks:
            allb = sorted(gm.loc[gm["suite"] == suite, "length_bucket"].unique())
            t.rows.append(block_title(suite, bucket, allb))
            refs = R.reference_labels(g)
            for v in refs + names:
                cells, used = variant_cells(g, v, rs, model, suite, bucket, paper)
                paper_used |= used
                t.rows.append(((v, "full cache" if v in refs else desc[v]), cells))
            sub.append(g[g["variant"].isin(names) | g["reference"]])
        s = pd.concat(sub)
        fallback = sorted(set(s.loc[~s["official"].astype(bool), "suite"]))
        t.notes = ["Score: each block's suite headline (tasks.make_task(suite).headline)." if not fallback else
                   "Score: each block's suite headline; FALLBACK unweighted mean of the task scores for "
                   + ", ".join(fallback) + " (suites the task registry does not know)."]
        t.notes += common_notes(s, ci, paper_used)
        t.notes.append("Variants: nestedkv = three-scale score + adaptive budget; nestedkv_uniform = uniform "
                       "budget; keydiff_adaptive = KeyDiff score + adaptive budget; keydiff = neither.")
        finish(t)
        tables.append(t)
    return tables


def _mib(x: float) -> str:
    return DASH if math.isnan(x) else f"{x / 2**20:.1f}"


def cost_tables(cc: pd.DataFrame) -> list[Table]:
    tables = []
    for model, gm in cc.groupby("model", sort=True):
        t = Table(name=R.slug(f"cost_{model}"), title=f"Cost per method and r, {model}",
                  label_cols=["method", "r"],
                  columns=["n", "prefill s", "scoring % of prefill", "decode ms/token (batch share)",
                           "decode batch", "KV kept MiB", "KV kept %", "peak mem GiB (prefill or batch)"],
                  mark_best=False, show_n=False)
        for (dev, suite, bucket), g in gm.groupby(["device", "suite", "length_bucket"], sort=True):
            allb = sorted(gm.loc[gm["suite"] == suite, "length_bucket"].unique())
            t.rows.append(", ".join(x for x in (block_title(suite, bucket, allb), dev) if x))
            for v in R.order_variants(g):
                for _, c in g[g["variant"] == v].sort_values("r").iterrows():
                    def fx(x, d, scale=1.0):
                        return DASH if math.isnan(x) else f"{x * scale:.{d}f}"
                    t.rows.append(((v, DASH if c["reference"] else R.fmt_r(c["r"])), [Cell(text=s) for s in (
                        str(c["n"]), fx(c["prefill_s"], 3), fx(c["scoring_share"], 2, 100),
                        fx(c["decode_share_ms_per_token"], 2), fx(c["decode_batch_size"], 1),
                        _mib(c["kv_bytes_kept"]), fx(c["kept_fraction"], 1, 100),
                        fx(c["peak_mem_bytes"], 2, 2.0**-30))]))
        t.notes = ["Means over samples. prefill s: the shared context prefill (one per context, the same for every "
                   "method of a sweep). scoring %: mean scoring_s / mean prefill_s. decode ms/token (batch share): "
                   "sum decode_s / sum generated tokens, where decode_s is a row's equal share of its decode batch "
                   "(decode_batch_s / decode_batch_size; decode batch: mean rows per batch): a batch figure, not one "
                   "configuration's cost, and it does not separate ratios decoded together; "
                   "scripts/bench_methods.py times each configuration alone (results/perf/). peak mem: the larger "
                   "of the shared prefill's peak and the decode batch's (peak_mem_bytes). KV kept: physical bytes "
                   "held (kv_bytes_kept); KV kept %: logical kept fraction. Blocks per (suite, length bucket, "
                   "device): costs depend on context length."]
        finish(t)
        tables.append(t)
    return tables


def multiquery_tables(prep: pd.DataFrame) -> list[Table]:
    """Shared-context multi-query suites (rows with ``query_index``, docs/tasks/squad_mq.md): per method and r,
    the mean score of the first question of each context, of the later ones, their gap, and the per-context
    mean; query-agnostic and query-aware variants side by side (the variant label says which)."""
    if "query_index" not in prep:
        return []
    mq = prep[pd.to_numeric(prep["query_index"], errors="coerce").notna()].copy()
    tables = []
    for (model, suite, bucket), g in mq.groupby(R.TABLE_KEY, sort=True):
        allb = sorted(mq.loc[(mq["model"] == model) & (mq["suite"] == suite), "length_bucket"].unique())
        bl = R.bucket_label(suite, bucket, allb)
        t = Table(name=R.slug(f"multiquery_{suite}_{bl}_{model}"),
                  title=block_title(suite, bucket, allb)
                  + f", {model}: first question vs later questions of one compressed cache",
                  label_cols=["method", "r"],
                  columns=["contexts", "per-context mean", "first question", "later questions", "gap",
                           "gap - full's"],
                  mark_best=False, show_n=False)

        def first_and_later(gr: pd.DataFrame) -> tuple[float, float]:
            qi = gr["query_index"].astype(int)
            return gr.loc[qi == 0, "score"].mean(), gr.loc[qi > 0, "score"].mean()

        refs = g[g["reference"]]
        ref_gap = float("nan")
        if len(refs) and refs["variant"].nunique() == 1:  # one full-cache reference: the baseline gap
            f0, f1 = first_and_later(refs)
            ref_gap = f0 - f1
        for v in R.order_variants(g):
            gv = g[g["variant"] == v]
            for r, gr in gv.groupby("r", sort=True):
                first, later = first_and_later(gr)
                per_ctx = gr.groupby("context_id")["score"].mean()
                ref = bool(gr["reference"].iloc[0])
                rel = float("nan") if ref else first - later - ref_gap
                t.rows.append(((v, DASH if ref else R.fmt_r(r)), [Cell(text=x) for x in (
                    str(len(per_ctx)), *(DASH if math.isnan(x) else _f(x) for x in (
                        per_ctx.mean(), first, later, first - later, rel)))]))
        t.notes = ["Score: the suite's per-question metric (squad_mq: SQuAD F1, 0-100). first question: "
                   "query_index 0 of each context; later questions: the others; gap = first - later. "
                   "per-context mean: the mean over contexts of each context's mean score. gap - full's: the gap "
                   "minus the full cache's gap on the same questions (the first question is not the same difficulty "
                   "as the others; this difference is what compression adds to the gap). Query-agnostic rows "
                   "compress each context once without a question; (query-aware) rows compress it once with the "
                   "first question in view and answer every question from that cache."]
        finish(t)
        tables.append(t)
    return tables


def generation_tables(prep: pd.DataFrame) -> list[Table]:
    """Suites whose answers are long generations (``tasks.long_generation``: GSM8K's chain of thought): per method
    and budget, the score next to what the generation cost: mean output tokens, the share of answers cut at the
    limit, time to first token and decode speed. Compression can lengthen the output (arXiv 2503.24000), so the
    score alone does not say what a budget saves."""
    from tasks import long_generation

    need = {"n_generated_tokens", "hit_limit", "ttft_s", "decode_tokens_per_s"}
    if not need <= set(prep.columns):
        return []
    tables = []
    for (model, suite, bucket), g in prep.groupby(R.TABLE_KEY, sort=True):
        if not long_generation(str(suite)):
            continue
        allb = sorted(prep.loc[(prep["model"] == model) & (prep["suite"] == suite), "length_bucket"].unique())
        bl = R.bucket_label(suite, bucket, allb)
        t = Table(name=R.slug(f"generation_{suite}" + ("" if bucket == R.NO_BUCKET else f"_{bl}") + f"_{model}"),
                  title=block_title(suite, bucket, allb)
                  + f", {model}: score and output length per method and budget",
                  label_cols=["method", "r"],
                  columns=["n", "score", "output tokens", "hit limit %", "TTFT s", "decode tok/s (batch)"],
                  mark_best=False, show_n=False)
        for v in R.order_variants(g):
            for r, gr in g[g["variant"] == v].groupby("r", sort=True):
                ref = bool(gr["reference"].iloc[0])
                vals = (gr["score"].mean(), pd.to_numeric(gr["n_generated_tokens"], errors="coerce").mean(),
                        100.0 * gr["hit_limit"].astype(float).mean(),
                        pd.to_numeric(gr["ttft_s"], errors="coerce").median(),
                        pd.to_numeric(gr["decode_tokens_per_s"], errors="coerce").median())
                t.rows.append(((v, DASH if ref or r == R.FIXED_BUDGET else R.fmt_r(r)), [Cell(text=str(len(gr)))] + [
                    Cell(text=DASH if math.isnan(x) else _f(x, d)) for x, d in zip(vals, (2, 1, 1, 3, 1))]))
        t.notes = ["score: the suite's metric (GSM8K: exact-match accuracy, 0-100). output tokens: mean generated "
                   "tokens per answer; hit limit %: answers cut at max_new_tokens. TTFT s (median): the decode's first "
                   "step, the question part and the first token over the compressed cache (shared by a decode "
                   "batch). decode tok/s (median): a row's steps after the first per second while its batch ran "
                   "(configurations decoded together share the batch's pace); "
                   "scripts/bench_methods.py times a configuration alone. [B=n]: n tokens kept per head; a method "
                   "with a decode rule (the *_online methods) holds that budget over the whole cache, context and "
                   "generated tokens, while it generates (docs/protocol.md, decode_budget); without one, the cache "
                   "grows from the compressed context."]
        finish(t)
        tables.append(t)
    return tables


# ============================================================================================ main
def build(paths: list[str], out: Path, ci: bool = False, paper: bool = False) -> list[Path]:
    df, prep, hc, tc, cc = R.load_prepared(paths, ci=ci)
    tables = main_tables(hc, ci, paper) + task_tables(tc, hc, ci) + ablation_tables(hc, ci, paper) + \
        multiquery_tables(prep) + generation_tables(prep) + cost_tables(cc)

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        p = out / name
        p.write_text(text, encoding="utf-8", newline="\n")
        written.append(p)

    for t in tables:
        write(f"{t.name}.md", render_md(t))
        write(f"{t.name}.tex", render_tex(t))
        write(f"{t.name}.csv", render_csv(t))
    write("all_tables.md", "# Results\n\n" + "\n".join(render_md(t) for t in tables))
    write("cells.csv", _long_csv(hc))
    write("task_cells.csv", _long_csv(tc))
    write("variants.csv", R.variants(df).to_csv(index=False, lineterminator="\n"))
    summ = R.as_summary(hc)
    write("summary.txt", R.format_summary(summ) + "\n")
    return written


def _long_csv(d: pd.DataFrame) -> str:
    d = R.public(d)
    d["length_bucket"] = d["length_bucket"].map(lambda b: "" if b == R.NO_BUCKET else str(b))
    d["r"] = d["r"].map(lambda r: f"{r:.4f}")
    for c in ("score", "ci_lo", "ci_hi"):
        if c in d:
            d[c] = d[c].map(_csv_num)
    return d.to_csv(index=False, lineterminator="\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="folder(s) with Parquet result part files (searched recursively)")
    ap.add_argument("--out", default="tables", help="output folder (default: ./tables)")
    ap.add_argument("--ci", action="store_true", help="add 95 %% bootstrap confidence intervals")
    ap.add_argument("--paper", action="store_true", help="print the NestedKV paper's numbers beside ours")
    a = ap.parse_args(argv)
    try:
        written = build(a.results, Path(a.out), ci=a.ci, paper=a.paper)
    except R.ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    print((Path(a.out) / "summary.txt").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
