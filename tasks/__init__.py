"""Task registry: one module per suite; ``@register`` makes a suite available to configs by name.

What the tables need of a suite, its headline rule and its length-bucket labels, is read from the registered
class (``headline_rule``, ``bucket_names``), never by constructing it: a suite's constructor may need parameters
(``infinitebench_synth`` its ``length``) or data.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable

from tasks.base import DataMissing, Task, TaskData

SUITES: dict[str, type[Task]] = {}

Headline = Callable[[dict[str, float], "dict[str, int] | None"], float]  # (task -> score, task -> n) -> score


def register(name: str):
    def wrap(cls: type[Task]) -> type[Task]:
        _static_headline(cls, name)  # refused at import, not when a table is built
        SUITES[name] = cls
        cls.suite = cls.suite or name
        return cls

    return wrap


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"tasks.{mod.name}")


def make_task(suite: str, **params) -> Task:
    return suite_class(suite)(**params)


def suite_class(suite: str) -> type[Task]:
    """The registered class of ``suite`` (not constructed); KeyError naming the registered suites."""
    _discover()
    if suite not in SUITES:
        raise KeyError(f"unknown suite {suite!r}; available: {', '.join(sorted(SUITES))}")
    return SUITES[suite]


def _static_headline(cls: type[Task], name: str) -> Callable:
    raw = inspect.getattr_static(cls, "headline")
    if not isinstance(raw, staticmethod):
        raise TypeError(f"suite {name!r} ({cls.__name__}): headline must be a @staticmethod "
                        f"(task_scores, counts=None) -> float, so that the tables can read it without "
                        f"constructing the suite (tasks/base.py, Task.headline)")
    return raw.__func__


def headline_rule(suite: str) -> Headline:
    """``fn(task_scores, counts)``: the suite's headline (``Task.headline``, a staticmethod of its class), read
    without constructing the suite. ``counts`` (sub-task -> samples behind its score) is passed on when the
    headline takes it. An unknown suite is a KeyError naming the registered ones.

    >>> headline_rule("ruler")({"vt": 100.0, "cwe": 50.0}, None)
    75.0
    """
    cls = suite_class(suite)
    fn = _static_headline(cls, suite)
    takes_counts = "counts" in inspect.signature(fn).parameters

    def rule(scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        return fn(scores, counts=counts) if takes_counts else fn(scores)

    return rule


def bucket_names(suite: str) -> dict[int, str]:
    """The suite's labels of its ``length_bucket`` values (``Task.bucket_names``; {} for plain "4k" labels), read
    from its class. KeyError for an unknown suite."""
    return dict(suite_class(suite).bucket_names or {})


__all__ = ["DataMissing", "Task", "TaskData", "SUITES", "register", "make_task", "suite_class", "headline_rule",
           "bucket_names"]


def long_generation(suite: str) -> bool:
    """Whether the suite's answers are long generations (``Task.long_generation``, read from its class): the
    tables then report output length and decode speed next to the score. False for a suite the registry does
    not know."""
    try:
        return bool(suite_class(suite).long_generation)
    except KeyError:
        return False
