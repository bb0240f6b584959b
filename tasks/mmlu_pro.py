"""MMLU-Pro (TIGER-Lab, arXiv 2406.01574): ``mmlu_pro``. Full description: docs/tasks/mmlu_pro.md.

Data: hub ``TIGER-Lab/MMLU-Pro`` (test 12,032 questions, validation 70), or ``data_dir`` holding the test and
validation splits as parquet or jsonl: ``<data_dir>/[data/]test.{parquet,jsonl}`` /
``validation.{parquet,jsonl}``, or the hub's files ``<data_dir>/data/test-00000-of-00001.parquet`` and
``validation-00000-of-00001.parquet`` (any ``test-*``/``validation-*`` shards below ``data_dir``).
``check_data`` reads both splits before any model loads (and ``load`` reuses them).

Prompt, as the official ``evaluate_from_local.py`` builds it for 5-shot chain of thought:
``cot_prompt_lib/initial_prompt.txt`` (the version of 2024-05-23, stored verbatim with its three trailing
newlines) with ``{$}`` replaced by the category, a newline, then the first ``ntrain`` (5) validation examples of
the same category, each ``Question:\\n<q>\\nOptions:\\nA. <opt>\\n...`` followed by its ``cot_content``
("A: Let's think step by step." turned into "Answer: ...") and a blank line. That header and the examples are
the record's ``context`` (identical within a category: one ``context_id`` per category, compressed once); the
test question, its options (N/A options dropped) and "Answer: Let's think step by step." are its
``question``. Stop at "Question:", ``max_new_tokens`` (official 2048). The official script drops examples
(k -> k-1) when the prompt exceeds 2048 tokens; here the context is fixed per category and the harness
truncates its middle instead. ``chat_template`` (default true) puts the prompt in the user turn (the official
local script feeds the raw prompt to base models; set it false for that).

Scoring: the answer letter is extracted as the official script does (``answer is \\(?([A-J])\\)?``, then
``.*[aA]nswer:\\s*([A-J])``, then the last standalone letter ``\\b[A-J]\\b(?!.*\\b[A-J]\\b)`` with DOTALL);
100 if it equals the answer letter. No letter: ``random_guess_on_fail`` decides (``GUESS_METRICS``; the record's
``metric``, and so the result row's, names the rule):

- ``false`` (default), metric ``accuracy``: 0.
- ``true``, metric ``accuracy_guess``: the current official scripts (since 2025-02-23): ``random.seed(12345)``
  once per process, then one ``random.randint(0, n_options - 1)`` per unparsable answer, categories in sorted
  order, questions in test-file order, twice per category (``save_res`` runs twice; the second pass counts).
  The harness scores each row on its own, so it gives every question its own fixed place in that sequence:
  the draws the official process makes when *every* question of the selected categories is unparsable
  (``official_draws``). Identical to the official credits when all answers fail; otherwise the official
  draw of a question depends on how many earlier questions failed, which one row cannot know.
- ``reseed``, metric ``accuracy_guess_reseed``: the official scripts before 2025-02-23 (the version in use
  when the paper's numbers were made): ``random.seed(12345)`` before every draw, so an unparsable answer with
  ``n`` options always guesses the same index (``reseed_draw``); exact, order-free.

Headline: the official reports overall accuracy weighted by samples, not a mean of categories. ``headline``
weights each category's score by ``counts`` (the number of rows each category has in the cell, which the
tables pass: exactly the per-sample mean of the rows present); without ``counts`` it uses the full test
set's category sizes (exact for a full run).
"""

from __future__ import annotations

import glob
import os
import random
import re
from typing import Any

from tasks.records import Record
from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.data import context_id, hub_rows, load_text, read_many, seeded_order, take

