"""LongBench and LongBench-E (THUDM, arXiv 2308.14508): ``longbench``, ``longbench_e``.

Data, first source that can be read (``data_dir`` set: only the local layouts):

- ``<data_dir>/<task>.jsonl`` or ``<data_dir>/data/<task>.jsonl``: the official ``data.zip`` unzipped;
- ``<data_dir>/data.zip``: the zip itself (read in place);
- ``<data_dir>/<task>.parquet`` or ``<data_dir>/<task>/**/*.parquet``: the hub mirror ``Xnhyacinth/LongBench``
  downloaded with its folder layout (``<task>/test-00000-of-00001.parquet``);
- ``data_dir: null``: ``datasets.load_dataset(hub, task, split="test")`` (hub cache, or the hub when reachable).

LongBench-E uses the ``<task>_e`` files / configs. Fields: ``input`` (question), ``context``, ``answers``,
``length`` (words), ``all_classes``, ``language``, ``_id``.

Prompt: the official ``dataset2prompt.json`` template split at ``{context}``: the text up to and including
the context is the record's ``context`` (prefilled, compressed), the rest with ``{input}`` filled is its
``question``. Max new tokens: ``dataset2maxlen.json``. No chat template for trec, triviaqa, samsum, lsht,
lcc, repobench-p (official ``pred.py``). The official run stops samsum at a newline (``eos_token_id``
includes "\\n", with ``min_length`` forcing one token); here samsum generates up to its max tokens and the
scorer keeps the first line, which scores the same text except when the model's first token is a newline.

Score: max over references of the task's metric, x100; trec, triviaqa, samsum and lsht keep only the first
line of the prediction (``pred.lstrip("\\n").split("\\n")[0]``). Headline: mean over the official categories
of the category means of the tasks that ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from harness.records import Record
from tasks import register
from tasks import metrics_text as M
from tasks.base import DataMissing, Task, TaskData
from tasks.data import (
    context_id,
    find_local,
    hub_rows,
    load_json,
    read_many,
    read_zip_member,
    seeded_order,
    split_template,
    take,
)

EN_TASKS = [
    "narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique",
    "gov_report", "qmsum", "multi_news", "trec", "triviaqa", "samsum",
    "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
]
ZH_TASKS = ["multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"]
ALL_TASKS = EN_TASKS + ZH_TASKS
E_TASKS = [
    "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news",
    "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
]

# official grouping (README / paper Table 1)
CATEGORIES: dict[str, list[str]] = {
    "single-doc QA": ["narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"],
    "multi-doc QA": ["hotpotqa", "2wikimqa", "musique", "dureader"],
    "summarization": ["gov_report", "qmsum", "multi_news", "vcsum"],
    "few-shot": ["trec", "triviaqa", "samsum", "lsht"],
    "synthetic": ["passage_count", "passage_retrieval_en", "passage_retrieval_zh"],
    "code": ["lcc", "repobench-p"],
}
TASK_CATEGORY = {t: c for c, ts in CATEGORIES.items() for t in ts}

TASK_METRIC = {
    "narrativeqa": "qa_f1", "qasper": "qa_f1", "multifieldqa_en": "qa_f1", "multifieldqa_zh": "qa_f1_zh",
    "hotpotqa": "qa_f1", "2wikimqa": "qa_f1", "musique": "qa_f1", "dureader": "rouge_zh",
    "gov_report": "rouge_l", "qmsum": "rouge_l", "multi_news": "rouge_l", "vcsum": "rouge_zh",
    "trec": "classification", "triviaqa": "qa_f1", "samsum": "rouge_l", "lsht": "classification",
    "passage_retrieval_en": "retrieval", "passage_count": "count", "passage_retrieval_zh": "retrieval_zh",
    "lcc": "code_sim", "repobench-p": "code_sim",
}
NO_CHAT = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}
FIRST_LINE = {"trec", "triviaqa", "samsum", "lsht"}

HUB_ID = "Xnhyacinth/LongBench"
ZIP_URL = "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip"


def length_bucket(length_words: int | float) -> int:
    """LongBench-E buckets by the ``length`` field (words): 0 = 0-4k, 4000 = 4-8k, 8000 = 8k+."""
    if length_words < 4000:
        return 0
    if length_words < 8000:
        return 4000
    return 8000


BUCKET_NAMES = {0: "0-4k", 4000: "4-8k", 8000: "8k+"}


def sample_score(task: str, prediction: str, answers: list[str], all_classes: list[str] | None = None,
                 code_backend: str = "levenshtein") -> float:
    """Official per-sample score in [0, 1]: first-line cut where due, then max over references."""
    if task in FIRST_LINE:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = TASK_METRIC[task]
    fn: Callable[[str, str], float]
    if metric == "classification":
        classes = list(all_classes or [])
        fn = lambda p, g: M.classification(p, g, classes)  # noqa: E731
    elif metric == "code_sim":
        fn = lambda p, g: M.code_sim(p, g, code_backend)  # noqa: E731
    else:
        fn = {
            "qa_f1": M.qa_f1, "qa_f1_zh": M.qa_f1_zh, "rouge_l": M.rouge_l_f, "rouge_zh": M.rouge_zh,
            "retrieval": M.retrieval, "retrieval_zh": M.retrieval_zh, "count": M.count,
        }[metric]
    best = 0.0
    for ref in answers:
        best = max(best, fn(prediction, ref))
    return float(best)


def category_headline(task_scores: dict[str, float]) -> float:
    """Mean over categories of the mean of their tasks (only tasks present in ``task_scores``).

    Keys may carry a suffix after "/" or "@" (e.g. LongBench-E "qasper/4-8k"); such entries are first
    averaged per task. Unknown task names form their own category.
    """
    per_task: dict[str, list[float]] = {}
    for key, value in task_scores.items():
        name = key if key in TASK_CATEGORY else key.replace("@", "/").split("/")[0]
        per_task.setdefault(name, []).append(float(value))
    cats: dict[str, list[float]] = {}
    for name, values in per_task.items():
        cats.setdefault(TASK_CATEGORY.get(name, name), []).append(sum(values) / len(values))
    if not cats:
        return 0.0
    return sum(sum(v) / len(v) for v in cats.values()) / len(cats)


@register("longbench")
class LongBench(Task):
    """Params: ``data_dir`` (null: hub), ``hub`` (hub id, null disables it), ``tasks`` (subset),
    ``language`` (``en``: the 16 English and code tasks, ``zh``: the 5 Chinese, ``all``: 21),
    ``code_sim_backend`` (``levenshtein``, or ``difflib`` for fuzzywuzzy without python-Levenshtein)."""

    suite = "longbench"
    extended = False  # LongBench-E

    def __init__(self, **params: Any):
        super().__init__(**params)
        valid = E_TASKS if self.extended else ALL_TASKS
        tasks = params.get("tasks")
        if tasks:
            if isinstance(tasks, str):
                tasks = [t.strip() for t in tasks.split(",") if t.strip()]
            unknown = [t for t in tasks if t not in valid]
            if unknown:
                raise ValueError(f"unknown {self.suite} task(s) {unknown}; valid: {', '.join(valid)}")
            self.tasks = list(tasks)
        elif self.extended:
            self.tasks = list(E_TASKS)
        else:
            language = (params.get("language") or "en").lower()
            if language not in ("en", "zh", "all"):
                raise ValueError(f"language must be en, zh or all, not {language!r}")
            self.tasks = {"en": EN_TASKS, "zh": ZH_TASKS, "all": ALL_TASKS}[language]
        backend = params.get("code_sim_backend") or "levenshtein"
        if backend not in ("levenshtein", "difflib"):
            raise ValueError(f"code_sim_backend must be levenshtein or difflib, not {backend!r}")
        self.code_backend = backend

    # ------------------------------------------------------------------------------------------ data
    def _file_name(self, task: str) -> str:
        return f"{task}_e" if self.extended else task

    def _rows(self, task: str) -> tuple[list[dict] | None, str]:
        """Rows of one task, or (None, why)."""
        name = self._file_name(task)
        data_dir = self.params.get("data_dir")
        if data_dir:
            data_dir = os.path.expanduser(str(data_dir))
            files = find_local(data_dir, name)
            if files:
                return read_many(files), ""
            for z in (Path(data_dir) / "data.zip", Path(data_dir).with_suffix(".zip")):
                if z.is_file():
                    rows = read_zip_member(z, [f"data/{name}.jsonl", f"{name}.jsonl"])
                    if rows is not None:
                        return rows, ""
            return None, f"no {name}.jsonl / {name}.parquet / {name}/*.parquet / data.zip under {data_dir}"
        hub = self.params.get("hub", HUB_ID)
        if not hub:
            return None, "no data_dir and hub disabled"
        if getattr(self, "_hub_down", None):
            return None, self._hub_down
        try:
            return hub_rows(hub, name, "test"), ""
        except Exception as e:  # noqa: BLE001 - offline, not cached, script dataset, ...
            why = f"hub {hub} config {name}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if isinstance(e, OSError) or "Connection" in type(e).__name__ or "Offline" in type(e).__name__:
                self._hub_down = why  # unreachable: do not try again for every task
            return None, why

    def _missing_message(self, missing: dict[str, str]) -> str:
        names = [self._file_name(t) for t in missing]
        where = self.params.get("data_dir") or "<data_dir>"
        return (
            f"{self.suite}: data not found for {len(missing)} task(s): {', '.join(names)}. "
            f"Put the official jsonl files at {where}/<task>.jsonl (unzip {ZIP_URL} so that "
            f"{where}/data/{names[0]}.jsonl exists, or leave data.zip itself in {where}), or the parquet "
            f"mirror {HUB_ID} as {where}/<task>/test-*.parquet, and set task.data_dir={where}. "
            f"Details: " + "; ".join(f"{t}: {why}" for t, why in missing.items())
        )

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        self._hub_down = None
        prompts = load_json("longbench_dataset2prompt.json")
        maxlen = load_json("longbench_dataset2maxlen.json")
        records: list[Record] = []
        missing: dict[str, str] = {}
        for task in self.tasks:
            rows, why = self._rows(task)
            if rows is None:
                missing[task] = why
                continue
            template = prompts[task]
            for idx in take(seeded_order(len(rows), seed, task), n_samples):
                row = rows[idx]
                ctx, question = split_template(template, "context", input=str(row.get("input") or ""))
                ctx = ctx + str(row.get("context") or "")
                answers = row.get("answers") or []
                if isinstance(answers, str):
                    answers = [answers]
                length = row.get("length")
                records.append(Record(
                    context_id=context_id(task, ctx),
                    sample_id=f"{task}/{idx}",
                    suite=self.suite,
                    task=task,
                    context=ctx,
                    question=question,
                    answers=[str(a) for a in answers],
                    max_new_tokens=int(maxlen[task]),
                    metric=TASK_METRIC[task],
                    chat_template=task not in NO_CHAT,
                    length_bucket=length_bucket(length) if (self.extended and length is not None) else None,
                    extra={
                        "all_classes": list(row.get("all_classes") or []) or None,
                        "length": length,
                        "_id": row.get("_id"),
                        "language": row.get("language"),
                        "category": TASK_CATEGORY[task],
                    },
                ))
        if not records and missing:
            raise DataMissing(self._missing_message(missing))
        skipped = {t: self._missing_message({t: why}) for t, why in missing.items()}
        return TaskData(records=records, skipped=skipped)

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        classes = (record.extra or {}).get("all_classes")
        return 100.0 * sample_score(record.task, prediction, record.answers, classes, self.code_backend)

    def headline(self, task_scores: dict[str, float]) -> float:
        return category_headline(task_scores)


@register("longbench_e")
class LongBenchE(LongBench):
    """LongBench-E: the 13 tasks on the ``<task>_e`` files, ``length_bucket`` 0 / 4000 / 8000 per record
    (0-4k / 4-8k / 8k+ words). Per-bucket task scores are the mean of the records of each bucket."""

    suite = "longbench_e"
    extended = True
