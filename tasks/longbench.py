"""LongBench and LongBench-E (THUDM, arXiv 2308.14508): ``longbench``, ``longbench_e``.

Data (docs/tasks/longbench.md, "Data sources"), first source that can be read (``data_dir`` set: only the
local layouts):

- ``<data_dir>/<task>.jsonl`` or ``<data_dir>/data/<task>.jsonl``: the official ``data.zip`` unzipped;
- ``<data_dir>/data.zip``: the zip itself (read in place);
- ``<data_dir>/<task>.parquet`` or ``<data_dir>/<task>/**/*.parquet``: a downloaded hub set with its folder layout
  (``<task>/test-00000-of-00001.parquet``);
- ``data_dir: null``: ``datasets.load_dataset(hub, task, split="test")`` (hub cache, or the hub when reachable).

LongBench-E uses the ``<task>_e`` files / configs. Two row layouts are understood, told apart by their fields
(``row_layout``), never guessed:

- *official* (``data.zip``, ``THUDM/LongBench``): ``input`` (question), ``context`` (the raw document),
  ``answers``, ``length`` (words), ``all_classes``, ``language``, ``_id``;
- *kvpress* (``Xnhyacinth/LongBench``, built by kvpress's ``create_huggingface_dataset.py``): the official
  prompt cut in three, ``context`` (instruction + document + the text up to the question line), ``question``
  (the question line(s)) and ``answer_prefix`` (the prompt's last words, e.g. "Answer:"), plus ``task`` and
  ``max_new_tokens``; ``input`` is gone. ``kvpress_to_official`` recovers the official ``context`` and
  ``input`` exactly, or refuses the row.

A row of neither layout, or a kvpress row whose text is not the official prompt of its task, stops the run
with one message (``LayoutError``) naming the fields found and expected. Each record's ``extra`` holds
``layout`` and ``data_source`` (the file, zip member or hub config, and the layout; result rows record it).

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

from tasks.records import Record
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

HUB_ID = "Xnhyacinth/LongBench"  # kvpress's processed set: read as such (kvpress_to_official)
ZIP_URL = "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip"
DOC = "docs/tasks/longbench.md"

OFFICIAL_FIELDS = ("input", "context", "answers")  # data.zip / THUDM/LongBench (also length, all_classes, _id...)
KVPRESS_FIELDS = ("context", "question", "answer_prefix", "answers")  # kvpress's processed set (also task, ...)
_INPUT = "\u2063INPUT\u2063"  # stands for {input} while the official template is taken apart


class LayoutError(DataMissing):
    """LongBench data that exists but cannot be read as either layout (a file that does not parse, a row of
    neither layout, a kvpress row that does not hold the official prompt). One line, naming what was found."""


def _one_line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def row_layout(row: dict, where: str) -> str:
    """``"official"`` or ``"kvpress"`` from the row's fields; ``LayoutError`` for anything else."""
    keys = set(row)
    if set(OFFICIAL_FIELDS) <= keys and not keys & {"question", "answer_prefix"}:
        return "official"
    if set(KVPRESS_FIELDS) <= keys and "input" not in keys:
        return "kvpress"
    raise LayoutError(
        f"{where}: a row with fields {', '.join(sorted(map(str, keys)))} is neither the official LongBench layout "
        f"(data.zip: {', '.join(OFFICIAL_FIELDS)}, no question/answer_prefix) nor kvpress's processed layout "
        f"({HUB_ID}: {', '.join(KVPRESS_FIELDS)}, no input); see {DOC}"
    )


