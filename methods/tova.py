"""TOVA, token omission via attention (Oren et al., arXiv 2401.06104; docs/methods.md "TOVA"), as kvpress's
TOVAPress.

Score of context position ``j < n - 1``: the softmax attention the last context token (position ``n - 1``) pays to
``j`` (its softmax runs over all ``n`` keys, itself included), averaged over query heads; the last token itself is
always kept (kvpress pads it with the maximum score; here it is ``protected``).

Averaging: the paper and kvpress average over **all** query heads of the layer and give every KV head the same
row (``attn.mean(1)`` repeated ``H_kv`` times in TOVAPress), so every head keeps the same positions:
``per_kv_head: false`` (default). ``per_kv_head: true`` averages over each KV head's ``G`` query heads instead.

The softmax scale is the model's own (``LayerInputs.scaling``), the harness's SnapKV convention; kvpress uses
``1 / sqrt(head_dim)``, which differs only for models with another scale (Gemma 3's ``query_pre_attn_scalar``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods import register
from methods.attention import window_attention
from methods.base import LayerInputs, Method


@register("tova")
@dataclass
class TOVA(Method):
    needs_queries: ClassVar[bool] = True

    per_kv_head: bool = False

    def score(self, layer: LayerInputs) -> torch.Tensor:
        n, h_kv = layer.n, layer.n_kv_heads
        if n < 2:
            return torch.zeros(h_kv, n, dtype=torch.float32, device=layer.keys.device)
        attn = window_attention(layer, 1)[:, 0, : n - 1]  # (H_q, n - 1): the last token's attention
        if self.per_kv_head:
            scores = layer.group_mean(attn)  # (H_kv, n - 1)
        else:
            scores = attn.mean(dim=0, keepdim=True).expand(h_kv, -1)  # one row for every KV head
        last = scores.amax().expand(h_kv, 1) + 1  # protected anyway; kvpress's pad value
        return torch.cat([scores, last], dim=-1).float()

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (0, min(1, n_kept, n))

    def prefill_query_rows(self, n: int) -> int:
        """The last context token's query only."""
        return min(1, n)
