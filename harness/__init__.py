"""kvbench: a reproducible benchmark harness for KV-cache compression methods."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(name_or_path, dtype="auto", device="auto", attn_impl="sdpa"):
    """``(model, tokenizer)`` for a conf/model name, a local directory or a hub id."""
    from harness.models import load_model as _load

    return _load(name_or_path, dtype=dtype, device=device, attn_impl=attn_impl)


def kept_positions(model, input_ids, method, r=None, budget_tokens=None, budget_policy=None, safeguard=None, **method_params):
    """Per layer, per KV head, the sorted context positions ``method`` keeps at ratio ``r``."""
    from harness.inspect import kept_positions as _kept

    return _kept(model, input_ids, method, r=r, budget_tokens=budget_tokens, budget_policy=budget_policy,
                 safeguard=safeguard, **method_params)


def needle_token_spans(tokenizer, record, key="needle_spans"):
    """Token spans ``[start, end)`` of ``record.extra[key]`` (character spans in the context) in the context ids."""
    from harness.inspect import needle_token_spans as _spans

    return _spans(tokenizer, record, key=key)


__all__ = ["__version__", "load_model", "kept_positions", "needle_token_spans"]