def kvpress_to_official(task: str, row: dict, where: str) -> tuple[str, str]:
    """The official ``(context, input)`` behind one row of kvpress's processed set (docs/tasks/longbench.md).

    kvpress renders the official template ``head{context}S1{input}S2`` as ``context = head + document + m``,
    ``question = lead + input + S2a`` and ``answer_prefix = S2b``, where ``S1 = m + lead``, ``lead`` being the
    text of S1 after its last newline (the question line's label, "Question: " or ""), and ``S2 = S2a + S2b``.
    For trec, triviaqa and samsum (``S2`` empty) the answer prefix was cut from the end of ``input``
    (``removesuffix``): it is put back, unless the question already ends with it (nothing was cut). Templates
    without ``{input}`` are whole: ``question + answer_prefix`` is the end of the official tail. Any row whose
    parts do not fit its task's template is refused (``LayoutError``), never patched.
    """
    if row.get("task") not in (None, "", task):
        raise LayoutError(f"{where}: a kvpress row of task {row.get('task')!r} where {task} was expected")
    ctx, question, prefix = (str(row.get(k) or "") for k in ("context", "question", "answer_prefix"))
    head, tail = split_template(load_json("longbench_dataset2prompt.json")[task], "context", input=_INPUT)

    def refuse(what: str, expected: str) -> LayoutError:
        return LayoutError(
            f"{where}: a kvpress-layout row whose {what} does not fit the official {task} prompt (expected "
            f"{expected}); it cannot be read as the official pipeline reads it, see {DOC}"
        )

    if not ctx.startswith(head):
        raise refuse("context", f"it to start with {head[:60]!r}")
    if _INPUT not in tail:  # the template has no {input}: question + answer_prefix end the official tail
        rest = question + prefix
        if not tail.endswith(rest):
            raise refuse("question + answer_prefix", f"the end of {tail!r}")
        mid = tail[: len(tail) - len(rest)]
        if not ctx.endswith(mid) or len(ctx) < len(head) + len(mid):
            raise refuse("context", f"it to end with {mid!r}")
        return ctx[len(head) : len(ctx) - len(mid)], ""
    s1, s2 = tail.split(_INPUT, 1)
    lead = s1[s1.rfind("\n") + 1 :]
    mid = s1[: len(s1) - len(lead)]
    cut_from_input = not s2 and prefix and not question.rstrip().endswith(prefix.rstrip())
    rest = question + prefix if (s2 or cut_from_input) else question
    if not ctx.endswith(mid) or len(ctx) < len(head) + len(mid):
        raise refuse("context", f"it to end with {mid!r}")
    if not (rest.startswith(lead) and rest.endswith(s2)) or len(rest) < len(lead) + len(s2):
        raise refuse("question + answer_prefix", f"{lead!r} + the question + {s2!r}")
    return ctx[len(head) : len(ctx) - len(mid)], rest[len(lead) : len(rest) - len(s2)]


