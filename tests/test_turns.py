"""Multi-turn conversations (harness/turns.py, docs/protocol.md "Multi-turn conversations"): the follow-up text is
the chat template's rendering of the conversation, turn 2 sees turn 1's question and answer in the cache (equal to
greedy decoding of the whole conversation at r = 0), a decode rule runs through every turn, and the setting is
checked and recorded only when it is not 1."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from tasks.chat import render_chat
from tasks.prompts import conversation, render_followup, render_parts
from tasks.records import Record
from test_squad_mq import _cells, _squad


def _recs(n=3, chat=True, qi=True):
    return [Record("c", f"c/{i}", "s", "t", "Documents: alpha beta.", f"\n\nQuestion {i}?", ["a"], 4, "m",
                   answer_prefix=" Answer:", chat_template=chat, extra={"query_index": i} if qi else {})
            for i in range(n)]


# ------------------------------------------------------------------------------------------- rendering
def test_followups_concatenate_to_the_templates_whole_conversation(smollm_tokenizer):
    """SmolLM2's template: context part + question part + answer 1 + follow-up 1 + answer 2 + follow-up 2 is
    exactly the template's rendering of the three-turn conversation (and the answer prefix of turn 3)."""
    tok, recs = smollm_tokenizer, _recs()
    ctx, q1 = render_parts(tok, recs[0])
    f1 = render_followup(tok, recs, ["Paris"])
    f2 = render_followup(tok, recs, ["Paris", "Rome"])
    whole = render_chat(tok, conversation(recs, ["Paris", "Rome"]), add_generation_prompt=True)
    assert ctx + q1 + "Paris" + f1 + "Rome" + f2 == whole + " Answer:"
    # by hand: the answer's turn closed, a user turn with the question (its leading separator dropped), the
    # assistant header and the answer prefix
    assert f1 == "<|im_end|>\n<|im_start|>user\nQuestion 1?<|im_end|>\n<|im_start|>assistant\n Answer:"


def test_plain_followup_continues_the_text_and_bad_turns_are_refused(smollm_tokenizer):
    recs = _recs(chat=False)
    assert render_followup(smollm_tokenizer, recs, ["Paris"]) == "\n\nQuestion 1? Answer:"
    with pytest.raises(ValueError, match="after k >= 1 answers"):
        render_followup(smollm_tokenizer, recs, [])
    with pytest.raises(ValueError, match="after k >= 1 answers"):
        render_followup(smollm_tokenizer, recs, ["a", "b", "c"])


def test_conversations_follow_query_index_then_chunk():
    from harness.turns import conversations

    recs = _recs(5)
    shuffled = [recs[3], recs[0], recs[4], recs[1], recs[2]]
    ids = lambda convs: [[r.sample_id for r in c] for c in convs]  # noqa: E731
    assert ids(conversations(shuffled, "multi")) == [["c/0", "c/1", "c/2", "c/3", "c/4"]]
    assert ids(conversations(shuffled, 2)) == [["c/0", "c/1"], ["c/2", "c/3"], ["c/4"]]
    plain = [recs[2], recs[0]]  # without query_index the suite's order stands
    for r in plain:
        r.extra = {}
    assert ids(conversations(plain, "multi")) == [["c/2", "c/0"]]


# ------------------------------------------------------------------------------------------- the engine
def _no_eos(monkeypatch, eos=()):
    import harness.protocol as P

    monkeypatch.setattr(P, "eos_ids", lambda model, tok: set(eos))


def _conversation(tmp_path, tok, n_queries=2, max_new=6):
    from tasks import make_task

    task = make_task("squad_mq", length=512, n_queries=n_queries, data_dir=str(_squad(tmp_path, words=12)),
                     use_hub=False)
    recs = task.load(tok, n_samples=1).records
    for r in recs:
        r.max_new_tokens = max_new
    return recs


def _run(model, tok, recs, name="full", r=0.0, decode_budget="fixed"):
    from harness.configstep import ConfigStep
    from harness.protocol import encode_context
    from harness.turns import converse

    (cell,) = _cells([(name, r)], False)
    cell.decode_budget = decode_budget
    step = ConfigStep(model, tok)
    ctx_ids = encode_context(tok, recs[0]).context_ids
    pre = step.prefill(ctx_ids, [cell])
    return ctx_ids, converse(step, cell, step.compress(cell, pre), recs)


