"""Chat settings of a model (docs/chat_settings.md): extra chat-template variables, and thinking text removed
before scoring.

A model config may set ``chat_template_kwargs`` (e.g. ``{enable_thinking: false}`` for Qwen3, as kvpress and the
NestedKV paper render it: the generation prompt then ends with an empty ``<think>\\n\\n</think>\\n\\n`` block,
so the model answers at once instead of spending a task's few answer tokens thinking). ``models.load_tokenizer``
attaches them to the tokenizer (``tokenizer.kvbench_chat_template_kwargs``), so every rendering of a prompt (the
protocol's split, the suites' prompt sizing, the lm-eval adapter) goes through ``render_chat`` with the same
variables; result rows record them (``chat_template_kwargs``) and they are part of ``run_id`` when set.

Whatever the setting, ``strip_thinking`` removes ``<think>...</think>`` text (and an unterminated ``<think>...``)
from a prediction before it is scored; rows keep the raw prediction beside the scored text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ATTR = "kvbench_chat_template_kwargs"  # the tokenizer attribute holding the model's chat-template variables

_QWEN3 = re.compile(r"qwen3(?![0-9])", re.IGNORECASE)  # Qwen3-*, not Qwen2.5 nor a later Qwen30


def default_chat_template_kwargs(name: str) -> dict[str, Any]:
    """Chat-template variables for a model known only by hub id or path (no config in conf/model/): thinking
    off for Qwen3 models, as their configs set it; nothing for others."""
    return {"enable_thinking": False} if _QWEN3.search(str(name)) else {}


def check_chat_template_kwargs(value, where: str) -> dict[str, Any]:
    """``value`` as a plain dict (None -> {}); a ValueError that says what is expected otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: chat_template_kwargs must be a mapping of chat-template variables "
            f"(e.g. {{enable_thinking: false}}), got {value!r}"
        )
    return {str(k): v for k, v in value.items()}


def chat_kwargs(tokenizer) -> dict[str, Any]:
    """The chat-template variables attached to ``tokenizer`` by ``load_tokenizer`` (a copy; {} if none)."""
    return dict(getattr(tokenizer, ATTR, None) or {})


def set_chat_kwargs(tokenizer, kwargs: Mapping[str, Any] | None):
    """Attach ``kwargs`` to ``tokenizer`` (replacing any); returns the tokenizer."""
    setattr(tokenizer, ATTR, dict(kwargs or {}))
    return tokenizer


def kwargs_json(kwargs: Mapping[str, Any] | None) -> str:
    """The result-row form of chat-template variables: sorted JSON, ``{}`` when none."""
    return json.dumps(dict(kwargs or {}), sort_keys=True, default=str)


def render_chat(tokenizer, messages: list[dict[str, str]], **kwargs) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)`` with the model's chat-template
    variables (explicit ``kwargs`` win)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, **{**chat_kwargs(tokenizer), **kwargs})


_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_thinking(text: str) -> str:
    """``text`` without its thinking: every ``<think>...</think>`` block, an unterminated ``<think>...`` up to the
    end, and everything before a ``</think>`` that has no opening tag (templates that open the block in the
    generation prompt themselves). Leading whitespace left by a removal goes too; text without think tags is
    returned unchanged (so models that never think score exactly as before)."""
    if "<think>" not in text and "</think>" not in text:
        return text
    out = _BLOCK.sub("", text)
    if "</think>" in out:  # opened by the prompt, not by the model
        out = out.rsplit("</think>", 1)[1]
    if "<think>" in out:  # unterminated: the model ran out of tokens while thinking
        out = out[: out.index("<think>")]
    return out.lstrip()
