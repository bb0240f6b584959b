"""One configuration of a run: a method with its parameters at one budget (``Cell``), and its identity.

``make_plan`` (harness/plan.py) builds the cells of a run from the config; ``bind`` fixes each cell's
``run_id`` and ``config_json`` (the resolved configuration the rows carry, docs/results.md); the engine
(``harness/configstep.py``) selects, compresses and decodes one cell at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from methods.base import Method


@dataclass
class Cell:
    """One configuration of a sweep: a method (with its parameters) at one budget."""

    label: str  # the method config's name (conf/method/<label>.yaml)
    method: Method
    r: float | None
    budget_tokens: int | None
    policy: str
    safeguard: float
    query_aware: bool = False
    decode_budget: str = "fixed"  # the cache budget while decoding, for a method with a decode rule (fixed | ratio)
    run_id: str = ""
    config_json: str = ""

    @property
    def score_key(self) -> str:
        """Cells whose methods have equal class and parameters share one set of scores."""
        return f"{self.method.name}:{json.dumps(self.method.params(), sort_keys=True, default=str)}"

    def identity(self) -> dict:
        """What defines the cell's results; ``decode_budget`` only when it is not the default ``fixed``, so the run
        ids of configurations from before it existed stay as they were."""
        out = {
            "method": self.label,
            "method_class": self.method.name,
            "method_params": self.method.params(),
            "r": self.r,
            "budget_tokens": self.budget_tokens,
            "budget_policy": self.policy,
            "safeguard": self.safeguard,
            "query_aware": self.query_aware,
        }
        if self.decode_budget != "fixed":
            out["decode_budget"] = self.decode_budget
        return out

    def bind(self, run_context: dict) -> "Cell":
        """Fix run_id = hash of the resolved configuration (minus output paths and sample counts)."""
        resolved = {**run_context, **self.identity()}
        self.config_json = json.dumps(resolved, sort_keys=True, default=str)
        self.run_id = hashlib.sha1(self.config_json.encode()).hexdigest()[:16]
        return self
