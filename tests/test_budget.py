"""Budgets (docs/methods.md "Budget policies"): n_kept, uniform and adaptive selection, protected spans."""

from __future__ import annotations

import math

import pytest
import torch

from methods.budget import n_kept_for, select


@pytest.mark.parametrize(
    "n, r, expected",
    [
        (10, 0.0, 10),
        (100, 0.25, 75),
        (100, 0.75, 25),
        (7, 0.5, 3),  # floor(3.5)
        (10, 0.9, 1),  # 10 * (1 - 0.9) is 0.99999... in floats: 0 -> max(1, .)
        (20, 0.9, 1),  # kvpress: int(20 * (1 - 0.9)) = int(1.9999999999999996) = 1, not the exact 2
        (10, 0.95, 1),  # floor(0.5) = 0 -> max(1, .)
        (3, 0.95, 1),
        (1, 0.5, 1),
        (4096, 0.85, 614),  # floor(614.4)
    ],
)
def test_n_kept_ratio(n, r, expected):
    assert n_kept_for(n, r) == expected
    assert expected == max(1, int(n * (1 - r)))  # kvpress's definition, on floats


def test_n_kept_budget_tokens():
    assert n_kept_for(100, budget_tokens=5) == 5
    assert n_kept_for(3, budget_tokens=5) == 3
    assert n_kept_for(100, r=0.5, budget_tokens=7) == 7  # absolute budget wins
    with pytest.raises(ValueError):
        n_kept_for(10, budget_tokens=0)
    for bad in (None, -0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            n_kept_for(10, bad)


def test_uniform_hand_example():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2], [5.0, 1.0, 4.0, 2.0, 3.0]])
    kept = select(scores, 2, "uniform")
    assert [k.tolist() for k in kept] == [[1, 3], [0, 2]]
    # ties go to the earlier position
    kept = select(torch.ones(1, 5), 2, "uniform")
    assert kept[0].tolist() == [0, 1]


@pytest.mark.parametrize("n, r", [(10, 0.9), (10, 0.95), (7, 0.95), (50, 0.5), (64, 0.75), (33, 0.25)])
def test_uniform_keeps_exactly_n_kept_top(n, r):
    torch.manual_seed(n)
    scores = torch.randn(3, n)
    n_kept = n_kept_for(n, r)
    assert n_kept == max(1, int(n * (1 - r)))
    for h, idx in enumerate(select(scores, n_kept, "uniform")):
        assert idx.numel() == n_kept
        assert torch.equal(idx, torch.sort(idx).values)  # sorted positions
        expected = torch.topk(scores[h], n_kept).indices.sort().values
        assert torch.equal(idx, expected)


def test_adaptive_hand_example():
    # n_kept=2, safeguard 0.5 -> each head first keeps its top 1; the 2 remaining slots of the layer budget
    # (2 heads x 2) go to the highest remaining scores: both in head 0.
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    kept = select(scores, 2, "adaptive", safeguard=0.5)
    assert [k.tolist() for k in kept] == [[0, 1, 2], [0]]
    # with safeguard 1.0 it is the uniform policy
    kept = select(scores, 2, "adaptive", safeguard=1.0)
    assert [k.tolist() for k in kept] == [[0, 1], [0, 1]]


@pytest.mark.parametrize("n, r, safeguard", [(40, 0.75, 0.2), (40, 0.5, 0.2), (25, 0.9, 0.2), (64, 0.25, 0.5)])
def test_adaptive_layer_total_and_safeguard(n, r, safeguard):
    torch.manual_seed(0)
    h = 4
    # heads with very different score scales so the competition is lopsided
    scores = torch.randn(h, n) * torch.tensor([[10.0], [1.0], [0.1], [0.01]])
    n_kept = n_kept_for(n, r)
    kept = select(scores, n_kept, "adaptive", safeguard=safeguard)
    guard = max(1, math.floor(safeguard * n_kept))
    assert sum(k.numel() for k in kept) == h * n_kept
    for i, idx in enumerate(kept):
        assert idx.numel() >= guard
        assert idx.unique().numel() == idx.numel()
        top_guard = torch.topk(scores[i], guard).indices
        assert torch.isin(top_guard, idx).all()
    # the kept pairs beyond the guards are the best remaining ones of the layer
    kept_mask = torch.zeros(h, n, dtype=torch.bool)
    for i, idx in enumerate(kept):
        kept_mask[i, idx] = True
    guard_mask = torch.zeros_like(kept_mask)
    for i in range(h):
        guard_mask[i, torch.topk(scores[i], guard).indices] = True
    extra = scores[kept_mask & ~guard_mask]
    dropped = scores[~kept_mask]
    assert extra.min() >= dropped.max()


def test_adaptive_with_minus_inf_scores_still_fills_budget():
    # regression: kept pairs used to be masked with -inf and could be picked again, under-filling the layer
    inf = float("inf")
    scores = torch.tensor([[5.0, 4.0, -inf, -inf], [1.0, -inf, -inf, -inf]])
    kept = select(scores, 2, "adaptive", safeguard=0.2)
    assert sum(k.numel() for k in kept) == 4
    assert [k.tolist() for k in kept] == [[0, 1, 2], [0]]


@pytest.mark.parametrize("policy", ["uniform", "adaptive"])
def test_protected_always_kept(policy):
    torch.manual_seed(1)
    n, n_kept = 30, 10
    scores = torch.randn(3, n)
    scores[:, :2] = -100.0  # worst scores, but protected
    scores[:, -3:] = -100.0
    for idx in select(scores, n_kept, policy, protected=(2, 3)):
        assert {0, 1, n - 3, n - 2, n - 1} <= set(idx.tolist())
    # uniform: protected count against the budget
    if policy == "uniform":
        for idx in select(scores, n_kept, policy, protected=(2, 3)):
            assert idx.numel() == n_kept


def test_keep_all_when_budget_covers_context():
    kept = select(torch.randn(2, 5), 9, "adaptive")
    assert [k.tolist() for k in kept] == [[0, 1, 2, 3, 4]] * 2
