"""H2O, heavy hitters (Zhang et al., arXiv 2306.14048; methods.md "H2O").

Score of position ``j`` = accumulated causal attention ``F(j) = sum_{i >= j} A[i, j]`` of the prefill, mean
over each KV head's G query heads; the most recent ``floor(recent_fraction * n_kept)`` positions are always
kept (``protected``) and the rest of the budget goes to the top ``F``. ``F`` comes from chunked column sums
(``methods.attention``), never from the n x n matrix. ``normalize`` divides by ``n - j`` (kvpress's
ObservedAttention). ``decode_eviction`` (the paper's online form) is carried for the engine, which implements it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from methods import register
from methods.attention import DEFAULT_BLOCK_SIZE, attention_column_sums
from methods.base import LayerInputs, Method


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
