"""What every suite provides: records from its data, and its official metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tasks.records import Record


class DataMissing(RuntimeError):
    """A task's data could not be read. The message says which files to fetch and where to put them."""


@dataclass
class TaskData:
    records: list[Record]
    skipped: dict[str, str] = field(default_factory=dict)  # sub-task -> reason (what to fetch, where)


class Task:
    """Base class of a suite. Subclasses register themselves with ``@register("name")``.

    ``params`` are the task config's values (conf/task/<name>.yaml minus ``name``), e.g. ``length``,
    ``tasks`` (sub-task subset), ``data_dir``.
    """

    suite: ClassVar[str] = ""
    # labels of length_bucket values in summaries, tables and figures (LongBench-E: {0: "0-4k", ...}); read from
    # the class by ``tasks.bucket_names`` (never by constructing the suite)
    bucket_names: ClassVar[dict[int, str]] = {}
    # true for suites whose answers are long generations (chain of thought): the tables then add output length,
    # hit-the-limit share, time to first token and decode speed per method (``tasks.long_generation``)
    long_generation: ClassVar[bool] = False

    def __init__(self, **params: Any):
        self.params = params

    # ------------------------------------------------------------------ data
    def max_length(self) -> int | None:
        """Prompt + answer token length the task needs (checked against the model before loading it)."""
        return self.params.get("length")

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        """Records for up to ``n_samples`` samples per sub-task (None: all), deterministic in ``seed``.

        Sample ``i`` of a sub-task must not depend on ``n_samples`` (so raising ``n_samples`` resumes).
        """
        raise NotImplementedError

    def check_data(self) -> None:
        """Check, before any model loads, that the suite's data can be read (no tokenizer needed).

        Raise :class:`DataMissing` with one message that says what to fetch and where when none of the selected
        sub-tasks can be read. Sub-tasks that can be read may still be reported as skipped by ``load``. Suites
        whose data is generated or checked only by ``load`` keep this default (nothing to check).
        """

    # ---------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        """The official metric of ``record.metric`` for one prediction, on a 0..100 scale."""
        raise NotImplementedError

    def extra_scores(self, record: Record, prediction: str) -> dict[str, float]:
        """Further official figures of one prediction besides ``score`` (0..100), written as ``score_<name>``
        columns (SQuAD's exact match next to its F1). Default: none."""
        return {}

    @staticmethod
    def headline(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        """The suite's headline number from per-sub-task scores (default: unweighted mean).

        A staticmethod: the tables read it from the class (``tasks.headline_rule``) without constructing the
        suite, whose constructor may need parameters; ``register`` refuses a suite whose ``headline`` is not one.
        ``counts`` (sub-task -> samples behind its score) is what the tables pass; suites whose official number
        weights samples (MMLU, MMLU-Pro) use it, others ignore it.
        """
        return sum(task_scores.values()) / max(1, len(task_scores))


_HUB: bool | None = None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (probed once per process; HF_HUB_OFFLINE=1 says no).

    ``tasks.hub`` calls it before any hub request: an offline machine reads the local Hugging Face cache, or reports
    missing data at once, instead of waiting on retries for every file."""
    global _HUB
    if _HUB is None:
        import os
        import socket
        from urllib.parse import urlparse

        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or os.environ.get(
            "HF_DATASETS_OFFLINE", "0"
        ) not in ("0", "", "false", "False"):
            _HUB = False
        else:
            url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
            port = url.port or (80 if url.scheme == "http" else 443)
            try:
                socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
                _HUB = True
            except OSError:
                _HUB = False
    return _HUB

