"""Result rows as every table reads them: one reader, one de-duplication rule, the configuration identity and the
reference rule (docs/results.md, "How the tables read rows").

- Configuration (``config_id``): the row's ``config_json``, which the engine writes and hashes into ``run_id``
  (``harness.sweep.Cell.bind``), without the sub-task selection ``task_params.tasks`` (rows carry their task, so
  runs of one configuration on different sub-tasks fill one table cell) and, for the reference, without
  ``REFERENCE_IGNORES`` (the full cache is one configuration whatever the ratio or budget a sweep gave it).
  Rows without a ``config_json`` (hand-made rows; the engine has always written it) are identified by their
  ``run_id`` and ``IDENTITY_COLUMNS``: never merged unless their producer gave them one ``run_id``.
- Reference (``reference``): the row's method class does not compress (``methods.compresses``: the class
  attribute ``Method.compresses`` that the engine reads on the method it runs). The class is ``config_json``'s
  ``method_class``, else ``method_params``' ``"class"``, else the method label; a class the registry does not
  know (a method since removed) counts as compressing.
- De-duplication: one row per (``config_id``, ``sample_id``), the last written: newest ``created_at``, ties
  broken by file (name order) then row order. The engine writes one row per (``run_id``, ``sample_id``) and resume
  never writes a pair twice (harness/results.py), but a killed merge, a rerun under another sub-task selection or
  the reference repeated per ratio by older versions can repeat a (configuration, sample): those rows measure
  the same thing and the newest stands for them. Equal ``run_id`` means equal ``config_json``, so this rule
  includes the engine's own (``run_id``, ``sample_id``).

``load_results`` reads and applies the rule; every table, figure and script trusts its output.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.results import ResultsError, read_files

R_DECIMALS = 6  # r values are rounded to this many decimals before grouping (float noise from configs)
DEDUP_KEY = ("config_id", "sample_id")
REFERENCE_IGNORES = frozenset({"r", "budget_tokens", "budget_policy", "safeguard", "query_aware"})
IDENTITY_COLUMNS = ("run_id", "model", "model_source", "dtype", "attn_impl", "suite", "method", "method_params", "r",
                    "budget_tokens", "budget_policy", "query_aware")
SORT_COLUMNS = ("model", "suite", "task", "length_bucket", "method", "r", "sample_id", "run_id")


# --------------------------------------------------------------------------------------------- reading
def load_results(path_or_paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """All result rows under the folder(s), one per (configuration, sample) (``unique_rows``), with the columns
    ``config_id`` and ``reference`` added.

    Raises ``ResultsError`` when there is no result file, or naming the first file that cannot be read.
    """
    frames = read_files(path_or_paths, must_exist=True)
    if not frames:
        where = path_or_paths if isinstance(path_or_paths, (str, Path)) else ", ".join(map(str, path_or_paths))
        raise ResultsError(
            f"no result files (*.parquet) under {where}. Run a sweep first (python -m harness ...) and point "
            "this at its output folder."
        )
    n_files = len(frames)
    frames = [frame.assign(_file_order=i) for i, frame in enumerate(frames)]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ResultsError(f"the {n_files} result file(s) found under {path_or_paths} hold no rows")
    return unique_rows(pd.concat(frames, ignore_index=True, sort=False))


def unique_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The one de-duplication rule (module docstring): adds ``reference`` and ``config_id``, keeps the last
    written row of each (``config_id``, ``sample_id``), rounds ``r`` to ``R_DECIMALS``, sorts by
    ``SORT_COLUMNS``. ``_file_order`` (set by ``load_results``) breaks ties of ``created_at`` before row order."""
    if "sample_id" not in df:
        raise ResultsError("result rows lack the column sample_id; are these harness result files?")
    df = df.reset_index(drop=True)
    if "r" in df:
        df["r"] = pd.to_numeric(df["r"], errors="coerce").astype(float).round(R_DECIMALS)
    df["reference"] = reference(df)
    df["config_id"] = config_ids(df)
    order = df.assign(_ts=_created_ts(df), _file_order=df["_file_order"] if "_file_order" in df else 0)
    order = order.sort_values(["_ts", "_file_order"], kind="stable", na_position="first")
    df = df.loc[order.index].drop_duplicates(subset=list(DEDUP_KEY), keep="last")
    sort_cols = [c for c in SORT_COLUMNS if c in df.columns]
    df = df.sort_values(sort_cols, kind="stable", na_position="first")
    return df.drop(columns=["_file_order"], errors="ignore").reset_index(drop=True)


