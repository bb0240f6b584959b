"""SnapKV (Li et al., arXiv 2404.14469; docs/methods.md).

Votes ``C(j)`` = mean over the last ``window_size`` query rows of their attention on ``j`` (causal inside the
window), for the ``n - window_size`` positions before the window; mean over each KV head's G query heads;
smoothed with a 1-D pool (width ``kernel_size``, stride 1, padding ``kernel_size // 2``). The window itself
is protected; if ``n_kept <= window_size`` the last ``n_kept`` positions are kept.

Pooling details (matching kvpress's SnapKVPress, which the NestedKV paper ran): ``avg`` is
``F.avg_pool1d`` with its default ``count_include_pad=True`` (edge votes are averaged with zero padding,
i.e. divided by ``kernel_size``); ``max`` is ``F.max_pool1d`` (padding never wins). An even ``kernel_size``
yields one extra output, which is dropped (kvpress would fail). Order: the group mean is taken first,
then pools (``pool_per_query_head: false``); kvpress pools each query head, then averages
(``pool_per_query_head: true``). The two are identical for ``avg`` and differ only for ``max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from methods import register
from methods.attention import window_attention
from methods.base import LayerInputs, Method

POOLINGS = ("avg", "max")


def pool_votes(votes: torch.Tensor, kernel_size: int, pooling: str = "avg") -> torch.Tensor:
    """(..., m) -> (..., m): 1-D pool, stride 1, padding ``kernel_size // 2`` (kvpress / SnapKV)."""
    m = votes.shape[-1]
    x = votes.reshape(-1, 1, m)
    pad = kernel_size // 2
    if pooling == "avg":
        y = F.avg_pool1d(x, kernel_size=kernel_size, stride=1, padding=pad, count_include_pad=True)
    elif pooling == "max":
        y = F.max_pool1d(x, kernel_size=kernel_size, stride=1, padding=pad)
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    return y[..., :m].reshape(votes.shape)


@register("snapkv")
@dataclass
class SnapKV(Method):
    needs_queries: ClassVar[bool] = True

    window_size: int = 64
    kernel_size: int = 5
    pooling: str = "avg"
    pool_per_query_head: bool = False

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")

    def votes(self, layer: LayerInputs) -> torch.Tensor:
        """(H_q, n - w) unpooled votes ``C(j)`` of each query head (w = min(window_size, n))."""
        n = layer.n
        w = min(self.window_size, n)
        attn = window_attention(layer, w)  # (H_q, w, n)
        return attn[:, :, : n - w].mean(dim=1)

    def score(self, layer: LayerInputs) -> torch.Tensor:
        n = layer.n
        w = min(self.window_size, n)
        if n - w <= 0:  # the whole context is the window: everything is protected
            return torch.zeros(layer.n_kv_heads, n, dtype=torch.float32, device=layer.keys.device)
        votes = self.votes(layer)
        if self.pool_per_query_head:
            pooled = layer.group_mean(pool_votes(votes, self.kernel_size, self.pooling))
        else:
            pooled = pool_votes(layer.group_mean(votes), self.kernel_size, self.pooling)
        # window scores are irrelevant (protected); use each head's max vote as kvpress does
        window = pooled.amax(dim=-1, keepdim=True).expand(-1, w)
        return torch.cat([pooled, window], dim=-1).float()

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (0, min(self.window_size, n_kept, n))

    def prefill_query_rows(self, n: int) -> int:
        """The observation window: the last ``min(window_size, n)`` query rows."""
        return min(self.window_size, n)
