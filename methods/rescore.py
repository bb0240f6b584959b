"""Re-score every N decode steps: a decode rule for any key-only method (docs/methods.md, "Re-scoring while
decoding").

A method whose score needs only the cached keys (it declares neither ``needs_queries`` nor ``needs_rotary``:
KeyDiff, NestedKV, KNorm) can score the cache again at any time. ``Rescore`` does so while the question and the
answer are decoded: after every ``every``-th decode step, each KV head's valid entries (the kept context
entries and the appended tokens, in position order) are scored with the method's own ``score`` on their cached
keys, and a head holding more entries than its budget keeps its top-scoring ones, the spans the method protects
(``protected``: NestedKV's sinks) first, with the shared budget code (``methods.budget.select``, uniform within
the head). Between two re-scorings the cache grows by at most ``every - 1`` entries per head; ``every = 1`` keeps
it at the budget after every step. This is kvpress's ``DecodingPress`` (``compression_steps``, default 10) on
the harness's budgets: a head's budget is what compression gave it (``decode_budget=fixed``) or grows with the
tokens seen (``decode_budget=ratio``, ``DecodeRule.limit``).

``RescoreOnDecode`` is the mixin a key-only method class takes to accept the parameter ``decode_rescore_every``
(0, the default: prefill-only, and absent from the recorded parameters so existing run ids stay as they were).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from methods.base import DecodeRule, LayerInputs, Method
from methods.budget import select


@dataclass
class Rescore(DecodeRule):
    """One configuration's re-scoring rule (one batch row); state per layer."""

    method: Method  # the key-only method whose ``score`` ranks the cached entries
    every: int  # re-score after every ``every``-th decode step (>= 1)
    budget: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H_kv,) entries each head keeps
    slots: dict[int, int] = field(default_factory=dict)  # layer -> context slots (entries before the appended ones)
    steps: dict[int, int] = field(default_factory=dict)  # layer -> decode steps so far

    needs_kv = True

    def __post_init__(self) -> None:
        check_key_only(self.method)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"decode_rescore_every must be a positive integer, got {self.every!r}")

    def start(self, layer, scores, positions, valid, first_position) -> None:
        self.budget[layer] = valid.sum(-1)
        self.slots[layer] = valid.shape[-1]
        self.steps[layer] = 0

    def evict(self, layer, valid, keys=None, values=None) -> torch.Tensor:
        self.steps[layer] = self.steps.get(layer, 0) + 1
        if self.steps[layer] % self.every:
            return valid
        if keys is None:
            raise ValueError("Rescore needs the cached keys at evict (the engine gives them to rules with needs_kv)")
        limit = self.limit(self.budget[layer], valid.shape[-1] - self.slots.get(layer, valid.shape[-1]))
        counts = valid.sum(-1)
        if not bool((counts > limit).any()):
            return valid
        valid = valid.clone()
        for h in range(valid.shape[0]):
            cap = int(limit[h])
            if int(counts[h]) <= cap:
                continue
            slots = torch.nonzero(valid[h]).flatten()
            kept = self.rank(layer, keys[h, slots], values[h, slots] if values is not None else keys[h, slots], cap)
            valid[h] = False
            valid[h, slots[kept]] = True
        return valid

    def rank(self, layer: int, keys: torch.Tensor, values: torch.Tensor, cap: int) -> torch.Tensor:
        """Of one head's ``c`` entries (keys, values: (c, d), in position order), the indices of the ``cap`` it
        keeps: the method's scores over exactly these entries, its protected spans first."""
        c = keys.shape[0]
        inputs = LayerInputs(layer_idx=layer, keys=keys[None], values=values[None], queries=None,
                             scaling=float(keys.shape[-1]) ** -0.5)
        scores = self.method.score(inputs).float()  # (1, c)
        return select(scores, cap, "uniform", protected=self.method.protected(c, cap))[0]


def check_key_only(method: Method) -> None:
    """A ValueError unless ``method`` scores from the cached keys alone (no queries, no rotary embedding)."""
    if method.needs_queries or method.needs_rotary:
        need = " and ".join(what for what, flag in (("the prefill's queries", method.needs_queries),
                                                     ("the rotary embedding", method.needs_rotary)) if flag)
        raise ValueError(f"{method.name}: decode_rescore_every needs a key-only method, but this one scores with "
                         f"{need}")


@dataclass
class RescoreOnDecode:
    """Mixin of key-only method classes: the parameter ``decode_rescore_every`` (keyword-only; 0: prefill-only)
    declares ``Rescore`` as the method's decode rule."""

    decode_rescore_every: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        every = self.decode_rescore_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"decode_rescore_every must be an integer >= 0 (0: no re-scoring), got {every!r}")

    def decode_rule(self, n: int, n_kept: int) -> Rescore | None:
        if not self.decode_rescore_every:
            return None
        assert isinstance(self, Method), "RescoreOnDecode is a mixin of Method classes"
        return Rescore(method=self, every=self.decode_rescore_every)

    def params(self) -> dict:
        """As recorded in rows; ``decode_rescore_every`` only when set, so the run ids of prefill-only
        configurations are those they had before the rule existed."""
        out = super().params()  # type: ignore[misc]  # a mixin: Method.params comes later in the MRO
        if not out.get("decode_rescore_every"):
            out.pop("decode_rescore_every", None)
        return out
