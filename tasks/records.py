"""The protocol's unit of work: one task sample (docs/protocol.md, "One sample")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """One question about one context.

    Several records may share a ``context_id``: the context is then prefilled and compressed once and every
    question of it is answered from the same compressed cache.
    """

    context_id: str  # unique within a task; records with equal ids must have equal ``context``
    sample_id: str  # unique within a task run: "<task>/<index>" or "<task>/<index>/<question>"
    suite: str  # "ruler", "longbench", ...
    task: str  # sub-task: "niah_single_1", "hotpotqa", ...
    context: str  # the text that is prefilled and compressed (instructions before the haystack included)
    question: str  # everything after the context in the user turn
    answers: list[str]  # references
    max_new_tokens: int
    metric: str  # name of the official metric that scores this record
    answer_prefix: str = ""  # appended after the assistant header (RULER's "The special magic number ... is")
    chat_template: bool = True  # render with the model's chat template when it has one
    length_bucket: int | None = None  # e.g. 4096 for ruler_4k, LongBench-E bucket lower bound
    stop_strings: list[str] = field(default_factory=list)  # extra stops besides EOS ("Question:" for MMLU-Pro)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific: all_classes, depth, needle char span...
    # weight of this sample in its sub-task's mean score: the tables average ``score`` weighted by it, so a
    # metric whose official aggregate is a ratio of sums (LooGLE cloze: matches / masks over the whole task)
    # stores its per-sample ratio as ``score`` and its denominator here
    score_weight: float = 1.0
