"""The configuration error every engine module raises (docs/errors.md lists the messages).

A module of its own, importing nothing, so that any engine module can raise it without importing the module
that validates a run (``harness/plan.py``) and the modules that plan imports in turn.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A configuration error, reported as one line before anything heavy runs."""
