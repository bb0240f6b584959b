"""LooGLE (bigai-nlco, arXiv 2311.04939): ``loogle``. Reference: docs/tasks/loogle.md.

Configs (sub-tasks): shortdep_qa, longdep_qa, shortdep_cloze, longdep_summarization. Many questions are
asked about one document: their records share the ``context_id`` (prefilled and compressed once).

Data, first source that can be read (``check_data`` reads it before any model loads; every record carries
``extra["data_source"]``, written to the ``data_source`` column of its rows):

- ``data_dir``: ``<data_dir>[/LooGLE-testdata|/data]/<config>.jsonl`` or ``.json`` in the official layout,
  one row per document: ``input`` (document), ``title``, ``qa_pairs`` (list of {Q, A, S, type}, or its
  Python/JSON string; ``"none"`` for summarization, whose reference is ``output``). The GitHub repository's
  ``LooGLE-testdata/`` holds 5-document samples; the full test set is the hub's ``data.zip``, whose
  ``<config>.json`` files (JSON lines) are read from ``<data_dir>/data.zip`` or unpacked;
- ``data_dir`` with one row per question (kvpress's processed copy ``simonjegou/loogle``, or parquet of
  ``bigainlco/LooGLE``): ``<data_dir>/<config>/test-*.parquet``, ``<data_dir>/<config>.parquet``; columns
  ``context``, ``question``, ``answer``. kvpress's rows already carry its prompt pieces; they are recognised
  and stripped, so every source renders the same official prompt;
- ``data_dir: null``: the hub ids in ``hub`` through ``datasets`` (cache or hub when reachable).
  ``longdep_summarization`` is also looked up under the hub's name ``summarization``.

Prompt: official ``config/task2prompt.json`` split at ``{input}`` (the document): text up to and including
the document is the ``context``, the rest (question and "Answer:") the ``question``; context + question is
the official ``prompt_format.format(Q=..., input=...)`` string. Max new tokens from ``config/task2maxlen.json``:
300 / 500 / 50 / 500. (The official open-model script also used ``repetition_penalty=2`` and no chat
template; the harness decodes greedily without the penalty.)

Metrics (official ``Evaluation/automatic_metrics.py``): BLEU-1, BLEU-4 (nltk, weights (1,0,0,0) and
(0,0,0,1), no smoothing), ROUGE-1/2/L recall (``rouge`` package, ``metric="r"``), METEOR (only when NLTK's
WordNet is installed locally, never downloaded), BERTScore (only with ``bertscore: true``, the
``bert_score`` package and a locally cached ``roberta-large``; never downloaded; the official call
``score([reference], [hypothesis])[1]``: the reference as candidate, element 1); cloze exact and partial match,
the model's dict read as the official ``eval`` would read it, without ``eval`` (``parse_cloze``). An empty
prediction is scored as "None", as the official evaluation does.

``score(record, prediction)`` returns the config's *primary* metric x100: ROUGE-L recall for the QA and
summarisation configs, exact match (matches / masks of the question) for cloze; ``primary: {config: metric}``
changes it. Cloze records carry ``score_weight`` = their number of masks, so the tables' task mean
(weighted by ``score_weight``) is the official micro average sum(matches) / sum(masks) (``cloze_micro``
computes it from ``metrics`` outputs). ``metrics(record, prediction)`` returns every metric (None where it
did not run) and ``metric_status()`` says which ran. Headline: unweighted mean of the configs' primary scores.
"""

from __future__ import annotations

import ast
import json
import operator
import os
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from tasks.records import Record
from tasks import register
from tasks import metrics_text as M
from tasks.base import DataMissing, Task, TaskData
from tasks.data import (
    context_id, find_local, hub_rows, load_json, read_many, read_zip_member, seeded_order, split_template,
)

CONFIGS = ["shortdep_qa", "longdep_qa", "shortdep_cloze", "longdep_summarization"]
LOCAL_SUBDIRS = ("", "LooGLE-testdata", "data")
SAMPLE_DOCS = 5  # documents per config in the GitHub repository's LooGLE-testdata/ (the hub has them all)
HUB_IDS = ["simonjegou/loogle", "bigainlco/LooGLE"]
HUB_NAMES = {"longdep_summarization": ["longdep_summarization", "summarization"]}
DEFAULT_PRIMARY = {
    "shortdep_qa": "rouge_l", "longdep_qa": "rouge_l", "longdep_summarization": "rouge_l",
    "shortdep_cloze": "exact_match",
}
SIM_METRICS = ["bleu1", "bleu4", "rouge1", "rouge2", "rouge_l", "meteor", "bertscore"]
CLOZE_METRICS = ["exact_match", "partial_match"]

