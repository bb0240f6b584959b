"""Multi-turn conversations over one compressed context (docs/protocol.md, "Multi-turn conversations").

With ``turns`` other than 1, the questions of a context (the records sharing its ``context_id``: ordered by
``query_index`` when every record has one, as ``squad_mq``'s, else in the suite's order) are asked as successive
turns of conversations: ``turns=k`` asks them k at a time (questions 1..k are one conversation, k+1..2k the next,
...), ``turns=multi`` all of them in one. The context is prefilled and compressed once per configuration (as
for separate questions); each conversation starts from that compressed cache, and turn k+1 is fed after turn k's
question and generated answer, which stay in the cache: uncompressed, or kept within the budget by the method's
decode rule, which runs through every turn of the conversation (``DecodeRule``). The text fed for turn k+1 is the
chat template's rendering of the conversation after answer k (``tasks.prompts.render_followup``). A conversation
is decoded as a batch of one (``protocol.decode``'s ``session``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.cache import CompressedContext
from harness.cell import Cell
from harness.configstep import ConfigStep
from harness.memory import peak_bytes, reset_peak
from harness.protocol import encode_context, encode_question, generation_stats
from tasks.prompts import render_followup
from tasks.records import Record


def conversation_order(group: list[Record]) -> list[Record]:
    """The order in which a context's questions are asked: by ``query_index`` when every record has one, else as
    the suite lists them."""
    if all("query_index" in r.extra for r in group):
        return sorted(group, key=lambda r: int(r.extra["query_index"]))
    return list(group)


def conversations(group: list[Record], turns: int | str) -> list[list[Record]]:
    """The conversations of one context: its questions (``conversation_order``) ``turns`` at a time, or all of them
    (``multi``)."""
    order = conversation_order(group)
    k = len(order) if turns == "multi" else int(turns)
    return [order[i : i + k] for i in range(0, len(order), k)]


@dataclass
class Turn:
    record: Record
    turn: int  # 1-based
    prediction: str
    n_generated: int
    n_question: int  # tokens fed at the turn's first step: its question part (a later turn: the previous answer's
    #                  last token when it was not fed yet, then the follow-up part)
    seconds: float
    timing: dict
    generated: list[int]  # the answer's token ids (what stays in the cache as the answer; no EOS)


def _ids(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids


def converse(step: ConfigStep, cell: Cell, ctx: CompressedContext, records: list[Record], devices=()) -> list[Turn]:
    """Decode one conversation for one configuration over its compressed context: turn 1 is ``records[0]``'s
    question part, turn k + 1 the tokens of answer k not in the cache yet and the follow-up part of
    ``records[k]``, all on one cache. ``devices``: where to measure each turn's peak memory (``timing["peak"]``)."""
    tok = step.tokenizer
    session: dict = {}
    answers: list[str] = []
    pending = torch.zeros(1, 0, dtype=torch.long)  # generated tokens not fed yet
    out: list[Turn] = []
    for t, rec in enumerate(records):
        if t == 0:
            ids = encode_question(tok, rec)
        else:
            ids = torch.cat([pending, _ids(tok, render_followup(tok, records, answers))], dim=-1)
        before = session["state"].appended.shape[1] if session else 0
        timing: dict = {}
        reset_peak(devices)
        preds, n_gen, seconds = step.decode([cell], [ctx], ids, rec.max_new_tokens, rec.stop_strings, timing=timing,
                                            session=session)
        timing["peak"] = peak_bytes(devices)
        generated = session["generated"][0]
        fed = session["state"].appended.shape[1] - before - ids.shape[-1]  # generated tokens now in the cache
        pending = torch.tensor([generated[fed:]], dtype=torch.long).reshape(1, -1)
        answers.append(tok.decode(generated, skip_special_tokens=False))
        out.append(Turn(rec, t + 1, preds[0], n_gen[0], int(ids.shape[-1]), seconds, timing, list(generated)))
    return out


def conversation_tokens(tokenizer, records: list[Record]) -> int:
    """Tokens a conversation adds after its context besides the first turn's answer: every question part (the
    follow-ups rendered with empty answers), every later turn's answer budget, and one pending answer token per
    later turn. The context is truncated to leave room for them (``SweepRunner.context_budget``)."""
    n = encode_question(tokenizer, records[0]).shape[-1]
    for k in range(1, len(records)):
        n += _ids(tokenizer, render_followup(tokenizer, records, [""] * k)).shape[-1] + 1
        n += records[k].max_new_tokens
    return n


def run_turns(runner, group: list[Record], cells: list[Cell], done: set[tuple[str, str]]) -> list[dict]:
    """Every conversation of one context for ``cells`` (a ``harness.sweep.SweepRunner``'s): one prefill per
    query-awareness (query-aware: the first question in view, as for multi-query contexts), one compression per
    configuration, then each conversation missing a row decoded turn by turn. Returns the missing rows, each with
    ``turn`` and ``turns``."""
    convs = conversations(group, runner.turns)
    first = convs[0][0]
    budgets = [runner.context_budget(conversation_tokens(runner.tokenizer, conv), conv[0]) for conv in convs]
    budgets = [b for b in budgets if b is not None]
    enc = encode_context(runner.tokenizer, first, min(budgets) if budgets else None)
    step: ConfigStep = runner.step
    rows: list[dict] = []
    for aware in (False, True):
        part = [c for c in cells if c.query_aware == aware]
        if not part:
            continue
        ids, n = enc.context_ids, enc.context_ids.shape[-1]
        if aware:
            ids = torch.cat([ids, encode_question(runner.tokenizer, first)], dim=-1)
        note = " (query-aware, first question in view)" if aware else ""
        runner._report(0, f"prefill {ids.shape[-1]} tokens{note}")
        pre, prefill_peak = runner._prefill(ids, part)
        pre = step.restrict(pre, ids, n)
        for cell in part:
            todo = [conv for conv in convs if any((cell.run_id, r.sample_id) not in done for r in conv)]
            if not todo:
                continue
            ctx = step.compress(cell, pre)  # never modified by a decode: every conversation starts from it
            for conv in todo:
                for turn in converse(step, cell, ctx, conv, runner.devices):
                    if (cell.run_id, turn.record.sample_id) in done:
                        continue
                    row = runner.row(turn.record, cell, ctx, turn.prediction, turn.n_generated, enc, turn.n_question,
                                     pre.n, pre.full_bytes, pre.prefill_s, pre.seconds, turn.seconds, 1,
                                     max(turn.timing["peak"], prefill_peak), generation_stats(turn.timing, 0))
                    rows.append({**row, "turn": turn.turn, "turns": str(runner.turns)})
                    runner._report(1, f"turn {turn.turn} of {len(conv)} ({cell.label})")
    return rows