HUB_ID = "TIGER-Lab/MMLU-Pro"
LETTERS = "ABCDEFGHIJKLMNOP"
# test-split sizes per category (12,032 in all)
FULL_TEST_COUNTS = {
    "biology": 717, "business": 789, "chemistry": 1132, "computer science": 410, "economics": 844,
    "engineering": 969, "health": 818, "history": 381, "law": 1101, "math": 1351, "other": 924,
    "philosophy": 499, "physics": 1299, "psychology": 798,
}
CATEGORIES = sorted(FULL_TEST_COUNTS)
TEST_FIELDS = ("question", "options", "answer", "answer_index", "category")  # what prompts and scoring read
VAL_FIELDS = ("question", "options", "cot_content", "category")


def task_name(category: str) -> str:
    """Sub-task name of a category: spaces become underscores ("computer science" -> "computer_science")."""
    return category.replace(" ", "_")


def category_of(task: str) -> str:
    return task.replace("_", " ")


# ------------------------------------------------------------------------------------ answer extraction
_PAT_IS = re.compile(r"answer is \(?([A-J])\)?")
_PAT_COLON = re.compile(r".*[aA]nswer:\s*([A-J])")
_PAT_LAST = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The official three-step extraction; None when no letter is found."""
    m = _PAT_IS.search(text)
    if m:
        return m.group(1)
    m = _PAT_COLON.search(text)
    if m:
        return m.group(1)
    m = _PAT_LAST.search(text)
    return m.group(0) if m else None


# ------------------------------------------------------------------------------- random guess on failure
OFFICIAL_SEED = 12345
# random_guess_on_fail value -> the metric name records (and result rows) carry
GUESS_METRICS = {False: "accuracy", True: "accuracy_guess", "reseed": "accuracy_guess_reseed"}


def guess_mode(value: Any) -> bool | str:
    """``random_guess_on_fail`` as given (bool, or "true" / "false" / "reseed" from the command line)."""
    text = str(value).strip().lower() if value is not None else "false"
    modes: dict[str, bool | str] = {"false": False, "0": False, "true": True, "1": True, "reseed": "reseed"}
    mode = modes.get(text)
    if mode is None:
        raise ValueError(f"random_guess_on_fail must be false, true or reseed (got {value})")
    return mode


def reseed_draw(n_options: int) -> int:
    """The draw of the official scripts before 2025-02-23: ``random.seed(12345)`` before every draw."""
    return random.Random(OFFICIAL_SEED).randint(0, n_options - 1)


def official_draws(n_options: dict[str, list[int]]) -> dict[str, list[int]]:
    """Per category, the draw the current official ``evaluate_from_local.py`` makes for each test question
    (``n_options``: category -> option counts in test-file order) when every answer is unparsable.

    The official process seeds once (``random.seed(12345)``), evaluates the categories in sorted order and calls
    ``save_res`` twice per category, each call drawing ``randint(0, n - 1)`` for every unparsable answer; the
    second call's credits are the ones reported.
    """
    rng = random.Random(OFFICIAL_SEED)
    out: dict[str, list[int]] = {}
    for category in sorted(n_options):
        for _ in range(2):  # the second pass overwrites the first
            out[category] = [rng.randint(0, n - 1) for n in n_options[category]]
    return out


# ---------------------------------------------------------------------------------------------- prompts
def clean_options(options: list[str]) -> list[str]:
    return [o for o in options if o != "N/A"]


def format_example(example: dict, with_answer: bool) -> str:
    text = "Question:\n" + str(example["question"]) + "\nOptions:\n"
    for i, opt in enumerate(clean_options(list(example["options"]))):
        text += f"{LETTERS[i]}. {opt}\n"
    if with_answer:
        cot = str(example.get("cot_content") or "")
        return text + cot.replace("A: Let's think step by step.", "Answer: Let's think step by step.") + "\n\n"
    return text + "Answer: Let's think step by step."


def fewshot_header(category: str, examples: list[dict]) -> str:
    prompt = load_text("mmlu_pro_initial_prompt.txt").replace("{$}", category) + "\n"
    return prompt + "".join(format_example(e, True) for e in examples)


@register("mmlu_pro")
class MMLUPro(Task):
    """Params: ``data_dir`` (null: hub), ``hub``, ``categories`` (subset; "computer science" or
    "computer_science"), ``max_new_tokens`` (2048), ``ntrain`` (5), ``chat_template`` (true),
    ``random_guess_on_fail`` (false; true: the current official credit for unparsable answers; reseed: the
    pre-2025-02-23 official credit; see the module docstring)."""

    suite = "mmlu_pro"

    def __init__(self, **params: Any):
        super().__init__(**params)
        cats = params.get("categories") or params.get("tasks")
        if isinstance(cats, str):
            cats = [c.strip() for c in cats.split(",") if c.strip()]
        if cats:
            wanted = [category_of(c) if category_of(c) in FULL_TEST_COUNTS else c for c in cats]
            unknown = [c for c in wanted if c not in FULL_TEST_COUNTS]
            if unknown:
                raise ValueError(f"unknown mmlu_pro categories {unknown}; valid: {', '.join(CATEGORIES)}")
            self.categories = sorted(set(wanted))
        else:
            self.categories = list(CATEGORIES)
        self.max_new_tokens = int(params.get("max_new_tokens") or 2048)
        self.ntrain = int(params.get("ntrain", 5))
        self.guess = guess_mode(params.get("random_guess_on_fail", False))
        self.metric = GUESS_METRICS[self.guess]
        self._rows: tuple[list[dict], list[dict]] | None = None  # (test, validation), read once

    # ------------------------------------------------------------------------------------------ data
    def _local_split(self, data_dir: str, split: str) -> list[str]:
        for sub in ("", "data"):
            d = os.path.join(data_dir, sub) if sub else data_dir
            for ext in ("parquet", "jsonl", "json"):
                p = os.path.join(d, f"{split}.{ext}")
                if os.path.isfile(p):
                    return [p]
        for ext in ("parquet", "jsonl"):
            shards = glob.glob(os.path.join(data_dir, "**", f"{split}-*.{ext}"), recursive=True)
            if shards:
                return sorted(shards)
        return []

    def _splits(self) -> tuple[list[dict], list[dict]]:
        data_dir = self.params.get("data_dir")
        if data_dir:
            data_dir = os.path.expanduser(str(data_dir))
            test, val = self._local_split(data_dir, "test"), self._local_split(data_dir, "validation")
            if test and val:
                try:
                    return read_many(test), read_many(val)
                except Exception as e:  # noqa: BLE001 - corrupt parquet, invalid JSON, unreadable file
                    why = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    raise DataMissing(self._missing_message(
                        f"cannot read the splits under {data_dir}: {type(e).__name__}: {why}")) from e
            lacking = [s for s, f in (("test", test), ("validation", val)) if not f]
            raise DataMissing(self._missing_message(f"no {' / '.join(lacking)} split under {data_dir}"))
        hub = self.params.get("hub", HUB_ID)
        if not hub:
            raise DataMissing(self._missing_message("no data_dir and hub disabled"))
        try:
            return hub_rows(hub, None, "test"), hub_rows(hub, None, "validation")
        except Exception as e:  # noqa: BLE001
            raise DataMissing(self._missing_message(f"hub {hub}: {type(e).__name__}")) from e

    def _missing_message(self, why: str) -> str:
        where = self.params.get("data_dir") or "<data_dir>"
        return (
            f"mmlu_pro: data not found ({why}). Download the hub dataset {HUB_ID} files "
            f"data/test-00000-of-00001.parquet and data/validation-00000-of-00001.parquet into {where}/data/ "
            f"(or test.jsonl / validation.jsonl into {where}/) and set task.data_dir={where}."
        )

    def _data(self) -> tuple[list[dict], list[dict]]:
        """Both splits, read once (``check_data`` then ``load``), with the fields the prompt and metric use."""
        if self._rows is None:
            test, val = self._splits()
            for split, rows, fields in (("test", test, TEST_FIELDS), ("validation", val, VAL_FIELDS)):
                if not rows:
                    raise DataMissing(self._missing_message(f"the {split} split has no rows"))
                lacking = sorted({f for r in rows for f in fields if f not in r})
                if lacking:
                    raise DataMissing(self._missing_message(
                        f"the {split} split lacks {', '.join(lacking)}: not the {HUB_ID} layout"))
            self._rows = test, val
        return self._rows

    def check_data(self) -> None:
        """Read both splits (hub or ``data_dir``) and check the selected categories have test questions."""
        test, _ = self._data()
        present = {r.get("category") for r in test}
        if not any(c in present for c in self.categories):
            raise DataMissing(self._missing_message(
                f"no test question of {', '.join(self.categories)} in the data"))

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        test, val = self._data()
        by_category = {c: [r for r in test if r.get("category") == c] for c in self.categories}
        # the draw each question gets when its answer is unparsable (see the module docstring)
        n_options = {c: [len(clean_options(list(r["options"]))) for r in rows]
                     for c, rows in by_category.items() if rows}
        if self.guess == "reseed":
            guesses = {c: [reseed_draw(n) for n in ns] for c, ns in n_options.items()}
        else:
            guesses = official_draws(n_options) if self.guess else {}
        records: list[Record] = []
        skipped: dict[str, str] = {}
        for category in self.categories:
            tests = by_category[category]
            shots = [r for r in val if r.get("category") == category][: self.ntrain]
            task = task_name(category)
            if not tests:
                skipped[task] = f"mmlu_pro: no test questions of category {category!r} in the data"
                continue
            ctx = fewshot_header(category, shots)
            cid = context_id(task, ctx)
            chosen = take(seeded_order(len(tests), seed, task), n_samples)
            for idx in chosen:
                row = tests[idx]
                options = clean_options(list(row["options"]))
                records.append(Record(
                    context_id=cid,
                    sample_id=f"{task}/{row.get('question_id', idx)}",
                    suite=self.suite,
                    task=task,
                    context=ctx,
                    question=format_example(row, False),
                    answers=[str(row["answer"])],
                    max_new_tokens=self.max_new_tokens,
                    metric=self.metric,
                    chat_template=bool(self.params.get("chat_template", True)),
                    stop_strings=["Question:"],
                    extra={
                        "category": category,
                        "question_id": row.get("question_id"),
                        "answer_index": int(row["answer_index"]),
                        "n_options": len(options),
                        "src": row.get("src"),
                        "n_shots": len(shots),
                        **({"guess_index": guesses[category][idx]} if guesses else {}),
                    },
                ))
        if not records:
            raise DataMissing(self._missing_message("no test question in the selected categories"))
        return TaskData(records=records, skipped=skipped)

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        """100 when the extracted letter is the answer; an unparsable answer scores by ``record.metric``
        (``GUESS_METRICS``): 0, or 100 when the question's ``guess_index`` (set by ``load``) is the answer."""
        pred = extract_answer(prediction)
        if pred is not None:
            return 100.0 if pred == record.answers[0] else 0.0
        if record.metric not in GUESS_METRICS.values():
            raise KeyError(f"mmlu_pro: unknown metric {record.metric!r}; known: {', '.join(GUESS_METRICS.values())}")
        if record.metric == GUESS_METRICS[False]:
            return 0.0
        return 100.0 if record.extra["guess_index"] == int(record.extra["answer_index"]) else 0.0

    @staticmethod
    def headline(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        """Overall accuracy, as the official script reports it (correct / answered over all categories).

        ``counts``: rows per category in the cell (the tables pass them); each category's score weighs its
        count, so the headline is the mean over the rows present (4 rows, one right: 25.0). Without
        ``counts``: the full test set's category sizes (exact for a full run). A category without a
        weight makes it the plain mean of the categories.
        """
        if not task_scores:
            return 0.0
        weights = counts if counts is not None else {task_name(c): n for c, n in FULL_TEST_COUNTS.items()}
        w: dict[str, int] = {}
        for t in task_scores:
            x = weights.get(t, weights.get(category_of(t)))
            if not x:  # a category without a weight: plain mean, nothing dropped
                return sum(task_scores.values()) / len(task_scores)
            w[t] = x
        return sum(v * w[t] for t, v in task_scores.items()) / sum(w.values())
