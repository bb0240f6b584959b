"""LooGLE (bigai-nlco, arXiv 2311.04939): ``loogle``.

Configs (sub-tasks): shortdep_qa, longdep_qa, shortdep_cloze, longdep_summarization. Many questions are
asked about one document: their records share the ``context_id`` (prefilled and compressed once).

Data, first source that can be read:

- ``data_dir`` with the official GitHub layout ``<data_dir>[/LooGLE-testdata]/<config>.jsonl``: one row per
  document, ``input`` (document), ``title``, ``qa_pairs`` (list of {Q, A, S, type}, or its Python/JSON
  string; ``"none"`` for summarization, whose reference is ``output``);
- ``data_dir`` with kvpress's exploded copy ``simonjegou/loogle`` (or the hub's ``bigainlco/LooGLE``
  parquet): ``<data_dir>/<config>/test-*.parquet``, ``<data_dir>/<config>.parquet`` or ``.jsonl``; one row
  per question with ``context``, ``question``, ``answer`` columns. kvpress's rows already carry the prompt
  pieces; they are recognised and stripped, so every source renders the same official prompt;
- ``data_dir: null``: the hub ids in ``hub`` through ``datasets`` (cache or hub when reachable).
  ``longdep_summarization`` is also looked up under the hub's name ``summarization``.

Prompt: official ``config/task2prompt.json`` split at ``{input}`` (the document): text up to and including
the document is the ``context``, the rest (question and "Answer:") the ``question``. Max new tokens from
``config/task2maxlen.json``: 300 / 500 / 50 / 500. (The official open-model script also used
``repetition_penalty=2``; the harness decodes greedily without it.)

Metrics (official ``Evaluation/automatic_metrics.py``): BLEU-1, BLEU-4 (nltk, weights (1,0,0,0) and
(0,0,0,1), no smoothing), ROUGE-1/2/L recall (``rouge`` package, ``metric="r"``), METEOR (only when NLTK's
WordNet is installed locally, never downloaded), BERTScore (only with ``bertscore: true``, the
``bert_score`` package and a locally cached ``roberta-large``; never downloaded); cloze exact and partial
match, the model's dict parsed with ``json``/``ast.literal_eval`` (never ``eval``). An empty prediction is
scored as "None", as the official evaluation does.

``score(record, prediction)`` returns the config's *primary* metric x100: ROUGE-L recall for the QA and
summarisation configs, exact match (fraction of masks) for cloze; ``primary: {config: metric}`` changes it.
``metrics(record, prediction)`` returns every metric (None where it did not run) and ``metric_status()``
says which ran. Note: the official cloze numbers are micro-averaged over masks (sum of matches / sum of
masks); a task mean of ``score`` is a per-question (macro) mean. ``cloze_micro`` gives the official one
from ``metrics`` outputs. Headline: unweighted mean of the configs' primary scores.
"""

from __future__ import annotations

import ast
import json
import os
import re
from functools import lru_cache
from typing import Any

from harness.records import Record
from tasks import register
from tasks import metrics_text as M
from tasks.base import DataMissing, Task, TaskData
from tasks.data import context_id, find_local, hub_rows, load_json, read_many, seeded_order, split_template

CONFIGS = ["shortdep_qa", "longdep_qa", "shortdep_cloze", "longdep_summarization"]
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
def parse_cloze(text: Any) -> dict | None:
    """A cloze dict from a model answer or a reference, without ``eval``.

    Accepts a dict, a list of values (mask ``i`` is ``<mask-i>``), or a string holding a JSON object or a
    Python dict literal (``{'<mask-0>': 'Bob'}``), after stripping surrounding whitespace, as the official
    ``eval(hypothesis)`` would read it. Anything else (extra words around the dict, not a dict) -> None.
    """
    if isinstance(text, dict):
        return text
    if isinstance(text, (list, tuple)):
        return {f"<mask-{i}>": v for i, v in enumerate(text)}
    if not isinstance(text, str):
        return None
    s = text.strip()
    if not s or len(s) > 100_000:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(s)
        except Exception:  # noqa: BLE001 - ValueError, SyntaxError, RecursionError, MemoryError...
            continue
        return value if isinstance(value, dict) else None
    return None


