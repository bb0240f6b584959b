"""Aggregation of result rows (docs/protocol.md, "Result rows") shared by ``scripts/make_tables.py`` and
``scripts/make_figures.py``.

Pipeline: ``load_results`` (harness/rows.py: read, one row per configuration and sample) -> ``prepare`` (display
labels) -> ``task_cells`` (mean per sub-task, weighted by the rows' ``score_weight`` where present: LooGLE
cloze's official micro average) -> ``headline_cells`` (the suite's headline per (model, suite, length bucket,
configuration), with completeness and sample counts) -> ``summary``.

Conventions (docs/results.md, "How the tables read rows")
- Cells group rows by configuration: ``config_id`` (harness/rows.py), the engine's ``config_json`` without the
  sub-task selection. Labels are for display only.
- The full-cache reference is the column ``reference`` (harness/rows.py: the method class's ``compresses``, the
  rule the engine uses); its ``r`` becomes 0.0 whatever the rows say.
- A *variant* is the method label, extended only where the label alone would merge different settings:
  `` (query-aware)`` when ``query_aware`` is true, ``[B=<n>]`` for fixed token budgets, ``[decode_budget=ratio]``
  when a decode rule kept the cache at a ratio of the tokens seen, ``/<policy>`` when one
  label was run with several budget policies, ``#<hash>`` when one label was run with several
  ``method_params``, ``[safeguard=<s>]`` when it was run with several safeguards. ``variants(df)`` lists what
  each label stands for.
- Run settings that change results but are not part of a method variant (``dtype``, ``seed``,
  ``max_new_tokens``, ``max_context``, ``attn_impl``, ``model_source``, task parameters: the ``config_json`` keys
  of ``harness.run.run_context``): when the rows of one model differ in any of them within one table, every row
  of that model gets them in its model label (``smollm2-135m [dtype=bfloat16]``), so each configuration has its
  own tables. Configurations that these labels still do not tell apart in one table get the keys they differ in
  appended to the variant (``keydiff[method_class=KeyDiff2]``): never merged, never dropped.
- A cell is *complete* when it holds every sub-task that any variant of the same table (model, suite, length
  bucket) has. Incomplete headline cells are still computed over the tasks they have, but flagged; they are
  never silently averaged with a different task set.
- A suite's headline is ``tasks.headline_rule(suite)`` (read from the suite's class, never by constructing it); a
  suite the registry does not know gets the unweighted mean with a warning, marked FALLBACK in the tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness.results import ResultsError
from harness.rows import R_DECIMALS, identities, load_results, parse_config, unique_rows
from tasks import Headline, bucket_names, headline_rule

FIXED_BUDGET = -1.0  # the ``r`` given to rows without one (fixed ``budget_tokens``); shown as "fixed B"
NO_BUCKET = -1  # internal stand-in for a null length_bucket (grouping keys cannot be NA everywhere)
BOOTSTRAP_SEED = 20240917
BOOTSTRAP_RESAMPLES = 1000

TABLE_KEY = ["model", "suite", "length_bucket"]
# a cell is one configuration (config_id) in one table; its labels (variant, r) come first so that cells sort by
# them (they name one configuration per table: prepare makes them distinct)
CELL_KEY = TABLE_KEY + ["variant", "r", "config_id"]
INTERNAL_COLUMNS = ("config_id", "reference")  # in the cell frames, not in the published long CSVs


# --------------------------------------------------------------------------------------------- preparing
def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _canon_params(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "{}"
    try:
        return json.dumps(json.loads(v) if isinstance(v, str) else v, sort_keys=True)
    except (TypeError, ValueError):
        return str(v)


# --------------------------------------------------------------------------------------------- run settings
# config_json keys that the variant label already covers (or that cannot split a model): not run settings
VARIANT_KEYS = frozenset({"model", "method", "method_class", "method_params", "r", "budget_tokens", "budget_policy",
                          "query_aware", "safeguard", "decode_budget"})
SETTING_COLUMNS = ("model_source", "dtype", "attn_impl")  # row columns that are run settings too
SETTING_ORDER = ("dtype", "seed", "max_new_tokens", "max_context", "attn_impl", "model_source", "task")


def _fmt_setting(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _flat_config(cfg: dict) -> dict[str, str]:
    """Every key of a row's config_json as text; ``task_params`` flattened to ``task.<name>``."""
    out = {}
    for k, v in cfg.items():
        if k == "task_params" and isinstance(v, dict):
            out.update({f"task.{kk}": _fmt_setting(vv) for kk, vv in v.items()})
        else:
            out[k] = _fmt_setting(v)
    return out


