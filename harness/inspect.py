"""``kept_positions``: which context positions a method keeps, per layer and KV head (for plots and cross-checks);
``needle_token_spans``: where a record's needles lie among the context tokens."""

from __future__ import annotations

import torch

from harness.cache import layer_kv
from harness.cell import Cell
from harness.configstep import ConfigStep
from harness.protocol import encode_context
from methods.base import Method
from tasks.prompts import render_parts, templated


def char_spans_to_tokens(offsets, spans, shift: int = 0) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` covering each character span ``[a, b)`` (shifted by ``shift`` characters),
    given a tokenizer's offset mapping (one ``(char_start, char_end)`` per token). A token belongs to a span
    when its characters overlap it; zero-width tokens (special tokens) never do. A span no token overlaps
    raises ``ValueError``."""
    out = []
    for a, b in spans:
        a, b = int(a) + shift, int(b) + shift
        hit = [i for i, (s, e) in enumerate(offsets) if e > s and e > a and s < b]
        if not hit:
            raise ValueError(f"no token overlaps characters [{a}, {b})")
        out.append((hit[0], hit[-1] + 1))
    return out


def needle_token_spans(tokenizer, record, key: str = "needle_spans") -> list[tuple[int, int]]:
    """Token positions ``[start, end)`` of the record's needles in its context ids, as the protocol encodes
    them (``harness.protocol.encode_context``: chat-template head + ``record.context``, no truncation).

    ``record.extra[key]`` holds character spans in ``record.context`` (RULER: ``needle_spans`` for the
    needles asked about, ``distractor_needle_spans`` for the others). They are shifted by the length of the
    template head and mapped with the tokenizer's offset mapping (a fast tokenizer is needed)."""
    spans = record.extra.get(key) or []
    text = render_parts(tokenizer, record)[0]
    if not text.endswith(record.context):
        raise ValueError("the context part does not end with record.context; cannot place its character spans")
    shift = len(text) - len(record.context)
    enc = tokenizer(text, add_special_tokens=not templated(tokenizer, record), return_offsets_mapping=True)
    ids = enc["input_ids"]
    expected = encode_context(tokenizer, record).context_ids[0].tolist()
    if ids != expected:  # the same call as encode_context; a mismatch would mean the positions are off
        raise RuntimeError("offset-mapped tokenisation differs from harness.protocol.encode_context")
    return char_spans_to_tokens(enc["offset_mapping"], spans, shift)


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
    cell = Cell(m.name, m, r, budget_tokens, policy, guard)
    step = ConfigStep(model)  # the engine's own prefill and selection (harness/configstep.py)
    pre = step.prefill(input_ids, [cell])
    kept = step.select(cell, pre)
    out = []
    for idx in range(len(pre.cache.layers)):
        if idx in kept:
            out.append([ix.cpu() for ix in kept[idx]])
        else:
            h_kv = layer_kv(pre.cache.layers[idx])[0].shape[1]
            start = max(0, n - window) if (window := step.sliding.get(idx)) else 0
            out.append([torch.arange(start, n) for _ in range(h_kv)])
    return out
