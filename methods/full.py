"""The uncompressed reference: keeps every position; the row every table is normalised against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods import register
from methods.base import LayerInputs, Method


@register("full")
@dataclass
class Full(Method):
    compresses = False

    def score(self, layer: LayerInputs) -> torch.Tensor:
        return torch.zeros(layer.n_kv_heads, layer.n, dtype=torch.float32, device=layer.keys.device)
