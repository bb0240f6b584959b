"""``kept_positions``: which context positions a method keeps, per layer and KV head (for plots and cross-checks)."""

from __future__ import annotations

import torch

from harness.protocol import compressed_layers, prefill, select_positions
from methods.base import Method


def _resolve(method, method_params: dict):
    """A Method instance plus its config's default policy and safeguard (config name or registered class)."""
    from harness.plan import build_method, load_method_config, method_config_names

    if isinstance(method, Method):
        return method, "uniform", 0.2
    if method in method_config_names():
        mcfg = load_method_config(method)
        if method_params:
            mcfg.params = {**(mcfg.get("params") or {}), **method_params}
        _, m, policy, safeguard = build_method(mcfg)
        return m, policy, safeguard
    _, m, policy, safeguard = build_method({"name": method, "method": method, "params": method_params})
    return m, policy, safeguard


@torch.no_grad()
def kept_positions(
    model,
    input_ids: torch.Tensor,
    method,
    r: float | None = None,
    budget_tokens: int | None = None,
    budget_policy: str | None = None,
    safeguard: float | None = None,
    **method_params,
) -> list[list[torch.Tensor]]:
    """Per layer (all layers, in order), per KV head: the sorted context positions kept (1-D int64 tensors).

    ``method`` is a method config name (conf/method: its budget policy is the default), a registered method
    class name, or a ``Method`` instance. Layers that are not compressed (sliding-window layers of hybrid
    models) report the window they keep.
    """
    m, policy, guard = _resolve(method, method_params)
    policy = budget_policy or policy
    guard = guard if safeguard is None else safeguard
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    n = input_ids.shape[-1]
    if r is None and budget_tokens is None:
        raise ValueError("give r (fraction removed, in [0, 1)) or budget_tokens")
    cache, scores, _, _ = prefill(model, input_ids, {"m": m})
    kept = select_positions(scores["m"], m, n, r, budget_tokens, policy, guard)
    layers, sliding = compressed_layers(model)
    out = []
    for idx in range(len(cache.layers)):
        if idx in kept:
            out.append([ix.cpu() for ix in kept[idx]])
        else:
            h_kv = cache.layers[idx].keys.shape[1]
            start = max(0, n - sliding[idx]) if sliding.get(idx) else 0
            out.append([torch.arange(start, n) for _ in range(h_kv)])
    return out
