"""Method registry: one module per compressor, each registering a small dataclass with ``@register``."""

from __future__ import annotations

import importlib
import pkgutil

from methods.base import LayerInputs, Method

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base", "budget", "attention") and not mod.name.startswith("_"):
            importlib.import_module(f"methods.{mod.name}")


def available() -> list[str]:
    _discover()
    return sorted(METHODS)


def make_method(name: str, **params) -> Method:
    _discover()
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](**params)


def compresses(name: str) -> bool:
    """Whether the registered method class ``name`` compresses the cache: its ``Method.compresses``, the class
    attribute the engine reads on the method it runs (False only for the full-cache reference). The tables and the
    regression check read result rows' method class through this. KeyError for an unknown class."""
    _discover()
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return bool(METHODS[name].compresses)


__all__ = ["LayerInputs", "Method", "METHODS", "register", "make_method", "available", "compresses"]
