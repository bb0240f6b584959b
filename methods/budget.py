"""Budgets: how many positions each KV head keeps, and which (docs/methods.md, "Budget policies").

Shared policy for every score-based method; no method has budget code of its own.
"""

from __future__ import annotations

import math

import torch


def n_kept_for(n: int, r: float | None = None, budget_tokens: int | None = None) -> int:
    """Per-head budget: ``max(1, floor(n * (1 - r)))`` (kvpress), or ``min(n, budget_tokens)``."""
    if budget_tokens is not None:
        if budget_tokens < 1:
            raise ValueError(f"budget_tokens must be >= 1, got {budget_tokens}")
        return min(n, int(budget_tokens))
    if r is None or not (0.0 <= r < 1.0):
        raise ValueError(f"r must be in [0, 1), got {r}")
    # exactly kvpress's int(n * (1 - r)) on floats (n=20, r=0.9 -> 1), so budgets match its leaderboard
    return max(1, math.floor(n * (1.0 - r)))


def _protect(scores: torch.Tensor, protected: tuple[int, int]) -> torch.Tensor:
    first, last = protected
    n = scores.shape[-1]
    if first <= 0 and last <= 0:
        return scores
    scores = scores.clone()
    if first > 0:
        scores[..., : min(first, n)] = float("inf")
    if last > 0:
        scores[..., max(0, n - last) :] = float("inf")
    return scores


def _topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores of a 1-D tensor, ties to the earlier position, sorted ascending."""
    # stable descending sort gives the deterministic tie-break that torch.topk does not promise
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return torch.sort(order).values


def select(
    scores: torch.Tensor,
    n_kept: int,
    policy: str = "uniform",
    safeguard: float = 0.20,
    protected: tuple[int, int] = (0, 0),
) -> list[torch.Tensor]:
    """Kept context positions per KV head of one layer.

    scores: (H_kv, n). Returns H_kv sorted int64 index tensors.
    - uniform: every head keeps its top ``n_kept``.
    - adaptive (Ada-KV head-wise memory competition): the layer budget ``H_kv * n_kept`` is shared; each
      head first keeps its top ``max(1, floor(safeguard * n_kept))``, the rest of the budget goes to the
      highest remaining scores over all (head, position) pairs of the layer.
    Protected spans are scored +inf, so they are kept first and count against the budget.
    """
    h, n = scores.shape
    n_kept = min(n_kept, n)
    scores = _protect(scores.float(), protected)
    if n_kept >= n:
        full = torch.arange(n, device=scores.device)
        return [full.clone() for _ in range(h)]
    if policy == "uniform":
        return [_topk_sorted(scores[i], n_kept) for i in range(h)]
    if policy != "adaptive":
        raise ValueError(f"unknown budget policy {policy!r}; choose uniform or adaptive")
    guard = min(n_kept, max(1, math.floor(safeguard * n_kept)))
    keep = torch.zeros(h, n, dtype=torch.bool, device=scores.device)
    for i in range(h):
        keep[i, _topk_sorted(scores[i], guard)] = True
    remaining = h * n_kept - h * guard
    if remaining > 0:
        # rank only the pairs not yet kept (masking kept ones with -inf would let a kept pair be picked again
        # when a method scores positions -inf, leaving the layer under budget)
        free = torch.nonzero(~keep.flatten()).flatten()
        # stable sort over the flattened (head, position) pairs: ties go to the lower head, then position
        order = torch.sort(scores.flatten()[free], descending=True, stable=True).indices[:remaining]
        keep.view(-1)[free[order]] = True
    return [torch.nonzero(keep[i]).flatten() for i in range(h)]
