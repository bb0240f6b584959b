"""How a record becomes prompt text (docs/protocol.md, "One sample"): the one renderer the engine feeds and the
suites size their prompts with, so haystack sizing never drifts from what the model sees."""

from __future__ import annotations

from tasks.chat import render_chat
from tasks.records import Record

_PLACEHOLDER = "\u2063KVBENCH_CONTEXT\u2063"


def templated(tokenizer, record: Record) -> bool:
    """Whether ``record`` is rendered with the tokenizer's chat template."""
    return bool(record.chat_template and getattr(tokenizer, "chat_template", None))


def render_parts(tokenizer, record: Record) -> tuple[str, str]:
    """(context part, question part) text. With a chat template the context part ends inside the user turn and
    the question part holds the rest of the turn, the assistant header and the answer prefix. The model's chat
    settings apply (``tasks.chat``: Qwen3's empty think block ends the question part when thinking is off)."""
    if templated(tokenizer, record):
        rendered = render_chat(tokenizer, [{"role": "user", "content": _PLACEHOLDER + record.question}],
                               add_generation_prompt=True)
        head, tail = rendered.split(_PLACEHOLDER, 1)
        return head + record.context, tail + record.answer_prefix
    return record.context, record.question + record.answer_prefix
