"""StreamingLLM (Xiao et al., arXiv 2309.17453): attention sinks plus the most recent positions.

Keeps the first ``n_sink`` positions and the most recent ``n_kept - n_sink``. Scores are the positions
themselves (later = higher) with the sinks protected, so the shared budget's top-``n_kept`` is exactly
sinks + recent. ``rerotate`` re-rotates kept keys to positions ``0..n_kept-1`` (the paper's positions inside
the cache); default keeps original positions (kvpress).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods import register
from methods.base import LayerInputs, Method


@register("streamingllm")
@dataclass
class StreamingLLM(Method):
    n_sink: int = 4
    rerotate: bool = False

    def score(self, layer: LayerInputs) -> torch.Tensor:
        pos = torch.arange(layer.n, dtype=torch.float32, device=layer.keys.device)
        return pos.expand(layer.n_kv_heads, -1).clone()

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (min(self.n_sink, n_kept), 0)