def official_rows(task: str, rows: list[dict], source: str) -> list[dict]:
    """Rows of either layout as official rows (``context`` = the document, ``input`` = the question) with
    ``layout`` and ``source`` added. Raises ``LayoutError`` on the first row that is neither."""
    out = []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        layout = row_layout(row, where)
        if layout == "official":
            context, question = str(row.get("context") or ""), str(row.get("input") or "")
        else:
            context, question = kvpress_to_official(task, row, where)
        out.append({**row, "context": context, "input": question, "layout": layout, "source": source})
    return out


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
        self._hub_down: str | None = None  # why the hub cannot be reached, once known
        self._read_cache: dict[str, tuple[list[dict] | None, str]] = {}  # task -> _read's answer

    # ------------------------------------------------------------------------------------------ data
    def _file_name(self, task: str) -> str:
        return f"{task}_e" if self.extended else task

    def _rows(self, task: str) -> tuple[list[dict] | None, str]:
        """Raw rows of one task and the local file they came from ("" for the hub), or (None, why missing)."""
        name = self._file_name(task)
        data_dir = self.params.get("data_dir")
        if data_dir:
            data_dir = os.path.expanduser(str(data_dir))
            files = find_local(data_dir, name)
            if files:
                try:
                    return read_many(files), files[0] if len(files) == 1 else os.path.dirname(files[0])
                except Exception as e:  # noqa: BLE001 - bad JSON, not parquet, unreadable file
                    raise LayoutError(f"{self.suite}: {files[0]} cannot be read ({_one_line(e)})") from e
            for z in (Path(data_dir) / "data.zip", Path(data_dir).with_suffix(".zip")):
                if z.is_file():
                    rows = read_zip_member(z, [f"data/{name}.jsonl", f"{name}.jsonl"])
                    if rows is not None:
                        return rows, f"{z}:{name}.jsonl"
            pattern = "<task>_e" if self.extended else "<task>"
            return None, (f"not under {data_dir} (looked for {pattern}.jsonl, data/{pattern}.jsonl, {pattern}.parquet, "
                          f"{pattern}/*.parquet and data.zip)")
        hub = self.params.get("hub", HUB_ID)
        if not hub:
            return None, "no data_dir and hub disabled"
        if self._hub_down:
            return None, self._hub_down
        try:
            return hub_rows(hub, name, "test"), ""
        except Exception as e:  # noqa: BLE001 - offline, not cached, script dataset, ...
            why = f"hub {hub} config {name}: {_one_line(e)}"
            if isinstance(e, OSError) or "Connection" in type(e).__name__ or "Offline" in type(e).__name__:
                why = f"hub {hub}: {_one_line(e)}"  # the same for every task: reported once, not per task
                self._hub_down = why  # unreachable: do not try again for every task
            return None, why

    def _read(self, task: str) -> tuple[list[dict] | None, str]:
        """Official rows of one task (``official_rows``) and their source, or (None, why missing); read once
        (``check_data`` before the model loads, then ``load``). ``LayoutError`` when the data cannot be read."""
        cache = self._read_cache
        if task not in cache:
            rows, found = self._rows(task)
            if rows is not None:
                hub = self.params.get("hub", HUB_ID)
                source = found or f"hub {hub} config {self._file_name(task)}"
                rows, found = official_rows(task, rows, source), source
            cache[task] = (rows, found)
        return cache[task]

    def _missing_message(self, missing: dict[str, str]) -> str:
        """One line: the tasks without data, each distinct reason once, and what to fetch (docs/tasks/longbench.md)."""
        by_reason: dict[str, list[str]] = {}
        for task, why in missing.items():
            by_reason.setdefault(why, []).append(self._file_name(task))
        reasons = "; ".join(why if len(by_reason) == 1 else f"{', '.join(ts)}: {why}" for why, ts in by_reason.items())
        names = ", ".join(self._file_name(t) for t in missing)
        where = self.params.get("data_dir") or "<dir>"
        pattern = "<task>_e" if self.extended else "<task>"
        return (
            f"{self.suite}: no data for {len(missing)} task(s) ({names}): {reasons}. Fetch the official files: unzip "
            f"{ZIP_URL} into {where} (giving {where}/data/{pattern}.jsonl) or leave data.zip there, and set "
            f"task.data_dir={where}. kvpress's processed set {HUB_ID} (hub, or its {pattern}/test-*.parquet folders "
            f"under task.data_dir) is read too. See {DOC}."
        )

    def check_data(self) -> None:
        """Before the model loads: ``DataMissing`` when no selected task has data, ``LayoutError`` when some
        data cannot be read as either layout (both one line)."""
        missing = {t: why for t in self.tasks for rows, why in [self._read(t)] if rows is None}
        if missing and len(missing) == len(self.tasks):
            raise DataMissing(self._missing_message(missing))

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        self._hub_down = None
        prompts = load_json("longbench_dataset2prompt.json")
        maxlen = load_json("longbench_dataset2maxlen.json")
        records: list[Record] = []
        missing: dict[str, str] = {}
        for task in self.tasks:
            rows, why = self._read(task)
            if rows is None:
                missing[task] = why
                continue
            template = prompts[task]
            for idx in take(seeded_order(len(rows), seed, task), n_samples):
                row = rows[idx]
                ctx, question = split_template(template, "context", input=row["input"])
                ctx = ctx + row["context"]
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
                    max_new_tokens=int(maxlen[task]),  # official; kvpress rows carry it + 20, not used
                    metric=TASK_METRIC[task],
                    chat_template=task not in NO_CHAT,
                    length_bucket=length_bucket(length) if (self.extended and length is not None) else None,
                    extra={
                        "all_classes": list(row.get("all_classes") or []) or None,
                        "length": length,
                        "_id": row.get("_id"),
                        "language": row.get("language"),
                        "category": TASK_CATEGORY[task],
                        "layout": row["layout"],  # official | kvpress (row_layout)
                        "data_source": f"{row['source']} ({row['layout']} layout)",  # file / zip member / hub config
                    },
                ))
        self._read_cache.clear()  # rows are not kept once the records exist
        if not records and missing:
            raise DataMissing(self._missing_message(missing))
        skipped = {t: f"{why}; see {DOC}" for t, why in missing.items()}
        return TaskData(records=records, skipped=skipped)

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        classes = (record.extra or {}).get("all_classes")
        return 100.0 * sample_score(record.task, prediction, record.answers, classes, self.code_backend)

    @staticmethod
    def headline(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        """The mean of category means (``category_headline``; ``counts`` unused)."""
        return category_headline(task_scores)


@register("longbench_e")
class LongBenchE(LongBench):
    """LongBench-E: the 13 tasks on the ``<task>_e`` files, ``length_bucket`` 0 / 4000 / 8000 per record
    (0-4k / 4-8k / 8k+ words). Per-bucket task scores are the mean of the records of each bucket."""

    suite = "longbench_e"
    extended = True
    bucket_names = BUCKET_NAMES  # labels of length_bucket in summaries, tables and figures (harness.report)
