"""KeyDiff (Park et al., arXiv 2504.15364): keep the keys least similar to the head's mean direction.

``mu = mean_j(k_j / ||k_j||)``, ``s_j = -cos(k_j, mu)``. Keys only; no sink or window protection (as in
kvpress's KeyDiffPress).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods import register
from methods.base import LayerInputs, Method
from methods.rescore import RescoreOnDecode


def keydiff_scores(keys: torch.Tensor) -> torch.Tensor:
    """(H, n, d) keys -> (H, n) scores ``-cos(k_j, mean_j k^_j)``."""
    k_hat = F.normalize(keys.float(), dim=-1)
    anchor = k_hat.mean(dim=-2, keepdim=True)  # (H, 1, d)
    return -F.cosine_similarity(k_hat, anchor, dim=-1)


@register("keydiff")
@dataclass
class KeyDiff(RescoreOnDecode, Method):
    def score(self, layer: LayerInputs) -> torch.Tensor:
        return keydiff_scores(layer.keys)
