"""How a record becomes prompt text (docs/protocol.md, "One sample"): the one renderer the engine feeds and the
suites size their prompts with (``prompt_tokens``, ``largest_fitting``), so haystack sizing never drifts from what
the model sees."""

from __future__ import annotations

from typing import Callable

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


_ANSWER = "\u2063KVBENCH_ANSWER\u2063"


def conversation(records: list[Record], answers: list[str]) -> list[dict[str, str]]:
    """The chat messages of a multi-turn conversation over one context (docs/protocol.md, "Multi-turn
    conversations"): the first user turn holds the context and the first question, each later user turn its
    question alone (without the leading whitespace that separates a question from the context); each answered
    turn's assistant message is its answer prefix and the generated answer."""
    messages = []
    for i, rec in enumerate(records):
        messages.append({"role": "user", "content": rec.context + rec.question if i == 0 else rec.question.lstrip()})
        if i < len(answers):
            messages.append({"role": "assistant", "content": rec.answer_prefix + answers[i]})
    return messages


def render_followup(tokenizer, records: list[Record], answers: list[str]) -> str:
    """The text fed to ask ``records[k]`` (``k = len(answers) >= 1``) after the answers of ``records[:k]``:
    what follows the last answer when the whole conversation is rendered. With a chat template, the template's
    text after the k-th assistant answer (its end of turn, the next user turn, the assistant header) and the
    record's answer prefix, so that the context part, the first question part and each answer and follow-up,
    concatenated, are the template's rendering of the conversation (``conversation``). Without one, the question
    and its answer prefix continue the text (as ``render_parts``' question part continues the context)."""
    k = len(answers)
    if not 1 <= k < len(records):
        raise ValueError(f"a follow-up asks turn k + 1 of {len(records)} after k >= 1 answers, got {k} answers")
    rec = records[k]
    if not templated(tokenizer, records[0]):
        return rec.question + rec.answer_prefix
    rendered = render_chat(tokenizer, conversation(records[: k + 1], [*answers[:-1], _ANSWER]),
                           add_generation_prompt=True)
    return rendered.split(_ANSWER, 1)[1] + rec.answer_prefix


def text_tokens(tokenizer, text: str, special: bool = False) -> int:
    """Number of tokens of ``text`` (with the tokenizer's special tokens when ``special``)."""
    if not text and not special:
        return 0
    return len(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_tokens(tokenizer, record: Record) -> int:
    """Prompt tokens of ``record`` as the engine feeds them (before any truncation): the context part and the
    question part of ``render_parts`` tokenised apart, the tokenizer's special tokens added to the context part
    only when no chat template is used (the template writes its own)."""
    head, tail = render_parts(tokenizer, record)
    return text_tokens(tokenizer, head, special=not templated(tokenizer, record)) + text_tokens(tokenizer, tail)


def largest_fitting(count: Callable[[int], int], budget: int, lo: int, guess: int, cap: int | None = None,
                    slope: float | None = None) -> int | None:
    """Largest ``n`` in ``[lo, cap]`` with ``count(n) <= budget`` (``count`` non-decreasing), or None when ``lo``
    does not fit. Starts at ``guess``; steps by the token slope (tokens per unit) until the answer is
    bracketed, then alternates interpolation and bisection inside the bracket."""
    if cap is not None and cap < lo:
        return None

    def clamp(n: int) -> int:
        return max(lo, n if cap is None else min(cap, n))

    good: int | None = None
    bad: int | None = None
    tg = tb = 0
    n, bisect_next = clamp(guess), False
    for _ in range(200):
        t = count(n)
        if t <= budget:
            if good is None or n > good:
                good, tg = n, t
            if cap is not None and n >= cap:
                return good
        else:
            if bad is None or n < bad:
                bad, tb = n, t
            if n <= lo:
                return None
        if good is not None and bad is not None:
            if bad - good <= 1:
                return good
            if bisect_next:
                n = (good + bad) // 2
            else:
                n = good + int((budget - tg) * (bad - good) / max(1, tb - tg))
                n = min(max(n, good + 1), bad - 1)
            bisect_next = not bisect_next
        elif good is not None:  # only fitting sizes seen so far: step up
            per = slope or max(1e-6, tg / max(1, good))
            n = clamp(good + max(1, int((budget - tg) / per) + 1))
        else:  # only overflowing sizes so far: step down
            assert bad is not None  # every count is within the budget or over it
            per = slope or max(1e-6, tb / max(1, bad))
            n = clamp(bad - max(1, int((tb - budget) / per) + 1))
    return good