def cloze_counts(reference: dict, prediction: str) -> tuple[int, int, int]:
    """(exact matches, partial matches, masks) as LooGLE's get_exact_match / get_partial_match.

    Exact: the predicted value equals the reference value. Partial: the two share at least one
    whitespace token. An unparsable prediction scores 0 of ``len(reference)``. A non-string predicted
    value never matches (the official code would raise on it).
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
    """Official cloze aggregation: sum of matches / sum of masks, over ``metrics()`` outputs (x100)."""
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
    def _rows(self, config: str) -> tuple[list[dict] | None, str]:
        names = HUB_NAMES.get(config, [config])
        data_dir = self.params.get("data_dir")
        if data_dir:
            data_dir = os.path.expanduser(str(data_dir))
            for name in names:
                files = find_local(data_dir, name, subdirs=("", "LooGLE-testdata", "data"))
                if files:
                    return read_many(files), ""
            return None, f"no {config}.jsonl / {config}.parquet / {config}/*.parquet under {data_dir}"
        hubs = self.params.get("hub", HUB_IDS)
        if not hubs:
            return None, "no data_dir and hub disabled"
        errors = []
        for hub in [hubs] if isinstance(hubs, str) else list(hubs):
            for name in names:
                if hub in self._hub_down:
                    errors.append(f"{hub}: {self._hub_down[hub]}")
                    break
                try:
                    return hub_rows(hub, name, "test"), ""
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{hub}/{name}: {type(e).__name__}")
                    if isinstance(e, OSError) or "Connection" in type(e).__name__:
                        self._hub_down[hub] = type(e).__name__  # unreachable: skip it for other configs
        return None, "hub: " + ", ".join(errors)

    def _missing_message(self, missing: dict[str, str]) -> str:
        where = self.params.get("data_dir") or "<data_dir>"
        return (
            f"loogle: data not found for {', '.join(missing)}. Put the official files "
            f"(github.com/bigai-nlco/LooGLE, LooGLE-testdata/<config>.jsonl) at {where}/<config>.jsonl, or "
            f"kvpress's hub copy simonjegou/loogle as {where}/<config>/test-*.parquet, and set "
            f"task.data_dir={where}. Details: " + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )

    @staticmethod
    def _questions(config: str, rows: list[dict], template: str) -> list[tuple[str, str, Any, dict]]:
        """(document, Q, answer, extra) for every question, in file order."""
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
                if config == "longdep_summarization" and q.lower() == "none":
                    q = ""
                answer = row.get("answer", row.get("answers", row.get("output")))
                extra = {k: row.get(k) for k in ("title", "type", "evidence") if row.get(k) is not None}
                out.append((doc, q, answer, extra))
        return out

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        self._hub_down: dict[str, str] = {}
        prompts = load_json("loogle_task2prompt.json")
        maxlen = load_json("loogle_task2maxlen.json")
        records: list[Record] = []
        missing: dict[str, str] = {}
        for config in self.tasks:
            rows, why = self._rows(config)
            if rows is None:
                missing[config] = why
                continue
            template = prompts[config]
            # group questions by document (first-appearance order), shuffle documents with the seed and
            # take questions in that order: context sharing is kept and sample i does not depend on n
            docs: dict[str, list[tuple[str, Any, dict]]] = {}
            for doc, q, answer, extra in self._questions(config, rows, template):
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
                    extra = dict(extra)
                    if config == "shortdep_cloze":
                        ref = parse_cloze(answer)
                        if ref is None:
                            raise ValueError(f"loogle {config}: cannot read cloze answer {str(answer)[:80]!r}")
                        ref = {str(k): v for k, v in ref.items()}
                        extra["cloze_answer"] = ref
                        answers = [json.dumps(ref, ensure_ascii=False)]
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
                    try:  # official: score([reference], [hypothesis]) -> F1
                        out["bertscore"] = float(scorer.score([reference], [hyp])[2][0])
                    except Exception:  # noqa: BLE001
                        out["bertscore"] = None
        return out

    def metrics(self, record: Record, prediction: str, only: str | None = None) -> dict[str, Any]:
        """All LooGLE metrics of one prediction as fractions in [0, 1] (None: not run)."""
        if record.task == "shortdep_cloze":
            ref = record.extra.get("cloze_answer") or parse_cloze(record.answers[0]) or {}
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

