"""RULER as kvpress ships it prebuilt: the hub set ``simonjegou/ruler`` (configs ``4096``, ``8192``, ``16384``).

kvpress (NVIDIA/kvpress ``evaluation/benchmarks/ruler/``) generated the 13 RULER tasks once with NVIDIA/RULER's
scripts and the ``meta-llama/Meta-Llama-3.1-8B`` tokenizer, and published them with one row per sample and the
columns ``context``, ``question``, ``answer_prefix``, ``answer`` (a list of references), ``task`` and
``max_new_tokens`` (split ``test``). This suite reads those rows as they are, so numbers are comparable with the
kvpress leaderboard; ``ruler`` (tasks/ruler.py) instead generates RULER with the evaluated model's tokenizer at
any length.

Data, first source that can be read (``length`` is the config: 4096, 8192 or 16384); ``<dir>`` is ``data_dir``:

- the hub layout ``<dir>/<length>/test-*.parquet`` (what ``hf download simonjegou/ruler --repo-type dataset
  --local-dir <dir>`` writes), also with ``data_dir`` naming the config folder itself (``<dir>/4096`` holding
  ``test-*.parquet``), or one file ``<dir>/<length>.parquet`` / ``.jsonl`` / ``.json`` (``Dataset.to_parquet``,
  ``to_json``), also under ``<dir>/data/``;
- a ``save_to_disk`` copy (``Dataset``: ``state.json`` + ``data-*.arrow``; ``DatasetDict``: ``dataset_dict.json`` +
  ``test/``) at ``<dir>/<length>/``, or at ``<dir>`` when that folder is named after the config or its
  ``dataset_info.json`` names it (a saved copy of another config is never read as this one);
- ``data_dir: null``: the hub (``hub``, default ``simonjegou/ruler``; null disables it) through
  ``tasks.hub.hub_dataset``: offline, the local Hugging Face cache (docs/data_offline.md), else a fast message.

Records: ``context`` / ``question`` / ``answer_prefix`` verbatim; rendered with the model's chat template
(``chat_template: true``, the kvpress setting) by the harness protocol: the context at the start of the user
turn, the question after it in the same turn, the answer prefix after the assistant header. (kvpress's pipeline
closes the user turn after the context and appends the question after the assistant header; the harness keeps
the question inside the user turn, as for every suite.) ``max_new_tokens`` from the row; ``length_bucket`` = the
config length; ``sample_id`` = ``<task>/<i>`` with ``i`` the row's index among that task's rows in file order
(stable whatever the seed or ``n_samples``). ``n_samples`` per task is taken as a prefix of a fixed-seed
permutation of the task's rows (``tasks.data.seeded_order``), so sample ``i`` stays when ``n_samples`` grows.

The contexts were sized with Llama 3.1's tokenizer: with another tokenizer a prompt can be longer than the
config length; the harness then cuts the context in the middle to the model's window (``truncated`` in rows).

Metric: NVIDIA RULER's, imported from tasks/ruler.py (``string_match_part`` for qa_1 / qa_2,
``string_match_all`` for the others, after ``postprocess_pred``). kvpress's ``calculate_metrics`` deletes control
characters where RULER's ``postprocess_pred`` turns them into newlines; both only affect predictions holding
control characters inside a reference.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from tasks.records import Record
from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.data import context_id, find_local, hub_rows, read_many, read_saved, seeded_order, take
from tasks.hub import HubUnavailable, error_line
from tasks.ruler import ALL_TASKS, METRICS, TOKENS_TO_GENERATE, metric_of, task_family

HUB_ID = "simonjegou/ruler"
HUB_URL = f"https://huggingface.co/datasets/{HUB_ID}"
CONFIGS = (4096, 8192, 16384)
COLUMNS = ("context", "question", "answer_prefix", "answer", "task", "max_new_tokens")


def _answers(value: Any) -> list[str]:
    """The ``answer`` column as a list of strings (parquet arrays and jsonl lists; a list's repr as a string)."""
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = ast.literal_eval(s)
                if isinstance(parsed, (list, tuple)):
                    return [str(v) for v in parsed]
            except (ValueError, SyntaxError):
                pass
        return [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


@register("ruler_kvpress")
class RulerKvpress(Task):
    """Params: ``length`` (4096, 8192 or 16384: the hub config), ``tasks`` (subset; null: every task in the data),
    ``data_dir`` (null: hub), ``hub`` (default ``simonjegou/ruler``; null disables it), ``chat_template`` (true)."""

    suite = "ruler_kvpress"

    def __init__(self, **params: Any):
        super().__init__(**params)
        length = params.get("length", 4096)
        try:
            self.length = int(length)
        except (TypeError, ValueError):
            raise ValueError(f"ruler_kvpress: length must be one of {', '.join(map(str, CONFIGS))}, got {length!r}") from None
        if self.length not in CONFIGS:
            raise ValueError(f"ruler_kvpress: length must be one of {', '.join(map(str, CONFIGS))} (the configs of "
                             f"{HUB_ID}), got {self.length}")
        tasks = params.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        self.tasks = [str(t) for t in tasks] if tasks else None
        unknown = [t for t in (self.tasks or []) if t not in ALL_TASKS]
        if unknown:
            raise ValueError(f"ruler_kvpress: unknown task(s) {unknown}; valid: {', '.join(ALL_TASKS)}")
        self.data_dir = params.get("data_dir")
        self.hub = params.get("hub", HUB_ID)
        self.chat_template = bool(params.get("chat_template", True))
        self._rows: list[dict] | None = None  # rows(), read once

    def max_length(self) -> int | None:
        return self.length

    # ------------------------------------------------------------------------------------------ data
    @property
    def config(self) -> str:
        return str(self.length)

    def missing_message(self, why: str) -> str:
        where = os.path.expanduser(str(self.data_dir)) if self.data_dir else "<data_dir>"
        c = self.config
        return (
            f"ruler_kvpress {c}: kvpress's RULER set could not be read ({why}). Download {HUB_URL} (config {c}: "
            f"{c}/test-*.parquet, e.g. `hf download {HUB_ID} --repo-type dataset --local-dir {where}`) "
            f"so that {where}/{c}/test-00000-of-00001.parquet exists, or put one file {where}/{c}.parquet or "
            f"{where}/{c}.jsonl with the columns {', '.join(COLUMNS)}; then set task.data_dir={where}. Or fill the "
            f"Hugging Face cache on a machine with network (the same `hf download` without --local-dir), which is "
            f"read offline with task.data_dir=null (docs/data_offline.md)."
        )

    def _hub_rows(self) -> list[dict]:
        try:
            return hub_rows(str(self.hub), self.config, "test")
        except (ValueError, HubUnavailable):  # no config of that name (or only the data_dir load was cached):
            return hub_rows(str(self.hub), None, "test", data_dir=self.config)  # the folder of that length

    def _local_rows(self, data_dir: str) -> tuple[list[dict], str]:
        """``(rows, source)`` from the layouts of the module docstring; raises ``DataMissing`` for any other."""
        c, base = self.config, Path(data_dir)
        files = find_local(base, c, subdirs=("", "data"))
        if not files and base.name == c:  # data_dir is the config folder itself: <dir>/4096/test-*.parquet
            files = find_local(base.parent, c, subdirs=("",))
        if files:
            return read_many(files), ", ".join(files)
        for folder, named in ((base / c, True), (base / "data" / c, True), (base, base.name == c)):
            rows = read_saved(folder, "test", None if named else c)
            if rows is not None:
                return rows, str(folder)
        raise DataMissing(self.missing_message(
            f"no {c}/test-*.parquet, {c}.parquet, {c}.jsonl or save_to_disk copy of config {c} under {data_dir}"))

    def rows(self) -> list[dict]:
        """Every row of the config, in file order (read once per task object). Raises ``DataMissing`` with what to
        fetch and where."""
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows

    def check_data(self) -> None:
        """Read the rows before the model loads (``load`` reuses them); raises ``rows()``'s ``DataMissing``."""
        self.rows()

    def _read_rows(self) -> list[dict]:
        if self.data_dir:
            rows, source = self._local_rows(os.path.expanduser(str(self.data_dir)))
        else:
            if not self.hub:
                raise DataMissing(self.missing_message("no data_dir and hub disabled"))
            try:
                rows = self._hub_rows()
            except Exception as e:  # noqa: BLE001 - offline and not cached, unreachable, no such config
                raise DataMissing(self.missing_message(f"hub {self.hub}: {error_line(e)}")) from e
            source = f"{self.hub}/{self.config}"
        if not rows:
            raise DataMissing(self.missing_message(f"{source} has no rows"))
        absent = [c for c in COLUMNS if c not in rows[0]]
        if absent:
            raise DataMissing(self.missing_message(f"{source} lacks the column(s) {', '.join(absent)}"))
        return rows

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        """Records of every wanted task; data that cannot be read comes back as one ``skipped`` entry (``all``)
        with what to fetch and where (``rows()`` raises the same ``DataMissing``)."""
        try:
            rows = self.rows()
        except DataMissing as e:
            return TaskData(records=[], skipped={"all": str(e)})
        by_task: dict[str, list[dict]] = {}
        for row in rows:
            by_task.setdefault(str(row["task"]), []).append(row)
        present = [t for t in ALL_TASKS if t in by_task] + sorted(t for t in by_task if t not in ALL_TASKS)
        wanted = self.tasks or present
        records: list[Record] = []
        skipped: dict[str, str] = {}
        for task in wanted:
            task_rows = by_task.get(task)
            if not task_rows:
                skipped[task] = self.missing_message(f"no rows of task {task} (tasks present: {', '.join(present)})")
                continue
            for i in take(seeded_order(len(task_rows), seed, task), n_samples):
                records.append(self.make_record(task, i, task_rows[i]))
        return TaskData(records=records, skipped=skipped)

    def make_record(self, task: str, index: int, row: dict) -> Record:
        context = str(row["context"])
        mnt = row.get("max_new_tokens")
        max_new = int(mnt) if mnt is not None else TOKENS_TO_GENERATE.get(task_family(task), 128)
        return Record(
            context_id=context_id(task, context),
            sample_id=f"{task}/{index}",
            suite=self.suite,
            task=task,
            context=context,
            question=str(row["question"] or ""),
            answers=_answers(row["answer"]),
            max_new_tokens=max_new,
            metric=metric_of(task),
            answer_prefix=str(row.get("answer_prefix") or ""),
            chat_template=self.chat_template,
            length_bucket=self.length,
            extra={"index": index, "length": self.length, "source": "kvpress"},
        )

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        fn = METRICS.get(record.metric)
        if fn is None:
            raise KeyError(f"ruler_kvpress: unknown metric {record.metric!r}; known: {', '.join(METRICS)}")
        return 100.0 * fn(prediction, list(record.answers))


__all__ = ["RulerKvpress", "HUB_ID", "CONFIGS", "COLUMNS"]
