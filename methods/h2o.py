"""H2O, heavy hitters (Zhang et al., arXiv 2306.14048; docs/methods.md "H2O").

Score of position ``j`` = accumulated causal attention ``F(j) = sum_{i >= j} A[i, j]`` of the prefill, mean
over each KV head's G query heads; the most recent ``floor(recent_fraction * n_kept)`` positions are always
kept (``protected``) and the rest of the budget goes to the top ``F``. ``F`` comes from chunked column sums
(``methods.attention``), never from the n x n matrix. ``normalize`` divides by ``n - j`` (kvpress's
ObservedAttention). ``decode_eviction`` (the paper's online form) declares ``H2OEviction`` as the method's
decode rule (``Method.decode_rule``); the engine runs it without knowing what it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from methods import register
from methods.attention import DEFAULT_BLOCK_SIZE, attention_column_sums
from methods.base import DecodeRule, LayerInputs, Method


@dataclass
class H2OEviction(DecodeRule):
    """H2O's online form (docs/methods.md): while decoding, every new token's attention row is added to the
    accumulated scores, and once a head holds more valid entries than it was given at compression (its budget:
    ``n_kept`` under a uniform budget, its share of the layer's budget under an adaptive one; with the protocol's
    ``decode_budget=ratio`` that budget grows with the tokens seen, ``DecodeRule.limit``) the lowest-scoring
    entries outside the ``recent`` most recent ones are evicted (masked out: the logical cache stays at its
    budget). With ``normalize`` entries are ranked by ``acc / seen`` (mean attention per query that saw them).
    One instance per configuration (batch row); state per layer, (H_kv, T) over the row's entries."""

    recent: int  # most recent valid entries never evicted
    normalize: bool = False
    budget: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H_kv,) entries each head keeps
    slots: dict[int, int] = field(default_factory=dict)  # layer -> context slots (entries before the appended ones)
    acc: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H_kv, T) accumulated attention F
    seen: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H_kv, T) queries that saw each entry

    def start(self, layer, scores, positions, valid, first_position) -> None:
        self.budget[layer] = valid.sum(-1)  # each head's budget is what compression gave it
        self.slots[layer] = valid.shape[-1]
        # prefill queries that saw each context entry: n - j (the first appended token sits at position n)
        self.seen[layer] = (first_position - positions).clamp(min=1).to(scores.dtype)
        # the raw sums F(j): normalised prefill scores are F(j) / (n - j)
        self.acc[layer] = scores * self.seen[layer] if self.normalize else scores.clone()

    def observe(self, layer, attention, seen) -> None:
        grow = attention.shape[-1] - self.acc[layer].shape[-1]  # appended entries since the last step
        if grow > 0:
            self.acc[layer] = torch.cat([self.acc[layer], self.acc[layer].new_zeros(attention.shape[0], grow)], -1)
            self.seen[layer] = torch.cat([self.seen[layer], self.seen[layer].new_zeros(seen.shape[0], grow)], -1)
        self.acc[layer] += attention
        self.seen[layer] += seen

    def evict(self, layer, valid, keys=None, values=None) -> torch.Tensor:
        appended = valid.shape[-1] - self.slots.get(layer, valid.shape[-1])
        excess = valid.sum(-1) - self.limit(self.budget[layer], appended)  # (H_kv,)
        if int(excess.max()) <= 0:
            return valid
        # entries are in position order (context, then appended), so the last ``recent`` valid ones are recent
        rank_from_end = valid.flip(-1).cumsum(-1).flip(-1)  # valid entries at or after each slot
        candidate = valid & (rank_from_end > self.recent)
        acc = self.acc[layer]
        score = acc / self.seen[layer].clamp(min=1) if self.normalize else acc
        score = score.masked_fill(~candidate, float("inf"))
        order = torch.sort(score, dim=-1, stable=True).indices
        valid = valid.clone()
        for h in range(valid.shape[0]):
            k = int(excess[h])
            if k > 0:
                valid[h, order[h, :k]] = False
        return valid


@register("h2o")
@dataclass
class H2O(Method):
    needs_queries: ClassVar[bool] = True

    recent_fraction: float = 0.5
    normalize: bool = False
    block_size: int = DEFAULT_BLOCK_SIZE
    # an instance field (recorded in method_params) that shadows Method's ClassVar default
    decode_eviction: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in [0, 1], got {self.recent_fraction}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    def score(self, layer: LayerInputs) -> torch.Tensor:
        f = attention_column_sums(layer, block_size=self.block_size, normalize=self.normalize)
        return layer.group_mean(f)

    def n_recent(self, n_kept: int) -> int:
        """``floor(recent_fraction * n_kept)`` (epsilon keeps e.g. 0.7 * 10 from flooring to 6)."""
        return min(n_kept, math.floor(self.recent_fraction * n_kept + 1e-9))

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (0, self.n_recent(n_kept))

    def decode_rule(self, n: int, n_kept: int) -> H2OEviction | None:
        if not self.decode_eviction:
            return None
        return H2OEviction(recent=self.protected(n, n_kept)[1], normalize=self.normalize)
