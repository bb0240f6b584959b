"""Official prompt files of the suites (json/txt next to this module) and local-data helpers.

The json files are the official configuration files, stored verbatim (values unchanged):

- ``longbench_dataset2prompt.json`` / ``longbench_dataset2maxlen.json``: THUDM/LongBench
  ``LongBench/config/dataset2prompt.json`` and ``dataset2maxlen.json`` (the 21 LongBench v1 tasks).
  narrativeqa keeps the official typo "asconcisely" (twice): it is in the ``LongBench/config`` copies and
  the first release; one intermediate revision of the root ``config/`` spells "as concisely".
- ``loogle_task2prompt.json`` / ``loogle_task2maxlen.json``: bigai-nlco/LooGLE ``config/``.
- ``mmlu_pro_initial_prompt.txt``: TIGER-AI-Lab/MMLU-Pro ``cot_prompt_lib/initial_prompt.txt``, the version of
  2024-05-23 (current), with its three trailing newlines (the official script reads them too).

The helpers read the local layouts the loaders accept (jsonl, json, parquet, files inside a zip), give the
fixed-seed sample order (sample ``i`` does not depend on ``n_samples``) and a stable context id.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import random
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load_json(name: str) -> Any:
    with open(HERE / name, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=None)
def load_text(name: str) -> str:
    with open(HERE / name, encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------------------------- reading
def _plain(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> plain Python lists / scalars (recursively)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _read_jsonl_stream(stream: Iterable[str], source: str) -> list[dict]:
    rows = []
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: line {n} is not valid JSON ({e})") from e
    return rows


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All rows of one local file: ``.jsonl``, ``.json`` or ``.parquet``.

    A ``.json`` file is one JSON document (a list of objects, ``{"data": [...]}`` or one object) or, when it
    holds several documents, JSON lines: the hub's ``data.zip`` of ``bigainlco/LooGLE`` names its JSON-lines
    files ``<config>.json``. Unreadable JSON raises ``ValueError`` naming the file and line.
    """
    path = str(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [_plain(r) for r in pq.read_table(path).to_pylist()]
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            text = f.read()
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                if e.msg != "Extra data":  # not several documents: the file itself is broken
                    raise ValueError(f"{path}: line {e.lineno} is not valid JSON ({e})") from e
                return _read_jsonl_stream(text.split("\n"), path)  # not splitlines: U+2028 may sit in a string
            if isinstance(data, dict):  # {"data": [...]} or a single split
                data = data.get("data", data.get("test", [data]))
            return [dict(r) for r in data]
        return _read_jsonl_stream(f, path)


def read_many(paths: list[str]) -> list[dict]:
    """Rows of several shard files, in sorted file order (``test-00000-of-00002`` before ``-00001``)."""
    rows: list[dict] = []
    for p in sorted(paths):
        rows.extend(read_rows(p))
    return rows


def read_zip_member(zip_path: str | os.PathLike, member_names: list[str]) -> list[dict] | None:
    """Rows of the first of ``member_names`` found inside a zip (e.g. LongBench's ``data.zip``)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = set(z.namelist())
            for m in member_names:
                if m in names:
                    with z.open(m) as f:
                        return _read_jsonl_stream(io.TextIOWrapper(f, encoding="utf-8"), f"{zip_path}:{m}")
    except (OSError, zipfile.BadZipFile):
        return None
    return None


def read_saved(folder: str | os.PathLike, split: str = "test", config: str | None = None) -> list[dict] | None:
    """Rows of ``split`` from a ``datasets`` ``save_to_disk`` folder, or None when ``folder`` is not one.

    A ``Dataset`` folder (``state.json``, ``dataset_info.json``, ``data-*.arrow``) is read as it is; a ``DatasetDict``
    folder (``dataset_dict.json``) gives its ``split``. With ``config``, only a copy whose ``dataset_info.json`` names
    that config is read (a saved copy does not otherwise say which config it holds).
    """
    base = Path(folder)
    if (base / "dataset_dict.json").is_file():
        if not (base / split / "state.json").is_file():
            return None
        base = base / split
    elif not (base / "state.json").is_file():
        return None
    if config is not None:
        try:
            saved_config = json.loads((base / "dataset_info.json").read_text(encoding="utf-8")).get("config_name")
        except (OSError, ValueError):
            return None
        if str(saved_config) != config:
            return None
    import datasets

    return [_plain(r) for r in datasets.load_from_disk(str(base))]


def find_local(data_dir: str | os.PathLike, name: str, subdirs: tuple[str, ...] = ("", "data")) -> list[str]:
    """Files holding split/config ``name`` under ``data_dir``, first layout that matches wins:

    ``<dir>[/<sub>]/<name>.jsonl``, ``.json``, ``.parquet``, or a folder ``<dir>[/<sub>]/<name>/`` with
    ``*.parquet`` / ``*.jsonl`` shards anywhere below it (the hub's ``<config>/test-00000-of-00001.parquet``).
    """
    base = Path(data_dir)
    for sub in subdirs:
        d = base / sub if sub else base
        for ext in (".jsonl", ".json", ".parquet"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return [str(p)]
        folder = d / name
        if folder.is_dir():
            for ext in ("parquet", "jsonl"):
                shards = glob.glob(str(folder / "**" / f"*.{ext}"), recursive=True)
                test = [s for s in shards if os.path.basename(s).startswith("test")]
                if test or shards:
                    return sorted(test or shards)
    return []


def hub_rows(repo: str, config: str | None, split: str = "test", **kwargs: Any) -> list[dict]:
    """Rows of a hub dataset through ``tasks.hub.hub_dataset`` (``kwargs``: more ``load_dataset`` arguments): the
    hub when reachable, else the local Hugging Face cache, else ``tasks.hub.HubUnavailable`` at once. Raises on any
    failure."""
    from tasks.hub import hub_dataset

    return [_plain(r) for r in hub_dataset(repo, config, split=split, **kwargs)]


# ------------------------------------------------------------------------------------------- sampling
def seeded_order(n: int, seed: int, key: str = "") -> list[int]:
    """A permutation of ``range(n)`` fixed by ``(seed, key)``; take a prefix to subsample.

    Taking the first ``k`` indices keeps sample ``i`` the same whatever ``k`` is, so raising ``n_samples``
    only adds samples (resume). ``key`` (the sub-task name) makes sub-tasks use independent orders.
    """
    order = list(range(n))
    random.Random(f"{seed}/{key}").shuffle(order)
    return order


def take(order: list[int], n_samples: int | None) -> list[int]:
    return order if n_samples is None else order[: max(0, int(n_samples))]


def context_id(task: str, context: str) -> str:
    """Equal contexts within a task share an id (prefilled and compressed once)."""
    return f"{task}/ctx-{hashlib.sha1(context.encode('utf-8')).hexdigest()[:16]}"


def split_template(template: str, slot: str, **fields: str) -> tuple[str, str]:
    """Split an official ``str.format`` template at ``{slot}`` into (text before, text after).

    Both halves are rendered with ``fields`` (so ``{{``/``}}`` escapes come out as single braces, as with
    the official ``template.format(...)``); the slot's own text is not inserted.
    """
    marker = "{" + slot + "}"
    if marker not in template:
        raise ValueError(f"template has no {marker}: {template!r}")
    head, tail = template.split(marker, 1)
    return head.format(**fields), tail.format(**fields)
