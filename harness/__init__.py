"""kvbench: a reproducible benchmark harness for KV-cache compression methods."""

from __future__ import annotations

__version__ = "0.1.0"


def _own_sibling_packages() -> None:
    """``tasks`` and ``methods`` are top-level packages beside ``harness``. Run from a folder that holds a ``tasks/``
    folder of its own (lm-eval task YAMLs for ``--include_path tasks``), Python would import that folder as
    ``tasks`` (a namespace package) and ``from tasks import make_task`` would fail; in that case ours are loaded
    from beside this file. Nothing is imported when the ordinary lookup already finds ours."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for name in ("tasks", "methods"):
        ours = root / name / "__init__.py"
        if name in sys.modules or not ours.is_file():
            continue
        found = importlib.util.find_spec(name)
        if found is not None and found.origin and Path(found.origin).resolve() == ours:
            continue
        spec = importlib.util.spec_from_file_location(name, ours, submodule_search_locations=[str(ours.parent)])
        assert spec is not None and spec.loader is not None  # an existing .py file has both
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise


_own_sibling_packages()


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
