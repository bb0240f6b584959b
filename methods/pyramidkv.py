"""PyramidKV (Cai et al., arXiv 2406.02069; docs/methods.md "PyramidKV"), as kvpress 0.5.x's PyramidKVPress.

Scores are SnapKV's (``methods.snapkv``: window 64, kernel 5, avg pooling; the observation window is the tail of
the context, the harness's query-agnostic convention, and is protected). Only the budget differs: a pyramid over
depth, more entries in the lower layers, fewer in the upper ones, the same total as a uniform budget. With
``kept = n (1 - r)`` (or ``min(n, budget_tokens)``), ``w = window_size``, ``L`` decoder layers:

    max_capacity = w + kept
    min_num = (max_capacity - w) / beta
    max_num = 2 (max_capacity - w) - min_num
    if max_num >= n - w:  max_num = n - w;  min_num = 2 (max_capacity - w) - max_num
    if not (n >= max_num >= min_num >= w):  n_kept(l) = round(kept)             (kvpress's uniform fallback)
    else:  n_kept(l) = round(max_num - l (max_num - min_num) / (L - 1))

``round`` is Python's (half to even), as kvpress; the arithmetic follows kvpress's order of operations so the
floats round the same way. ``l`` counts every decoder layer, compressed or not (hybrid models: kvpress's
``module.layer_idx`` over ``num_hidden_layers``). The uniform and adaptive policies then apply within a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods import register
from methods.snapkv import SnapKV


def pyramid_budget(n: int, kept: float, layer: int, n_layers: int, window_size: int = 64, beta: float = 20) -> int:
    """Entries per KV head of ``layer`` (of ``n_layers``) for a mean budget ``kept`` over an ``n``-token context."""
    max_capacity = window_size + kept
    min_num = (max_capacity - window_size) / beta
    max_num = (max_capacity - window_size) * 2 - min_num
    if max_num >= n - window_size:
        max_num = n - window_size
        min_num = (max_capacity - window_size) * 2 - max_num
    if not (n >= max_num >= min_num >= window_size):
        return round(kept)
    steps = (max_num - min_num) / (n_layers - 1) if n_layers > 1 else 0.0
    return round(max_num - layer * steps)


@register("pyramidkv")
@dataclass
class PyramidKV(SnapKV):
    beta: float = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 1:
            raise ValueError(f"beta must be >= 1 (kvpress), got {self.beta}")

    def layer_budget(self, n: int, n_kept: int, kept: float, layer: int, n_layers: int) -> int:
        return pyramid_budget(n, kept, layer, n_layers, self.window_size, self.beta)