@pytest.mark.parametrize("arch, ending", [("llama", "limit"), ("llama", "eos"), ("gemma3", "limit")])
def test_turn_two_sees_turn_one_question_and_answer(tmp_path, smollm_tokenizer, monkeypatch, arch, ending):
    """At r = 0: before turn 2's follow-up the cache holds context + question 1 + answer 1 (the answer's last token,
    when the limit ended it, is fed first in turn 2), and turn 2's answer is greedy decoding (model.generate) of
    the whole conversation context + q1 + a1 + follow-up as one sequence. ``eos``: turn 1 ends on an EOS token,
    which is not in the cache (the template's end of turn, in the follow-up, closes the answer). Gemma 3: sliding
    window layers (window 32) keep their window across turns."""
    from harness.protocol import encode_question

    tok, model = smollm_tokenizer, tiny_model(arch)
    recs = _conversation(tmp_path, tok)
    _no_eos(monkeypatch)
    if ending == "eos":  # the 3rd token turn 1 generates without EOS becomes the EOS
        _, free = _run(model, tok, recs)
        eos = free[0].generated[2]
        _no_eos(monkeypatch, [eos])
    import harness.protocol as P

    calls = []
    real = P.decode

    def spy(model, tokenizer, contexts, question_ids, *a, session=None, **k):
        if session:
            calls.append((session["cache"].layers[-1].keys.shape[-2], question_ids.clone()))  # a global layer
        return real(model, tokenizer, contexts, question_ids, *a, session=session, **k)

    monkeypatch.setattr("harness.configstep.decode", spy)
    ctx_ids, turns = _run(model, tok, recs)
    q1 = encode_question(tok, recs[0])
    a1 = turns[0].generated
    assert [t.turn for t in turns] == [1, 2] and [t.record.sample_id for t in turns] == [r.sample_id for r in recs]
    if ending == "eos":
        assert len(a1) == 2  # stopped before the EOS token
    else:
        assert len(a1) == 6
    n, (cached, fed) = ctx_ids.shape[-1], calls[0]
    pending = 0 if ending == "eos" else 1  # the limit's last token was never fed in turn 1
    assert cached + pending == n + q1.shape[-1] + len(a1)
    follow = tok(render_followup(tok, recs, [tok.decode(a1, skip_special_tokens=False)]), add_special_tokens=False,
                 return_tensors="pt").input_ids
    assert fed.tolist() == [a1[len(a1) - pending :] + follow[0].tolist()]
    whole = torch.cat([ctx_ids, q1, torch.tensor([a1]), follow], dim=-1)
    ref = model.generate(whole, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    ref = ref[0, whole.shape[-1]:].tolist()
    if ending == "eos":
        ref = ref[: ref.index(eos)] if eos in ref else ref
    assert turns[1].generated == ref
    # the same sequence as text is the template's whole conversation
    assert tok.decode(whole[0]) == render_chat(tok, conversation(recs, [tok.decode(a1)]),
                                               add_generation_prompt=True) + recs[1].answer_prefix


def test_turn_one_of_a_conversation_is_the_single_question_answer(tmp_path, smollm_tokenizer, monkeypatch):
    """Turn 1 decodes exactly as the one-question protocol (turns = 1) does, rule included."""
    from harness.sweep import SweepRunner

    _no_eos(monkeypatch)
    tok, model = smollm_tokenizer, tiny_model("llama")
    recs = _conversation(tmp_path, tok, n_queries=3)
    cells = _cells([("full", 0.0), ("keydiff", 0.5), ("h2o_online", 0.5)], False)
    single = SweepRunner(model, tok, cells, {"model": "tiny"}).run_group(recs, set())
    multi = SweepRunner(model, tok, cells, {"model": "tiny"}, turns="multi").run_group(recs, set())
    assert len(single) == len(multi) == 9
    by = {(r["run_id"], r["sample_id"]): r for r in single}
    first = [r for r in multi if r["turn"] == 1]
    assert len(first) == 3 and all(r["sample_id"] == recs[0].sample_id and r["turns"] == "multi" for r in first)
    for r in first:
        assert r["prediction"] == by[(r["run_id"], r["sample_id"])]["prediction"]
    assert sorted(r["turn"] for r in multi) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all("turn" not in r and "turns" not in r for r in single)
    # resume: only the missing rows of a conversation come back (the conversation is decoded again for them)
    done = {(r["run_id"], r["sample_id"]) for r in multi if r["turn"] != 3}
    again = SweepRunner(model, tok, cells, {"model": "tiny"}, turns="multi").run_group(recs, done)
    assert sorted((r["run_id"], r["turn"]) for r in again) == sorted((r["run_id"], 3) for r in first)
    want = {(r["run_id"], r["sample_id"]): r["prediction"] for r in multi}
    assert all(r["prediction"] == want[(r["run_id"], r["sample_id"])] for r in again)


def test_chunks_of_turns_and_query_aware_conversations(tmp_path, smollm_tokenizer, monkeypatch):
    """turns=2 over 3 questions: conversations (q0, q1) and (q2). Query-aware at r = 0 keeps the whole context (the
    first question is in view when scoring, never in the cache), so every turn answers as query-agnostic does."""
    from harness.sweep import SweepRunner

    _no_eos(monkeypatch)
    tok, model = smollm_tokenizer, tiny_model("llama")
    recs = _conversation(tmp_path, tok, n_queries=3)
    plain = SweepRunner(model, tok, _cells([("snapkv", 0.0)], False), {"model": "tiny"}, turns=2).run_group(recs, set())
    aware = SweepRunner(model, tok, _cells([("snapkv", 0.0)], True), {"model": "tiny"}, turns=2).run_group(recs, set())
    assert [(r["sample_id"], r["turn"], r["turns"]) for r in plain] == [
        (recs[0].sample_id, 1, "2"), (recs[1].sample_id, 2, "2"), (recs[2].sample_id, 1, "2")]
    assert [r["prediction"] for r in aware] == [r["prediction"] for r in plain]
    assert all(r["query_aware"] for r in aware) and all(r["decode_batch_size"] == 1 for r in plain)
    # turn 1 of the second conversation starts again from the compressed context: as the first question did
    single = SweepRunner(model, tok, _cells([("snapkv", 0.0)], False), {"model": "tiny"}).run_group(recs, set())
    assert plain[2]["prediction"] == single[2]["prediction"]


def test_a_decode_rule_runs_through_every_turn(tmp_path, smollm_tokenizer, monkeypatch):
    """streamingllm_online under decode_budget=ratio: the rule starts once and counts every appended token of both
    turns, so after the last step a head holds floor(b (n + m) / n) entries, m the tokens fed in both turns."""
    import harness.attention as A

    _no_eos(monkeypatch)
    tok, model = smollm_tokenizer, tiny_model("llama")
    recs = _conversation(tmp_path, tok)
    starts, last = [], {}
    original_start = A.Masking.evict

    def spy(self):
        original_start(self)
        last.update(valid={i: v.sum(-1) for i, v in self.rules.valid.items()}, m=self.appended.shape[1],
                    slots=next(iter(self.rules.valid.values())).shape[-1])

    monkeypatch.setattr(A.Masking, "evict", spy)
    from methods.streamingllm import StreamingWindow

    real_start = StreamingWindow.start
    monkeypatch.setattr(StreamingWindow, "start", lambda self, layer, *a: starts.append(layer) or
                        real_start(self, layer, *a))
    ctx_ids, turns = _run(model, tok, recs, "streamingllm_online", 0.5, "ratio")
    n = ctx_ids.shape[-1]
    b = n // 2
    assert sorted(starts) == [0, 1]  # once per compressed layer, not once per turn
    assert last["slots"] == b + last["m"]  # every token of both turns was appended
    assert last["m"] > 6 + 6
    want = b * (n + last["m"]) // n
    assert all(v.tolist() == [[want, want]] for v in last["valid"].values())


# ------------------------------------------------------------------------------------------- configuration
def test_turns_and_decode_budget_are_checked_and_recorded_only_when_set():
    from harness.plan import UsageError, build_cells, parse_turns
    from harness.run import compose

    assert parse_turns(1) == 1 and parse_turns(3) == 3 and parse_turns("multi") == "multi"
    for bad in (0, -2, "all", 1.5, True):
        with pytest.raises(UsageError, match="turns must be a positive integer"):
            parse_turns(bad)
    with pytest.raises(UsageError, match="decode_budget must be fixed"):
        build_cells(compose(["decode_budget=grow"]))
    plain = build_cells(compose(["methods=[full,keydiff,h2o_online]", "r=0.5"]))
    ratio = build_cells(compose(["methods=[full,keydiff,h2o_online]", "r=0.5", "decode_budget=ratio"]))
    assert [c.decode_budget for c in plain] == ["fixed"] * 3
    # only a configuration that runs a decode rule is kept at a budget while decoding
    assert [c.decode_budget for c in ratio] == ["fixed", "fixed", "ratio"]
    assert [("decode_budget" in c.identity()) for c in ratio] == [False, False, True]
    assert ratio[2].identity()["decode_budget"] == "ratio"
    assert [c.identity() for c in plain[:2]] == [c.identity() for c in ratio[:2]]


def test_run_context_has_turns_only_when_not_one():
    from types import SimpleNamespace

    from harness.run import compose, run_context

    cfg = compose([])
    model = SimpleNamespace(chat_template_kwargs={}, name="m", hub_id="h", path=None, package=None, source=None)
    plan = SimpleNamespace(model=model, task_name="t", task_params={}, turns=1)
    assert "turns" not in run_context(cfg, plan, "float32", "cpu")
    plan.turns = "multi"
    assert run_context(cfg, plan, "float32", "cpu")["turns"] == "multi"