def _created_ts(df: pd.DataFrame) -> pd.Series:
    if "created_at" not in df:
        return pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
    col = df["created_at"]
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_datetime(col, unit="s", utc=True, errors="coerce")
    return pd.to_datetime(col, utc=True, errors="coerce", format="mixed")


# --------------------------------------------------------------------------------------------- reference
def parse_config(text) -> dict:
    """A config_json (or method_params) text as a dict ({} when it is missing or not a JSON object)."""
    try:
        d = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def method_class(config_json, method_params, label) -> str:
    """The method class of a row: ``config_json``'s ``method_class``, else ``method_params``' ``"class"``, else
    the label."""
    cls = parse_config(config_json).get("method_class") or parse_config(method_params).get("class")
    return str(cls) if cls else str(label)


def is_reference_class(name: str) -> bool:
    """The reference rule: the registered class ``name`` does not compress (``methods.compresses``). A class the
    registry does not know counts as compressing."""
    from methods import compresses  # the method registry; imports torch

    try:
        return not compresses(name)
    except KeyError:
        return False


def reference(df: pd.DataFrame) -> pd.Series:
    """Per row, whether it is the full-cache reference (``is_reference_class`` of its ``method_class``)."""
    cols = [df[c] if c in df else pd.Series(None, index=df.index, dtype=object)
            for c in ("config_json", "method_params", "method")]
    classes = [method_class(*x) for x in zip(*cols)]
    known = {c: is_reference_class(c) for c in set(classes)}
    return pd.Series([known[c] for c in classes], index=df.index, dtype=bool)


# --------------------------------------------------------------------------------------------- identity
def _plain(v):
    """A column value as JSON-ready Python (NaN -> None, numpy scalars -> Python)."""
    if _missing(v) or v is pd.NA:
        return None
    return v.item() if hasattr(v, "item") else v


def _from_columns(values: dict) -> dict:
    """The identity of a row without a config_json: its ``IDENTITY_COLUMNS``."""
    out = {k: _plain(v) for k, v in values.items()}
    if "method_params" in out:
        out["method_params"] = parse_config(out["method_params"]) if isinstance(out["method_params"], str) else \
            out["method_params"]
    if out.get("r") is not None:
        out["r"] = round(float(out["r"]), R_DECIMALS)
    if out.get("budget_tokens") is not None:
        out["budget_tokens"] = int(out["budget_tokens"])
    if "query_aware" in out:
        out["query_aware"] = bool(out["query_aware"])
    return out


def identity(config_json, columns: dict, is_reference: bool) -> dict:
    """A row's configuration (module docstring): its config_json (or ``columns`` where it has none), without
    ``task_params.tasks``, and without ``REFERENCE_IGNORES`` for the reference."""
    cfg = parse_config(config_json)
    out = dict(cfg) if cfg else _from_columns(columns)
    if isinstance(out.get("task_params"), dict):
        out["task_params"] = {k: v for k, v in out["task_params"].items() if k != "tasks"}
    if is_reference:
        out = {k: v for k, v in out.items() if k not in REFERENCE_IGNORES}
    return out


def identity_text(ident: dict) -> str:
    return json.dumps(ident, sort_keys=True, default=str)


def identities(df: pd.DataFrame) -> pd.Series:
    """Per row, its configuration (``identity``) as canonical JSON text. Needs the ``reference`` column."""
    cj = df["config_json"] if "config_json" in df else pd.Series(None, index=df.index, dtype=object)
    cols = [c for c in IDENTITY_COLUMNS if c in df]
    cache: dict[tuple, str] = {}
    out = []
    for cfg, ref, *vals in zip(cj, df["reference"], *(df[c] for c in cols)):
        key = (cfg if isinstance(cfg, str) else None, bool(ref),
               *(None if _missing(v) else str(v) for v in vals))
        if key not in cache:
            cache[key] = identity_text(identity(cfg, dict(zip(cols, vals)), bool(ref)))
        out.append(cache[key])
    return pd.Series(out, index=df.index, dtype=object)


def config_ids(df: pd.DataFrame) -> pd.Series:
    """Per row, a short hash of its configuration (``identities``)."""
    text = identities(df)
    ids = {t: hashlib.sha1(t.encode()).hexdigest()[:16] for t in text.unique()}
    return text.map(ids)