# kvpress's question pieces (evaluation/benchmarks/loogle/create_huggingface_dataset.py), to recover Q
_KVPRESS_Q = {
    "shortdep_qa": re.compile(r"^\nQuestion: (.*)\n$", re.S),
    "longdep_qa": re.compile(r"^\nQuestion: (.*)\n$", re.S),
    "shortdep_cloze": re.compile(r"^\n Question: (.*) What are the masked entities\?\n$", re.S),
}


# ------------------------------------------------------------------------------------------ cloze parsing
_MAX_SIZE = 100_000  # longest answer text, and longest str / bytes / list an answer may build
_MAX_BITS = 100_000  # largest integer (in bits) constant arithmetic may build
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Invert: operator.invert, ast.Not: operator.not_,
}
_SEQ = (str, bytes, list, tuple)


class _NoData(Exception):
    """No file or hub copy of a config (the message says where it was looked for)."""


class _Unsupported(Exception):
    """The expression needs names, calls or other code: outside what is evaluated here (see parse_cloze)."""


def _sized(v: Any) -> Any:
    if isinstance(v, _SEQ) and len(v) > _MAX_SIZE or isinstance(v, int) and v.bit_length() > _MAX_BITS:
        raise _Unsupported("too large")
    return v


def _value(node: ast.AST) -> Any:
    """Evaluate literals and constant arithmetic as Python does; TypeError & co. propagate as from ``eval``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Dict):
        out: dict = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**mapping}
                m = _value(v)
                if not isinstance(m, dict):
                    raise TypeError("argument after ** must be a mapping")
                out.update(m)
            else:
                key = _value(k)
                out[key] = _value(v)
        return out
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items: list = []
        for e in node.elts:
            if isinstance(e, ast.Starred):
                items.extend(_sized(list(_value(e.value))))
            else:
                items.append(_value(e))
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](_sized(items))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _sized(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Mult):
            seq, n = (a, b) if isinstance(a, _SEQ) else (b, a)
            if isinstance(seq, _SEQ) and isinstance(n, int) and len(seq) * max(n, 0) > _MAX_SIZE:
                raise _Unsupported("too large")
        if isinstance(node.op, ast.Mod) and isinstance(a, (str, bytes)):
            raise _Unsupported("%-formatting")  # a width can build any size: not followed (see parse_cloze)
        if isinstance(node.op, ast.Pow) and isinstance(a, int) and isinstance(b, int) and b > 0:
            if max(a.bit_length(), 1) * b > _MAX_BITS:
                raise _Unsupported("too large")
        return _sized(_BINOPS[type(node.op)](a, b))
    if isinstance(node, ast.JoinedStr):  # f-string of constants
        parts: list[str] = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))  # the literal parts of an f-string are str
                continue
            assert isinstance(v, ast.FormattedValue)  # an f-string holds literal parts and replacement fields
            x = _value(v.value)
            conversions: dict[int, Callable[[Any], Any]] = {115: str, 114: repr, 97: ascii}  # !s !r !a
            x = conversions.get(v.conversion, lambda y: y)(x)
            spec = _value(v.format_spec) if v.format_spec is not None else ""
            if any(int(d) > _MAX_SIZE for d in re.findall(r"\d+", spec)):
                raise _Unsupported("too large")
            parts.append(format(x, spec))
        return _sized("".join(parts))
    raise _Unsupported(type(node).__name__)


def parse_cloze(prediction: Any) -> dict | None:
    """The dict the official scorer's ``eval(prediction)`` gives, or None where it fails; never runs ``eval``.

    The official ``get_exact_match`` / ``get_partial_match`` score 0 of all masks unless ``eval`` of the
    whole answer returns a dict. This follows ``eval`` on what an answer can hold without running code:
    Python literals (as ``ast.literal_eval``: ``None``/``True``/``False``, quotes of any kind, adjacent
    strings joined, trailing commas and comments; leading spaces and tabs skipped as ``eval`` does, any other
    leading whitespace as Python's parser treats it) plus what ``eval`` adds on constants: arithmetic and
    ``+``/``*`` on strings and lists, ``{**d}`` and ``[*xs]`` unpacking, f-strings. JSON's ``null``, ``true``,
    ``false``, ``NaN`` are names to ``eval`` (NameError): such an answer fails as a whole, as officially.

    Residual difference (answers the official ``eval`` accepts and this rejects, scored 0 here): answers
    using names or calls (builtins such as ``dict(a='x')`` or ``str(1)``, and the scorer's own variables
    ``reference``, ``hypothesis``, ``question``, ``task``, ``count``, ``np``, ``json`` that its ``eval`` sees),
    subscripts, comparisons, conditionals, comprehensions, ``%``-formatting of strings, and constants over
    100,000 characters or bits. None of these is an answer a model writes for a cloze.
    """
    if isinstance(prediction, dict):
        return prediction
    if not isinstance(prediction, str) or len(prediction) > _MAX_SIZE:
        return None
    try:
        tree = ast.parse(prediction.lstrip(" \t"), mode="eval")  # eval skips leading spaces and tabs
        value = _value(tree.body)
    except Exception:  # noqa: BLE001 - SyntaxError, NameError-like _Unsupported, TypeError, RecursionError...
        return None
    return value if isinstance(value, dict) else None


def read_cloze_answer(answer: Any) -> dict | None:
    """A cloze reference: a dict (official ``qa_pairs``), a list of values (mask ``i`` is ``<mask-i>``, the
    hub's exploded rows), or a JSON / Python-literal string of either (kvpress's ``json.dumps``)."""
    if isinstance(answer, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                answer = parse(answer)
                break
            except Exception:  # noqa: BLE001 - ValueError, SyntaxError, RecursionError...
                continue
        else:
            return None
    if isinstance(answer, (list, tuple)):
        answer = {f"<mask-{i}>": v for i, v in enumerate(answer)}
    return {str(k): v for k, v in answer.items()} if isinstance(answer, dict) else None


def cloze_counts(reference: dict, prediction: str) -> tuple[int, int, int]:
    """(exact matches, partial matches, masks) as LooGLE's get_exact_match / get_partial_match.

    Exact: the predicted value equals the reference value. Partial: the two share at least one
    whitespace token. An answer ``parse_cloze`` cannot read scores 0 of ``len(reference)``. A predicted value
    that is not a string is never a partial match (the official ``.split()`` raises on it and stops the
    whole evaluation).
    """
    n = len(reference)
    hyp = parse_cloze(prediction)
    if hyp is None:
        return 0, 0, n
    exact = partial = 0
    for key, ref_value in reference.items():
        if key not in hyp:
            continue
        value = hyp[key]
        if value == ref_value:
            exact += 1
        if isinstance(value, str) and isinstance(ref_value, str):
            if set(ref_value.split()) & set(value.split()):
                partial += 1
    return exact, partial, n


def cloze_micro(metric_dicts: list[dict]) -> dict[str, float]:
    """Official cloze aggregation: sum of matches / sum of masks, over ``metrics()`` outputs (x100).

    The tables compute the same number from the rows: ``score`` (matches / masks of one question) averaged
    with weight ``score_weight`` (its masks), see harness/report.py."""
    masks = sum(d["n_masks"] for d in metric_dicts)
    if not masks:
        return {"exact_match": 0.0, "partial_match": 0.0}
    return {
        "exact_match": 100.0 * sum(d["exact_count"] for d in metric_dicts) / masks,
        "partial_match": 100.0 * sum(d["partial_count"] for d in metric_dicts) / masks,
    }


def _parse_qa_pairs(value: Any) -> list[dict] | None:
    """``qa_pairs`` of the official jsonl: a list, or its JSON / Python-literal string; "none" -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("", "none"):
            return None
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except Exception:  # noqa: BLE001
                continue
        else:
            raise ValueError(f"cannot parse qa_pairs: {value[:80]!r}")
    return [dict(p) for p in value]


def _describe_source(where: str, rows: list[dict], questions: list[tuple]) -> str:
    """``data_source`` of a config: where, which layout, how many documents and questions. Official-layout files
    of at most 5 documents (the size of the GitHub ``LooGLE-testdata`` samples) are named a sample."""
    official = any("qa_pairs" in r or "input" in r for r in rows)
    n_docs = len({q[0] for q in questions})
    text = f"{where} ({'official' if official else 'one row per question'} layout, {n_docs} documents, " \
           f"{len(questions)} questions)"
    if official and n_docs <= SAMPLE_DOCS:
        text += " [a sample, like the GitHub LooGLE-testdata files (5 documents each), not the full test set]"
    return text


# ------------------------------------------------------------------------------------------ BERTScore
@lru_cache(maxsize=1)
def _bert_scorer():
    """A BERTScore scorer from local files only, or the reason it cannot run."""
    try:
        import bert_score  # noqa: F401
    except ImportError:
        return None, "bert_score package not installed"
    try:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache("roberta-large", "config.json"), str):
            return None, "roberta-large not in the local Hugging Face cache"
        os.environ["HF_HUB_OFFLINE"] = "1"
        from bert_score import BERTScorer

        return BERTScorer(lang="en"), ""
    except Exception as e:  # noqa: BLE001
        return None, f"BERTScore failed to load offline: {type(e).__name__}: {e}"


