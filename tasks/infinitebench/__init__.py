"""InfiniteBench (OpenBMB, arXiv 2402.13718): the suites ``infinitebench`` (the official jsonl files, from a folder
or the hub) and ``infinitebench_synth`` (passkey, number_string, kv_retrieval, math_find generated at a length).

Everything they do is described in docs/tasks/infinitebench.md. The package is split by concern:

- ``prompts``: the official templates, template fields, labels and max new tokens (``src/prompt.py``,
  ``src/eval_utils.py``), and kvpress' layout;
- ``scorers``: the official scorer (``src/compute_scores.py``), ported in behaviour;
- ``synth``: the synthetic generators (``data/construct_synthetic_dataset.py``);
- this module: the two suites (data lookup, records, truncation cap, haystack sizing with ``tasks.prompts``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.hub import HubUnavailable, error_line, hub_file
from tasks.infinitebench.prompts import (
    KVPRESS_EXTRA_NEW_TOKENS,
    MAX_NEW_TOKENS,
    PROMPT_STYLES,
    kvpress_prompt,
    official_label,
    split_prompt,
)
from tasks.infinitebench.scorers import METRIC, score_prediction
from tasks.infinitebench.synth import MATH_FIND_KINDS, SYNTH_TASKS, synth_generator
from tasks.prompts import largest_fitting, prompt_tokens
from tasks.records import Record

HUB_ID = "xinrongzhang2022/InfiniteBench"
HUB_URL = f"https://huggingface.co/datasets/{HUB_ID}"

ENGLISH_TASKS = [
    "passkey",
    "number_string",
    "kv_retrieval",
    "longbook_qa_eng",
    "longbook_choice_eng",
    "longbook_sum_eng",
    "longdialogue_qa_eng",
    "code_debug",
    "code_run",
    "math_find",
]
ALL_TASKS = ENGLISH_TASKS + ["longbook_qa_chn"]  # the Chinese QA on request

DEFAULT_TRUNCATE_TO = 40_000
DEFAULT_SYNTH_SAMPLES = 100


def _iter_jsonl(path: Path, limit: int | None):
    count = 0
    with open(path, encoding="utf8") as fin:
        for line in fin:
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            yield json.loads(line)
            count += 1


@register("infinitebench")
class InfiniteBench(Task):
    """Params: ``tasks`` (subset, default the 10 English tasks; ``longbook_qa_chn`` on request), ``data_dir``
    (a folder of the official ``<task>.jsonl`` files, or a clone of the official repo holding ``data/<task>.jsonl``;
    null: ``hub`` through ``tasks.hub``, offline the local Hugging Face cache; null disables it), ``truncate_to``
    (context cap in tokens, default 40000), ``prompt_style`` (``gpt4`` chat prompts, default; ``yarn_mistral`` raw
    completion prompts; ``kvpress`` kvpress' layout), ``extra_new_tokens`` (added to the official max new tokens).
    ``infinitebench_synth`` adds ``length`` and generates the synthetic tasks locally. See
    docs/tasks/infinitebench.md."""

    synthetic = False
    valid_tasks = ALL_TASKS
    default_tasks = ENGLISH_TASKS

    def __init__(self, **params: Any):
        super().__init__(**params)
        tasks = params.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        tasks = list(tasks) if tasks else list(self.default_tasks)
        unknown = [t for t in tasks if t not in self.valid_tasks]
        if unknown:
            raise ValueError(
                f"unknown {type(self).__name__} task(s) {unknown}; valid: {', '.join(self.valid_tasks)}"
            )
        self.tasks = tasks
        self.prompt_style = params.get("prompt_style") or "gpt4"
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {self.prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
        extra_new = params.get("extra_new_tokens")
        if extra_new is None:
            extra_new = KVPRESS_EXTRA_NEW_TOKENS if self.prompt_style == "kvpress" else 0
        self.extra_new_tokens = int(extra_new)
        if self.extra_new_tokens < 0:
            raise ValueError(f"extra_new_tokens must be >= 0, got {extra_new!r}")
        self.data_dir = params.get("data_dir")
        self.hub = params.get("hub", HUB_ID)  # null disables the hub
        self._hub_down: str | None = None
        self._files: tuple[dict[str, Path], dict[str, str]] | None = None  # _resolve()
        self._contexts: dict[str, str] = {}
        cap = params.get("truncate_to", DEFAULT_TRUNCATE_TO)
        self.truncate_to = int(cap) if cap else None
        if self.truncate_to is not None and self.truncate_to <= 0:
            raise ValueError(f"truncate_to must be a positive number of tokens or null, got {cap!r}")

    def max_length(self) -> int | None:
        return None  # contexts are cut in the middle to truncate_to / the model's window by the harness

    # ------------------------------------------------------------------ data
    def _fetch_hint(self, name: str) -> str:
        target = (f"{self.data_dir}/{name}.jsonl" if self.data_dir
                  else f"<dir>/{name}.jsonl and set task.data_dir=<dir>")
        return (
            f"Fetch {name}.jsonl from {HUB_URL} and put it at {target} (a clone of the official repo after its "
            f"scripts/download_dataset.sh, <repo>/data/{name}.jsonl, is read with task.data_dir=<repo> too), or fill "
            f"the Hugging Face cache on a machine with network (`hf download {HUB_ID} --repo-type dataset`; "
            f"docs/data_offline.md)."
        )

    def _where(self) -> str:
        return f"data_dir={self.data_dir}" if self.data_dir else f"hub {self.hub}" if self.hub else "nowhere"

    def _missing(self, task: str, why: str) -> str:
        return (f"InfiniteBench {task}: {task}.jsonl could not be read from {self._where()} ({why}). "
                f"{self._fetch_hint(task)}")

    def _task_file(self, task: str) -> Path:
        """The task's jsonl; raises ``DataMissing`` with the reason only (``_missing`` makes the message)."""
        if self.data_dir:
            base = Path(str(self.data_dir)).expanduser()
            for path in (base / f"{task}.jsonl", base / "data" / f"{task}.jsonl"):  # hub files / the official repo
                if path.is_file():
                    return path
            raise DataMissing(f"neither {task}.jsonl nor data/{task}.jsonl under {base}")
        if not self.hub:
            raise DataMissing("no data_dir and hub disabled")
        if self._hub_down:
            raise DataMissing(self._hub_down)
        try:
            return hub_file(str(self.hub), f"{task}.jsonl")
        except HubUnavailable:  # offline and this file not cached (the next one may be)
            raise
        except Exception as exc:  # noqa: BLE001 - the hub failed, or this file is not in the repo
            from huggingface_hub.errors import RemoteEntryNotFoundError

            why = error_line(exc)
            if not isinstance(exc, RemoteEntryNotFoundError):
                self._hub_down = why  # the hub itself failed: do not try again for every task
            raise DataMissing(why) from exc

    def _resolve(self) -> tuple[dict[str, Path], dict[str, str]]:
        """``({task: its jsonl}, {task: why it cannot be read})`` for the selected tasks, looked up once."""
        if self._files is None:
            files: dict[str, Path] = {}
            missing: dict[str, str] = {}
            for task in self.tasks:
                try:
                    files[task] = self._task_file(task)
                except DataMissing as exc:
                    missing[task] = str(exc)
            self._files = files, missing
        return self._files

    def check_data(self) -> None:
        """Raise ``DataMissing`` (one message) when none of the selected tasks' jsonl files can be read."""
        files, missing = self._resolve()
        if not files:
            first = next(iter(missing))
            more = f"; the same for {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataMissing(
                f"InfiniteBench: none of the selected tasks ({', '.join(missing)}) could be read from {self._where()} "
                f"({first}: {missing[first]}{more}). {self._fetch_hint('<task>')}"
            )

    def make_record(self, task: str, eg: dict, index: int, length_bucket: int | None = None,
                    extra: dict | None = None, intern: bool = False) -> Record:
        if self.prompt_style == "kvpress":
            context, question, answer_prefix = kvpress_prompt(task, eg)
        else:
            (context, question), answer_prefix = split_prompt(task, eg, self.prompt_style), ""
        digest = hashlib.sha1(f"{self.prompt_style}\0{context}".encode()).hexdigest()[:16]
        if intern:
            context = self._contexts.setdefault(digest, context)  # one string per book, however many questions
        return Record(
            context_id=f"{task}/{digest}",
            sample_id=f"{task}/{index}",
            suite=self.suite,
            task=task,
            context=context,
            question=question,
            answers=official_label(task, eg),
            max_new_tokens=MAX_NEW_TOKENS[task] + self.extra_new_tokens,
            metric=METRIC[task],
            answer_prefix=answer_prefix,
            chat_template=self.prompt_style != "yarn_mistral",
            length_bucket=length_bucket,
            extra={"id": eg.get("id", index), "prompt_style": self.prompt_style, **(extra or {})},
        )

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        """The first ``n_samples`` lines of each ``<task>.jsonl`` in file order (the official order; ``seed`` is
        not used for hub data)."""
        self._contexts = {}
        records: list[Record] = []
        files, missing = self._resolve()
        for task, path in files.items():
            for i, eg in enumerate(_iter_jsonl(path, n_samples)):
                records.append(self.make_record(task, eg, i, extra={"truncate_to": self.truncate_to}, intern=True))
        return TaskData(records, {task: self._missing(task, why) for task, why in missing.items()})

    # ---------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        return score_prediction(record.metric, prediction, record.answers)