def run_settings(df: pd.DataFrame) -> pd.DataFrame:
    """Per row, the run settings (text; "null" where a row does not record one): config_json keys outside
    ``VARIANT_KEYS`` (the sub-task selection ``task.tasks`` excluded: rows carry their task) and the columns
    ``SETTING_COLUMNS``."""
    cj = df["config_json"] if "config_json" in df else pd.Series("{}", index=df.index)
    flat = {c: {k: v for k, v in _flat_config(parse_config(c)).items()
                if k not in VARIANT_KEYS and k != "task.tasks"} for c in cj.unique()}
    out = pd.DataFrame([flat[c] for c in cj], index=df.index)
    for c in SETTING_COLUMNS:
        if c in df:
            out[c] = df[c].map(lambda v: "null" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out.fillna("null").astype(str)


def _setting_key(name: str) -> tuple:
    return (SETTING_ORDER.index(name) if name in SETTING_ORDER else len(SETTING_ORDER), name)


def setting_labels(df: pd.DataFrame) -> pd.Series:
    """Per row, the run settings that tell it apart from other rows of its model ("dtype=bfloat16, seed=1"), or
    "" when the model's rows agree on every setting within each table (model, suite, length bucket)."""
    st = run_settings(df)
    if st.empty or not len(st.columns):
        return pd.Series("", index=df.index)
    table = [df[c].astype(str) for c in TABLE_KEY]
    varies = st.groupby(table, sort=False).nunique() > 1
    per_model: dict[str, list[str]] = {}
    for key, row in varies.iterrows():
        per_model.setdefault(key[0], []).extend(c for c in st.columns if row[c])
    labels = pd.Series("", index=df.index)
    model = df["model"].astype(str)
    for m, found in per_model.items():
        ks = sorted(set(found), key=_setting_key)
        if ks:
            mask = model == m
            lab = ks[0] + "=" + st.loc[mask, ks[0]]
            for k in ks[1:]:
                lab = lab + ", " + k + "=" + st.loc[mask, k]
            labels[mask] = lab
    return labels


def _differing_settings(configs: Iterable[str]) -> list[str]:
    """The config_json keys whose values differ between these configurations."""
    flats = [_flat_config(parse_config(c)) for c in configs]
    keys = set().union(*flats) if flats else set()
    return sorted(k for k in keys if len({f.get(k, "null") for f in flats}) > 1)



def load_prepared(paths, ci: bool = False) -> tuple[pd.DataFrame, ...]:
    """What both report scripts start from: (rows, prepared rows, headline cells, task cells, cost cells).
    Warnings (a suite the task registry does not know) go to stderr."""
    import sys

    df = load_results(paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(df)
        hc = headline_cells(prep, ci=ci)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return df, prep, hc, task_cells(prep, ci=ci), cost_cells(prep)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ready for aggregation: adds the display labels ``variant`` and ``setting`` (the latter also in
    ``model``); ``r`` = 0.0 for the reference; null length buckets become ``NO_BUCKET``.

    ``df`` is what ``load_results`` returns (trusted as it is: one row per configuration and sample); other
    frames (a run's own rows) first go through the same rule, ``unique_rows``."""
    missing = [c for c in ("model", "suite", "task", "method", "sample_id", "score") if c not in df.columns]
    if missing:
        raise ResultsError(f"result rows lack required column(s) {missing}; are these harness result files?")
    rows = df if "config_id" in df.columns else unique_rows(df)
    out = rows.copy()
    out["method"] = out["method"].astype(str)
    out["r"] = out["r"].astype(float).round(R_DECIMALS) if "r" in out else 0.0
    out.loc[out["reference"], "r"] = 0.0
    out["r"] = out["r"].fillna(FIXED_BUDGET)  # rows with a fixed token budget have no ratio
    lb = out["length_bucket"] if "length_bucket" in out else pd.Series(np.nan, index=out.index)
    out["length_bucket"] = pd.to_numeric(lb, errors="coerce").fillna(NO_BUCKET).astype("int64")
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype(float)
    if "score_weight" in out:  # rows written before the column existed weigh 1
        out["score_weight"] = pd.to_numeric(out["score_weight"], errors="coerce").fillna(1.0).astype(float)
    out["variant"] = _variant_labels(out)
    out["setting"] = setting_labels(out)  # distinct run settings of one model: separate tables
    out["model"] = out["model"].astype(str) + out["setting"].map(lambda t: f" [{t}]" if t else "")
    out["variant"] = _distinct_labels(out, rows)
    key = CELL_KEY + ["task", "sample_id"]
    return out.sort_values(key, kind="stable").reset_index(drop=True)


def _distinct_labels(out: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """``out``'s variants, with ``[key=value, ...]`` appended where configurations that differ share a (table,
    variant, r): the config_json keys they differ in (``rows``: the same rows before labelling)."""
    key = TABLE_KEY + ["variant", "r"]
    clash = out.groupby(key, sort=False)["config_id"].transform("nunique") > 1
    label = out["variant"].copy()
    if not clash.any():
        return label
    text = identities(rows.loc[clash[clash].index])
    for _, g in out.loc[clash].groupby(key, sort=False):
        configs = {cid: text[idx[0]] for cid, idx in g.groupby("config_id", sort=True).groups.items()}
        differ = _differing_settings(configs.values())
        for cid, idx in g.groupby("config_id", sort=True).groups.items():
            flat = _flat_config(parse_config(configs[cid]))
            label[idx] = label[idx] + "[" + ", ".join(f"{k}={flat.get(k, 'null')}" for k in differ) + "]"
    return label


def _variant_labels(df: pd.DataFrame) -> pd.Series:
    label = df["method"].astype(str).copy()
    compressed = ~df["reference"]  # the reference's label is its method label: it ignores budgets
    params = df["method_params"].map(_canon_params) if "method_params" in df else pd.Series("{}", index=df.index)
    if "budget_policy" in df:
        pol = df["budget_policy"].astype(object).where(df["budget_policy"].notna(), "")
        multi = (pol.groupby(df["method"]).transform("nunique") > 1) & compressed
        label = label.where(~multi, label + "/" + pol.astype(str))
    multi = (params.groupby(df["method"]).transform("nunique") > 1) & compressed
    label = label.where(~multi, label + "#" + params.map(_short_hash))
    if "config_json" in df:  # the adaptive budget's safeguard is recorded in config_json only
        sg = df["config_json"].map(lambda c: _fmt_setting(parse_config(c).get("safeguard")))
        multi = (sg.groupby(df["method"]).transform("nunique") > 1) & compressed
        label = label.where(~multi, label + "[safeguard=" + sg + "]")
    if "budget_tokens" in df:
        bt = pd.to_numeric(df["budget_tokens"], errors="coerce")
        has = bt.notna() & compressed
        label = label.where(~has, label + "[B=" + bt.fillna(0).astype("int64").astype(str) + "]")
    if "decode_budget" in df:  # recorded only when not the default (fixed)
        db = df["decode_budget"].astype(object)
        has = db.notna() & (db != "fixed") & compressed
        label = label.where(~has, label + "[decode_budget=" + db.astype(str) + "]")
    if "query_aware" in df:
        qa = df["query_aware"].astype(object).map(lambda v: bool(v) if v is not None and v == v else False)
        label = label.where(~(qa & compressed), label + " (query-aware)")
    return label


def variants(df: pd.DataFrame) -> pd.DataFrame:
    """What each variant label stands for: method, params, policy, query_aware, run ids, commits."""
    p = prepare(df)
    cols = {"method": "method"}
    for c in ("method_params", "budget_policy", "query_aware", "budget_tokens", "run_id", "git_commit",
              "harness_version"):
        if c in p:
            cols[c] = c
    rows = []
    for v, g in p.groupby("variant", sort=True):
        row = {"variant": v}
        for c in cols:
            vals = sorted({(_canon_params(x) if c == "method_params" else str(x)) for x in g[c]})
            row[c] = "; ".join(vals)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- headlines
def _unweighted(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
    return sum(task_scores.values()) / max(1, len(task_scores))


def headline_fn(suite: str) -> tuple[Headline, bool]:
    """``(fn, official)``: ``fn(task_scores, counts)`` is the suite's headline from the task registry
    (``tasks.headline_rule``: read from the suite's class, never constructed). A suite the registry does not know
    (its module removed or renamed) gets the unweighted mean of its tasks with ``official=False`` and a warning."""
    try:
        return headline_rule(suite), True
    except KeyError as exc:
        warnings.warn(f"{exc.args[0]}: its tables use the unweighted mean of the task scores (marked FALLBACK), "
                      f"not the suite's official headline", stacklevel=2)
        return _unweighted, False


# --------------------------------------------------------------------------------------------- cells
def _task_scores(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """A task's scores and their ``score_weight`` (None when every weight is 1: the plain mean).

    A task mean is ``sum(score x weight) / sum(weight)``: a sample's weight is the denominator of its score when
    the official aggregate is a ratio of sums (LooGLE cloze: matches / masks, tasks/records.py)."""
    ok = g["score"].notna()
    s = g.loc[ok, "score"].to_numpy(dtype=float)
    if "score_weight" not in g:
        return s, None
    w = g.loc[ok, "score_weight"].to_numpy(dtype=float)
    return s, None if (w == 1.0).all() else w


def _weighted_mean(s: np.ndarray, w: np.ndarray | None) -> float:
    if not len(s):
        return math.nan
    if w is None:
        return float(s.mean())
    return float((s * w).sum() / w.sum()) if w.sum() > 0 else math.nan


def _bootstrap_task_means(scores: np.ndarray, rng: np.random.Generator, b: int,
                          weights: np.ndarray | None = None) -> np.ndarray:
    idx = rng.integers(0, len(scores), size=(b, len(scores)))
    if weights is None:
        return scores[idx].mean(axis=1)
    w = weights[idx]  # (b, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (scores[idx] * w).sum(axis=1) / w.sum(axis=1)


def task_cells(prep: pd.DataFrame, ci: bool = False, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Mean score and sample count per (model, suite, bucket, configuration, task); 95 % bootstrap CI if ``ci``;
    ``reference`` says whether the configuration is the full-cache reference.

    The mean is weighted by ``score_weight`` where rows carry weights other than 1 (see ``_task_scores``)."""
    rows = []
    for key, g in prep.groupby(CELL_KEY + ["task"], sort=True):
        s, w = _task_scores(g)
        row = dict(zip(CELL_KEY + ["task"], key))
        row.update(score=_weighted_mean(s, w), n=int(len(s)), reference=bool(g["reference"].iloc[0]))
        if ci:
            lo = hi = math.nan
            if len(s):
                m = _bootstrap_task_means(s, np.random.default_rng(seed), resamples, w)
                lo, hi = (float(x) for x in np.percentile(m, [2.5, 97.5]))
            row.update(ci_lo=lo, ci_hi=hi)
        rows.append(row)
    cols = CELL_KEY + ["task", "score", "n"] + (["ci_lo", "ci_hi"] if ci else []) + ["reference"]
    return pd.DataFrame(rows, columns=cols)


def expected_tasks(prep: pd.DataFrame) -> dict[tuple, list[str]]:
    """Per table (model, suite, bucket): the sorted union of tasks any variant has there."""
    return {k: sorted(g["task"].unique()) for k, g in prep.groupby(TABLE_KEY, sort=True)}


def headline_cells(prep: pd.DataFrame, ci: bool = False, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """The suite headline per (model, suite, bucket, configuration) (CELL_KEY).

    Columns: score, n (samples summed over tasks), n_tasks, n_tasks_expected, missing (comma-separated task
    names), complete, n_signature (task:n pairs; equal signatures = same sample counts), official (whether the
    suite's own headline function was used), and ci_lo/ci_hi with ``ci`` (tasks resampled independently,
    samples with replacement within each task, fixed seed), reference.
    """
    tc = task_cells(prep)
    rules = {suite: headline_fn(suite) for suite in sorted(tc["suite"].unique())}  # one warning per unknown suite
    exp = expected_tasks(prep)
    by_task = {k: g for k, g in prep.groupby(CELL_KEY + ["task"], sort=True)} if ci else {}
    rows = []
    for key, g in tc.groupby(CELL_KEY, sort=True):
        g = g[g["n"] > 0]
        tkey = key[:3]
        fn, official = rules[key[1]]
        scores = dict(zip(g["task"], g["score"]))
        counts = {t: int(n) for t, n in zip(g["task"], g["n"])}
        expected = exp[tkey]
        missing = [t for t in expected if t not in scores]
        row = dict(zip(CELL_KEY, key))
        row.update(
            score=float(fn(scores, counts)) if scores else math.nan,
            n=int(g["n"].sum()),
            n_tasks=len(scores),
            n_tasks_expected=len(expected),
            missing=",".join(missing),
            complete=not missing,
            n_signature=",".join(f"{t}:{n}" for t, n in zip(g["task"], g["n"])),
            official=official,
            reference=bool(g["reference"].iloc[0]) if len(g) else False,
        )
        if ci:
            rng = np.random.default_rng(seed)
            boots = {}
            for t in sorted(scores):
                s, w = _task_scores(by_task[key + (t,)])
                boots[t] = _bootstrap_task_means(s, rng, resamples, w)
            vals = np.array([fn({t: float(boots[t][b]) for t in boots}, counts) for b in range(resamples)]) \
                if boots else np.array([math.nan])
            lo, hi = (float(x) for x in np.percentile(vals, [2.5, 97.5]))
            row.update(ci_lo=lo, ci_hi=hi)
        rows.append(row)
    cols = CELL_KEY + ["score", "n", "n_tasks", "n_tasks_expected", "missing", "complete", "n_signature",
                       "official"] + (["ci_lo", "ci_hi"] if ci else []) + ["reference"]
    return pd.DataFrame(rows, columns=cols)


def summary(df: pd.DataFrame, ci: bool = False) -> pd.DataFrame:
    """One row per (model, suite, length_bucket, method variant, r): headline score, n samples, completeness.

    ``df`` is what ``load_results`` returns. ``length_bucket`` is <NA> where the rows had none.
    """
    return as_summary(headline_cells(prepare(df), ci=ci))


def as_summary(hc: pd.DataFrame) -> pd.DataFrame:
    """``headline_cells`` as ``summary`` shows them (``variant`` named ``method``, null buckets <NA>)."""
    out = hc.rename(columns={"variant": "method"})
    out["length_bucket"] = out["length_bucket"].astype("Int64").mask(out["length_bucket"] == NO_BUCKET)
    return out


def format_summary(summ: pd.DataFrame) -> str:
    """The summary as one compact text block: per (model, suite, bucket) a method x r grid of "score (n)"."""
    lines = []
    for key, g in summ.groupby(["model", "suite", "length_bucket"], sort=True, dropna=False):
        lb = "" if pd.isna(key[2]) else f" {bucket_label(key[1], int(key[2]), [])}"
        lines.append(f"{key[0]} | {key[1]}{lb}")
        rs = sorted(g.loc[~g["reference"], "r"].unique()) or [0.0]
        lines.append("  " + f"{'method':<28}" + "".join(f"{'r=' + fmt_r(r):>16}" for r in rs))
        for m in order_variants(g, "method"):
            gm = g[g["method"] == m]
            cells = []
            for r in rs:
                c = gm if gm["reference"].any() else gm[gm["r"] == r]
                if c.empty:
                    cells.append(f"{'-':>16}")
                else:
                    c = c.iloc[0]
                    txt = f"{c['score']:.2f}{'' if c['complete'] else '*'} ({c['n']})"
                    cells.append(f"{txt:>16}")
            lines.append("  " + f"{m:<28}" + "".join(cells))
    if (~summ["complete"]).any():
        lines.append("* incomplete: some sub-tasks of the table are missing from this cell")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- cost
def cost_cells(prep: pd.DataFrame) -> pd.DataFrame:
    """Cost per (model, device, suite, bucket, configuration): means of prefill_s, scoring_s, kv bytes, kept
    fraction, context tokens, decode batch size, peak memory; scoring share = mean scoring_s / mean prefill_s;
    ``decode_share_ms_per_token`` = sum decode_s / sum n_generated_tokens x 1000 (token-weighted, so samples that
    generated nothing do not divide by zero). ``decode_s`` is a row's share of its decode batch (the batch's
    seconds / its size, docs/protocol.md "Result rows"), and ``peak_mem_bytes`` the larger of the shared prefill's
    and the batch's peaks: batch figures, not one configuration's own cost (scripts/bench_methods.py measures
    that)."""
    p = prep.copy()
    if "device" not in p:
        p["device"] = ""
    p["device"] = p["device"].astype(object).where(p["device"].notna(), "").astype(str)
    key = ["model", "device", "suite", "length_bucket", "variant", "r", "config_id"]

    def col(g, c):
        return pd.to_numeric(g[c], errors="coerce") if c in g else pd.Series(np.nan, index=g.index)

    rows = []
    for k, g in p.groupby(key, sort=True):
        pre, sco = col(g, "prefill_s"), col(g, "scoring_s")
        dec, ntok = col(g, "decode_s"), col(g, "n_generated_tokens")
        ok = dec.notna() & ntok.notna()
        tok = float(ntok[ok].sum())
        rows.append(dict(zip(key, k)) | dict(
            n=int(len(g)),
            prefill_s=float(pre.mean()),
            scoring_s=float(sco.mean()),
            scoring_share=float(sco.mean() / pre.mean()) if pre.mean() > 0 else math.nan,
            decode_share_ms_per_token=float(dec[ok].sum() / tok * 1000) if tok > 0 else math.nan,
            decode_batch_size=float(col(g, "decode_batch_size").mean()),
            n_context_tokens=float(col(g, "n_context_tokens").mean()),
            kv_bytes_kept=float(col(g, "kv_bytes_kept").mean()),
            kv_bytes_full=float(col(g, "kv_bytes_full").mean()),
            kept_fraction=float(col(g, "kept_fraction").mean()),
            peak_mem_bytes=float(col(g, "peak_mem_bytes").mean()),
            reference=bool(g["reference"].iloc[0]),
        ))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- labels
def fmt_r(r: float) -> str:
    if r == FIXED_BUDGET:
        return "fixed B"
    return f"{r:.2f}" if round(r, 2) == r else f"{r:g}"


def bucket_label(suite: str, bucket: int, all_buckets: list[int]) -> str:
    """"4k" for 4096, or the name the suite gives its bucket (``Task.bucket_names``: LongBench-E's "0-4k",
    "4-8k", "8k+"), the same in the CLI summary, the tables and the figures whichever buckets a run holds.
    ``all_buckets`` is kept for callers; labels no longer depend on it."""
    if bucket == NO_BUCKET:
        return "all"
    named = suite_bucket_names(suite)
    if bucket in named:
        return named[bucket]
    for unit in (1024, 1000):
        if bucket and bucket % unit == 0:
            return f"{bucket // unit}k"
    return str(bucket)


def suite_bucket_names(suite: str) -> dict[int, str]:
    """The suite's ``bucket_names`` from the task registry (``tasks.bucket_names``, read from its class); {} when
    it has none or the registry does not know the suite (labels only: "4k")."""
    try:
        return bucket_names(suite)
    except KeyError:
        return {}


LB_TASK_ORDER = [  # LongBench's category order (single-doc QA, multi-doc QA, summarisation, few-shot, synthetic, code)
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique", "dureader",
    "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht", "passage_count",
    "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p",
]


def task_order(suite: str, tasks: list[str]) -> list[str]:
    """LongBench tasks in the paper's category order, everything else alphabetical."""
    known = [t for t in LB_TASK_ORDER if t in tasks] if suite in ("longbench", "longbench_e") else []
    return known + sorted(t for t in tasks if t not in known)


def order_variants(frame: pd.DataFrame, col: str = "variant") -> list[str]:
    """The labels in ``frame[col]``: the reference's first (its ``reference`` column), then alphabetical."""
    refs = reference_labels(frame, col)
    return refs + [v for v in sorted(set(frame[col])) if v not in refs]


def reference_labels(frame: pd.DataFrame, col: str = "variant") -> list[str]:
    """The labels of the reference's rows in ``frame`` (sorted)."""
    return sorted(set(frame.loc[frame["reference"].astype(bool), col]))


def public(cells: pd.DataFrame) -> pd.DataFrame:
    """A cell frame without ``INTERNAL_COLUMNS`` (the long CSVs the tables publish)."""
    return cells.drop(columns=[c for c in INTERNAL_COLUMNS if c in cells])


def modal(values: Iterable) -> object:
    """Most common value (ties: the smallest string form), None for no values."""
    c = Counter(values)
    if not c:
        return None
    top = max(c.values())
    return sorted((v for v, n in c.items() if n == top), key=str)[0]


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(text)).strip("-") or "x"