@register("loogle")
class LooGLE(Task):
    """Params: ``data_dir`` (null: hub), ``hub`` (list of hub ids, null disables), ``tasks`` (configs),
    ``primary`` ({config: metric} overrides), ``bertscore`` (false)."""

    suite = "loogle"

    def __init__(self, **params: Any):
        super().__init__(**params)
        tasks = params.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        tasks = ["longdep_summarization" if t == "summarization" else t for t in (tasks or CONFIGS)]
        unknown = [t for t in tasks if t not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown loogle config(s) {unknown}; valid: {', '.join(CONFIGS)}")
        self.tasks = tasks
        self.primary = dict(DEFAULT_PRIMARY)
        for cfg, metric in dict(params.get("primary") or {}).items():
            valid = CLOZE_METRICS if cfg == "shortdep_cloze" else SIM_METRICS
            if cfg not in CONFIGS or metric not in valid:
                raise ValueError(f"loogle primary {cfg}: {metric} invalid; configs {CONFIGS}, "
                                 f"metrics {SIM_METRICS} (cloze: {CLOZE_METRICS})")
            self.primary[cfg] = metric
        self.use_bertscore = bool(params.get("bertscore", False))
        for cfg in self.tasks:
            if self.primary[cfg] == "meteor" and not M.wordnet_available():
                raise ValueError("loogle primary metric meteor needs NLTK WordNet installed locally")
            if self.primary[cfg] == "bertscore" and not self.use_bertscore:
                raise ValueError("loogle primary metric bertscore needs bertscore: true")

    def metric_name(self, config: str) -> str:
        """``record.metric``: the primary metric of the config ("rouge_l_recall", "exact_match", ...)."""
        m = self.primary[config]
        return f"{m}_recall" if m.startswith("rouge") else m

    # ------------------------------------------------------------------------------------------ data
    def _rows(self, config: str) -> tuple[list[dict], str]:
        """Rows of one config and where they came from (``data_source``); raises _NoData if absent."""
        names = HUB_NAMES.get(config, [config])
        data_dir = self.params.get("data_dir")
        if data_dir:
            data_dir = os.path.expanduser(str(data_dir))
            for name in names:
                files = find_local(data_dir, name, subdirs=LOCAL_SUBDIRS)
                if files:
                    where = ", ".join(os.path.abspath(f) for f in files)
                    try:
                        return read_many(files), where
                    except Exception as e:  # noqa: BLE001 - parquet errors do not name the file
                        raise ValueError(str(e) if any(f in str(e) for f in files) else f"{where}: {e}") from e
            zips = [os.path.join(data_dir, sub, "data.zip") for sub in LOCAL_SUBDIRS]
            for z in filter(os.path.isfile, zips):  # the hub's archive: <config>.json, JSON lines
                for name in names:
                    members = [f"{name}.json", f"data/{name}.json", f"{name}.jsonl", f"data/{name}.jsonl"]
                    rows = read_zip_member(z, members)
                    if rows is not None:
                        return rows, f"{os.path.abspath(z)}:{name}.json"
            raise _NoData(f"no {config}.jsonl / {config}.json / {config}.parquet / {config}/*.parquet / "
                              f"data.zip holding {config}.json under {data_dir}")
        hubs = self.params.get("hub", HUB_IDS)
        if not hubs:
            raise _NoData("no data_dir and hub disabled")
        errors = []
        for hub in [hubs] if isinstance(hubs, str) else list(hubs):
            for name in names:
                if hub in self._hub_down:
                    errors.append(f"{hub}: {self._hub_down[hub]}")
                    break
                try:
                    return hub_rows(hub, name, "test"), f"hub {hub} ({name})"
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{hub}/{name}: {type(e).__name__}")
                    if isinstance(e, OSError) or "Connection" in type(e).__name__:
                        self._hub_down[hub] = type(e).__name__  # unreachable: skip it for other configs
        raise _NoData("hub: " + ", ".join(errors))

    def _missing_message(self, missing: dict[str, str]) -> str:
        """One line: what is missing, the full test set vs the GitHub samples, where to put them."""
        where = self.params.get("data_dir") or "<dir>"
        details = "; ".join(f"{k}: {v}" for k, v in missing.items())
        return " ".join((
            f"loogle: no readable data for {', '.join(missing)}.",
            "The full test set is on the Hugging Face hub: bigainlco/LooGLE (its data.zip holds <config>.json,",
            "JSON lines) or kvpress's processed copy simonjegou/loogle (<config>/test-*.parquet); task.data_dir=null",
            f"reads them from the local hub cache, task.data_dir={where} reads {where}/data.zip,",
            f"{where}/<config>.json(l) or {where}/<config>/test-*.parquet.",
            "The GitHub repository's LooGLE-testdata/<config>.jsonl are 5-document samples (also read from",
            f"task.data_dir={where}), not the test set of published numbers.",
            f"Details: {details}",
        )).replace("\n", " ")

    @staticmethod
    def _questions(config: str, rows: list[dict], template: str) -> list[tuple[str, str, Any, dict]]:
        """(document, Q, answer, extra) for every question, in file order; cloze answers as dicts."""
        head, _ = split_template(template, "input", Q="")
        out: list[tuple[str, str, Any, dict]] = []
        for row in rows:
            if "input" in row or "qa_pairs" in row:  # official, one row per document
                doc = str(row.get("input") or "")
                pairs = _parse_qa_pairs(row.get("qa_pairs"))
                if pairs is None:  # summarization
                    out.append((doc, "", row.get("output"), {"title": row.get("title")}))
                    continue
                for p in pairs:
                    extra = {"title": row.get("title"), "evidence": p.get("S"), "type": p.get("type")}
                    out.append((doc, str(p.get("Q") or ""), p.get("A"), extra))
            else:  # exploded: one row per question
                doc = str(row.get("context") or "")
                if doc.startswith(head):  # kvpress pre-rendered the prompt head
                    doc = doc[len(head):]
                q = str(row.get("question") or "")
                pattern = _KVPRESS_Q.get(config)
                m = pattern.match(q) if pattern else None
                q = m.group(1) if m else q.strip()
                if config == "longdep_summarization":  # the official summary prompt has no question
                    q = ""
                answer = row.get("answer", row.get("answers", row.get("output")))
                extra = {k: row.get(k) for k in ("title", "type", "evidence") if row.get(k) is not None}
                out.append((doc, q, answer, extra))
        if config == "shortdep_cloze":
            for i, (doc, q, answer, extra) in enumerate(out):
                ref = read_cloze_answer(answer)
                if ref is None:
                    raise ValueError(f"cannot read cloze answer {str(answer)[:80]!r}")
                out[i] = (doc, q, ref, extra)
        return out

    def _read_all(self) -> dict[str, tuple[list[tuple[str, str, Any, dict]], str] | str]:
        """Per config: (questions, data_source), or why it cannot be read. Read once per task object."""
        if getattr(self, "_data", None) is None:
            self._hub_down: dict[str, str] = {}
            prompts = load_json("loogle_task2prompt.json")
            data: dict[str, tuple[list, str] | str] = {}
            for config in self.tasks:
                where = ""
                try:
                    rows, where = self._rows(config)
                    questions = self._questions(config, rows, prompts[config])
                except _NoData as e:
                    data[config] = str(e)
                    continue
                except Exception as e:  # noqa: BLE001 - a broken file: named in one line, not a traceback
                    what = f"{type(e).__name__}: {e}"
                    data[config] = f"unreadable{' ' + where if where else ''} ({what[:300]})".replace("\n", " ")
                    continue
                data[config] = (questions, _describe_source(where, rows, questions))
            self._data = data
        return self._data

    def check_data(self) -> None:
        data = self._read_all()
        missing = {k: v for k, v in data.items() if isinstance(v, str)}
        if len(missing) == len(data):
            raise DataMissing(self._missing_message(missing))

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        prompts = load_json("loogle_task2prompt.json")
        maxlen = load_json("loogle_task2maxlen.json")
        records: list[Record] = []
        missing: dict[str, str] = {}
        for config, got in self._read_all().items():
            if isinstance(got, str):
                missing[config] = got
                continue
            questions_all, source = got
            print(f"[kvbench] loogle/{config}: data from {source}", file=sys.stderr)
            template = prompts[config]
            # group questions by document (first-appearance order), shuffle documents with the seed and
            # take questions in that order: context sharing is kept and sample i does not depend on n
            docs: dict[str, list[tuple[str, Any, dict]]] = {}
            for doc, q, answer, extra in questions_all:
                docs.setdefault(doc, []).append((q, answer, extra))
            doc_list = list(docs.items())
            taken = 0
            for d_idx in seeded_order(len(doc_list), seed, config):
                doc, questions = doc_list[d_idx]
                for q_idx, (q, answer, extra) in enumerate(questions):
                    if n_samples is not None and taken >= n_samples:
                        break
                    taken += 1
                    head, tail = split_template(template, "input", Q=q)
                    ctx = head + doc
                    extra = dict(extra, data_source=source)
                    weight = 1.0
                    if config == "shortdep_cloze":
                        extra["cloze_answer"] = answer
                        answers = [json.dumps(answer, ensure_ascii=False)]
                        weight = float(len(answer))  # the official score is micro over masks
                    else:
                        answers = [str(a) for a in answer] if isinstance(answer, list) else [str(answer or "")]
                    records.append(Record(
                        context_id=context_id(config, ctx),
                        sample_id=f"{config}/{d_idx}/{q_idx}",
                        suite=self.suite,
                        task=config,
                        context=ctx,
                        question=tail,
                        answers=answers,
                        max_new_tokens=int(maxlen[config]),
                        metric=self.metric_name(config),
                        extra=extra,
                        score_weight=weight,
                    ))
        if not records and missing:
            raise DataMissing(self._missing_message(missing))
        return TaskData(records=records, skipped={k: self._missing_message({k: v}) for k, v in missing.items()})

    # ---------------------------------------------------------------------------------------- metric
    def metric_status(self) -> dict[str, str]:
        """Which optional metrics run here: "ran" or "not run: <why>"."""
        status = {m: "ran" for m in ("bleu1", "bleu4", "rouge1", "rouge2", "rouge_l", "exact_match", "partial_match")}
        status["meteor"] = "ran" if M.wordnet_available() else "not run: NLTK WordNet not installed locally"
        if not self.use_bertscore:
            status["bertscore"] = "not run: disabled (bertscore: false)"
        else:
            scorer, why = _bert_scorer()
            status["bertscore"] = "ran" if scorer is not None else f"not run: {why}"
        return status

    def _sim_metrics(self, prediction: str, reference: str, only: str | None = None) -> dict[str, float | None]:
        hyp = prediction if prediction != "" else "None"  # official: empty hypothesis -> "None"
        out: dict[str, float | None] = {}
        if only in (None, "bleu1", "bleu4"):
            out["bleu1"], out["bleu4"] = M.bleu_1_4(hyp, reference)
        if only in (None, "rouge1", "rouge2", "rouge_l"):
            out.update(M.rouge_recall(hyp, reference))
        if only in (None, "meteor"):
            out["meteor"] = M.meteor(hyp, reference)
        if only in (None, "bertscore"):
            out["bertscore"] = None
            if self.use_bertscore:
                scorer, _ = _bert_scorer()
                if scorer is not None:
                    try:  # official: score([reference], [hypothesis])[1]: reference as candidate, element R
                        out["bertscore"] = float(scorer.score([reference], [hyp])[1][0])
                    except Exception:  # noqa: BLE001
                        out["bertscore"] = None
        return out

    def metrics(self, record: Record, prediction: str, only: str | None = None) -> dict[str, Any]:
        """All LooGLE metrics of one prediction as fractions in [0, 1] (None: not run)."""
        if record.task == "shortdep_cloze":
            ref = record.extra.get("cloze_answer") or read_cloze_answer(record.answers[0]) or {}
            exact, partial, n = cloze_counts(ref, prediction)
            return {"exact_count": exact, "partial_count": partial, "n_masks": n,
                    "exact_match": exact / n if n else 0.0, "partial_match": partial / n if n else 0.0}
        primary = self.primary[record.task]
        best: dict[str, Any] | None = None
        for ref in record.answers or [""]:
            m = self._sim_metrics(prediction, ref, only)
            if best is None or (m.get(primary) or 0.0) > (best.get(primary) or 0.0):
                best = m
        return best or {}

    def score(self, record: Record, prediction: str) -> float:
        primary = self.primary[record.task]
        value = self.metrics(record, prediction, only=None if record.task == "shortdep_cloze" else primary)
        v = value.get(primary)
        return 100.0 * float(v) if v is not None else 0.0