@register("infinitebench_synth")
class InfiniteBenchSynth(InfiniteBench):
    """passkey, number_string, kv_retrieval, math_find generated at ``length`` tokens with the model's tokenizer:
    the haystack is the largest that keeps prompt tokens (``tasks.prompts.prompt_tokens``, what the engine feeds)
    + max_new_tokens <= length."""

    synthetic = True
    valid_tasks = SYNTH_TASKS
    default_tasks = SYNTH_TASKS

    def __init__(self, **params: Any):
        super().__init__(**params)
        if not params.get("length"):
            raise ValueError("infinitebench_synth needs length (prompt + answer tokens), e.g. length=4096")
        self.length = int(params["length"])
        self.default_samples = int(params.get("default_samples") or DEFAULT_SYNTH_SAMPLES)
        self._size_guess: dict[str, int] = {}

    def max_length(self) -> int | None:
        return self.length

    def check_data(self) -> None:
        """Nothing to check: the samples are generated locally."""

    def make_synth_record(self, tokenizer, task: str, seed: int, index: int) -> Record:
        make, minimum, extra = synth_generator(task, seed, index)
        budget = self.length - MAX_NEW_TOKENS[task] - self.extra_new_tokens
        built: dict[int, tuple[Record, int]] = {}  # size -> (record, its prompt tokens)

        def count(size: int) -> int:
            if size not in built:
                eg = make(size)
                info = {k: v for k, v in extra.items() if k != "needle"}
                info.update(haystack_size=size, **{k: v for k, v in eg.items() if k == "target_index"})
                record = self.make_record(task, eg, index, length_bucket=self.length, extra=info)
                built[size] = record, prompt_tokens(tokenizer, record)
            return built[size][1]

        guess = self._size_guess.get(task)
        if guess is None:
            guess = self._first_guess(count, minimum, budget)
        size = largest_fitting(count, budget, minimum, guess)
        if size is None:
            raise ValueError(f"infinitebench_synth {task}: length {self.length} is too small for the prompt")
        self._size_guess[task] = size  # only a starting point: the search result does not depend on it
        record, n_prompt = built[size]
        record.context_id = f"{task}/{self.length}/{seed}/{index}"
        record.extra["n_prompt_tokens"] = n_prompt
        record.extra["seed"] = seed
        return record

    @staticmethod
    def _first_guess(count: Callable[[int], int], minimum: int, budget: int) -> int:
        base = count(minimum)
        per_item = max((count(minimum + 64) - base) / 64, 0.5)
        return max(minimum, minimum + int((budget - base) / per_item))

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        n = self.default_samples if n_samples is None else n_samples
        records = [self.make_synth_record(tokenizer, task, seed, i) for task in self.tasks for i in range(n)]
        return TaskData(records, {})


__all__ = [
    "InfiniteBench", "InfiniteBenchSynth", "ENGLISH_TASKS", "ALL_TASKS", "SYNTH_TASKS", "MATH_FIND_KINDS",
    "MAX_NEW_TOKENS", "METRIC", "PROMPT_STYLES", "score_prediction",
]
