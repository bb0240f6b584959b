"""Task registry: one module per suite; ``@register`` makes a suite available to configs by name."""

from __future__ import annotations

import importlib
import pkgutil

from tasks.base import DataMissing, Task, TaskData

SUITES: dict[str, type[Task]] = {}


def register(name: str):
    def wrap(cls: type[Task]) -> type[Task]:
        SUITES[name] = cls
        cls.suite = cls.suite or name
        return cls

    return wrap


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"tasks.{mod.name}")


def make_task(suite: str, **params) -> Task:
    _discover()
    if suite not in SUITES:
        raise KeyError(f"unknown suite {suite!r}; available: {', '.join(sorted(SUITES))}")
    return SUITES[suite](**params)


__all__ = ["DataMissing", "Task", "TaskData", "SUITES", "register", "make_task"]
