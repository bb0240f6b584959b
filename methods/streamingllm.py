"""StreamingLLM (Xiao et al., arXiv 2309.17453): attention sinks plus the most recent positions.

Keeps the first ``n_sink`` positions and the most recent ``n_kept - n_sink``. Scores are the positions
themselves (later = higher) with the sinks protected, so the shared budget's top-``n_kept`` is exactly
sinks + recent. ``rerotate`` re-rotates kept keys to positions ``0..n_kept-1`` (the paper's positions inside
the cache); default keeps original positions (kvpress). ``decode_window`` (the paper's streaming form,
``streamingllm_online``) declares ``StreamingWindow`` as the decode rule: while the question and the answer are
decoded the cache stays at its budget, the sinks plus the most recent entries (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from methods import register
from methods.base import DecodeRule, LayerInputs, Method


@dataclass
class StreamingWindow(DecodeRule):
    """StreamingLLM while decoding: each head holds at most the entries compression gave it (its budget); once
    appended tokens push it past that, the oldest entries after the ``n_sink`` first ones are evicted, so the
    cache is always the sinks plus a sliding window of the most recent entries. One instance per configuration
    (batch row). With the protocol's ``decode_budget=ratio`` the budget grows with the tokens seen
    (``DecodeRule.limit``)."""

    n_sink: int
    budget: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H_kv,) entries each head keeps
    slots: dict[int, int] = field(default_factory=dict)  # layer -> context slots (entries before the appended ones)

    def start(self, layer, scores, positions, valid, first_position) -> None:
        self.budget[layer] = valid.sum(-1)
        self.slots[layer] = valid.shape[-1]

    def evict(self, layer, valid, keys=None, values=None) -> torch.Tensor:
        budget = self.limit(self.budget[layer], valid.shape[-1] - self.slots.get(layer, valid.shape[-1]))
        if int((valid.sum(-1) - budget).max()) <= 0:
            return valid
        # entries are in position order: rank of each valid entry from the start and from the end
        from_start = valid.cumsum(-1)
        from_end = valid.flip(-1).cumsum(-1).flip(-1)
        sinks = torch.minimum(budget, torch.full_like(budget, self.n_sink))
        keep = (from_start <= sinks[:, None]) | (from_end <= (budget - sinks)[:, None])
        return valid & keep


@register("streamingllm")
@dataclass
class StreamingLLM(Method):
    n_sink: int = 4
    rerotate: bool = False
    decode_window: bool = False  # keep the cache at its budget while decoding (sinks + recent window)

    def score(self, layer: LayerInputs) -> torch.Tensor:
        pos = torch.arange(layer.n, dtype=torch.float32, device=layer.keys.device)
        return pos.expand(layer.n_kv_heads, -1).clone()

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (min(self.n_sink, n_kept), 0)

    def params(self) -> dict:
        """As recorded in rows; ``decode_window`` only when on, so the run ids of prefill-only StreamingLLM
        configurations are those they had before the streaming form existed."""
        out = super().params()
        if not out.get("decode_window"):
            out.pop("decode_window", None)
        return out

    def decode_rule(self, n: int, n_kept: int) -> StreamingWindow | None:
        if not self.decode_window:
            return None
        if self.rerotate:
            raise ValueError("streamingllm: decode_window with rerotate is not supported (the window's positions "
                             "would have to be re-rotated at every step); use rerotate: false")
        return StreamingWindow(n_sink=self.n_sink)
