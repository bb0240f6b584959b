"""KNorm (Devoto et al., arXiv 2406.11430; docs/methods.md "KNorm"), as kvpress's KnormPress.

The paper finds that keys with a low L2 norm draw high attention: ``score_j = -||k_j||`` (cached, post-RoPE keys;
RoPE preserves norms), keep the top ``n_kept`` per KV head. Keys only, no sinks or window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods import register
from methods.base import LayerInputs, Method
from methods.rescore import RescoreOnDecode


@register("knorm")
@dataclass
class KNorm(RescoreOnDecode, Method):
    def score(self, layer: LayerInputs) -> torch.Tensor:
        return -layer.keys.float().norm(dim=-1)  # (H_kv, n)
