"""LooGLE: metrics on hand-worked predictions, official and kvpress layouts, shared contexts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.records import Record
from tasks import DataMissing, make_task
from tasks import metrics_text as M
from tasks.data import load_json
from tasks.loogle import cloze_counts, cloze_micro, parse_cloze

PROMPTS = load_json("loogle_task2prompt.json")

# kvpress's pieces (evaluation/benchmarks/loogle/create_huggingface_dataset.py), to build its exploded layout
KV_CONTEXT = {
    "shortdep_qa": "Please answer the question based on the long texts below. \n{input}",
    "longdep_qa": "Please answer the question based on the long texts below. \n{input}",
    "shortdep_cloze": PROMPTS["shortdep_cloze"].split("{input}")[0] + "{input}",  # {{ }} escapes kept, as kvpress
    "longdep_summarization": "Please generate a summary of the below paper. \n{input}",
}
KV_QUESTION = {
    "shortdep_qa": "\nQuestion: {Q}\n", "longdep_qa": "\nQuestion: {Q}\n",
    "shortdep_cloze": "\n Question: {Q} What are the masked entities?\n", "longdep_summarization": "{Q}\n",
}
KV_PREFIX = {"shortdep_qa": "Answer: ", "longdep_qa": "Answer: ", "shortdep_cloze": "Answer:",
             "longdep_summarization": "Summarization: "}


def _rec(task: str, answers: list[str], extra: dict | None = None) -> Record:
    return Record(context_id="c", sample_id=f"{task}/0/0", suite="loogle", task=task, context="", question="",
                  answers=answers, max_new_tokens=50, metric="x", extra=extra or {})


# ------------------------------------------------------------------------------------------------ metrics
def test_bleu_official_weights():
    # ref "the cat sat on a mat" / hyp "the cat sat on the mat": clipped unigrams 5/6; 4-grams: only
    # "the cat sat on" of 3 matches -> 1/3; equal lengths, brevity penalty 1
    b1, b4 = M.bleu_1_4("the cat sat on the mat", "the cat sat on a mat")
    assert b1 == pytest.approx(5 / 6) and b4 == pytest.approx(1 / 3)
    assert M.bleu_1_4("totally different", "the cat") == (0.0, 0.0)


def test_rouge_recall():
    # rouge package: distinct n-grams; ref unigrams {the, cat, sat, on, mat} (5), hyp covers 2 -> 0.4;
    # ref bigrams 5 (the cat, cat sat, sat on, on the, the mat), hyp has 1 -> 0.2
    r = M.rouge_recall("the cat", "the cat sat on the mat")
    assert r == {"rouge1": pytest.approx(0.4), "rouge2": pytest.approx(0.2), "rouge_l": pytest.approx(0.4)}
    assert M.rouge_recall("...", "x") == {"rouge1": 0.0, "rouge2": 0.0, "rouge_l": 0.0}


def test_cloze_parsing_without_eval():
    assert parse_cloze("{'<mask-0>': 'Bob', '<mask-1>': 'Paris'}") == {"<mask-0>": "Bob", "<mask-1>": "Paris"}
    assert parse_cloze(' {"<mask-0>": "Bob"}\n') == {"<mask-0>": "Bob"}
    assert parse_cloze(["Bob", "Paris"]) == {"<mask-0>": "Bob", "<mask-1>": "Paris"}
    assert parse_cloze("The answer is {'<mask-0>': 'Bob'}") is None  # extra words: official eval fails too
    assert parse_cloze("['Bob']") is None  # not a dict
    assert parse_cloze("__import__('os').system('echo pwned')") is None  # never evaluated


def test_cloze_exact_and_partial_match():
    ref = {"<mask-0>": "Britney Spears", "<mask-1>": "Las Vegas", "<mask-2>": "Kevin"}
    pred = "{'<mask-0>': 'Britney', '<mask-1>': 'Las Vegas', '<mask-2>': 'Jason', '<mask-3>': 'x'}"
    # exact: only mask-1; partial: mask-0 shares "Britney", mask-1 shares both words, mask-2 none
    assert cloze_counts(ref, pred) == (1, 2, 3)
    assert cloze_counts(ref, "not a dict") == (0, 0, 3)
    assert cloze_counts(ref, "{'<mask-0>': 3}") == (0, 0, 3)  # non-string value never matches
    task = make_task("loogle")
    rec = _rec("shortdep_cloze", [json.dumps(ref)], {"cloze_answer": ref})
    assert task.score(rec, pred) == pytest.approx(100 / 3)
    m = task.metrics(rec, pred)
    assert m["partial_match"] == pytest.approx(2 / 3) and m["n_masks"] == 3
    # official aggregation is micro over masks: (1 + 1) / (3 + 1) exact
    m2 = task.metrics(_rec("shortdep_cloze", ['{"<mask-0>": "A"}']), '{"<mask-0>": "A"}')
    assert cloze_micro([m, m2]) == {"exact_match": pytest.approx(50.0), "partial_match": pytest.approx(75.0)}


def test_qa_score_is_rouge_l_recall_and_metrics_report():
    task = make_task("loogle")
    rec = _rec("shortdep_qa", ["the cat sat on the mat"])
    assert task.score(rec, "the cat") == pytest.approx(40.0)
    m = task.metrics(rec, "the cat")
    assert set(m) == {"bleu1", "bleu4", "rouge1", "rouge2", "rouge_l", "meteor", "bertscore"}
    assert m["bertscore"] is None
    status = task.metric_status()
    assert status["bertscore"].startswith("not run")
    assert status["meteor"] == ("ran" if M.wordnet_available() else "not run: NLTK WordNet not installed locally")
    assert task.score(rec, "") == 0.0  # empty -> "None" as the official evaluation
    bleu_task = make_task("loogle", primary={"shortdep_qa": "bleu1"})
    assert bleu_task.score(rec, "the cat") == pytest.approx(100 * M.bleu_1_4("the cat", "the cat sat on the mat")[0])
    with pytest.raises(ValueError):
        make_task("loogle", primary={"shortdep_qa": "exact_match"})
    with pytest.raises(ValueError):
        make_task("loogle", tasks=["nope"])


# ------------------------------------------------------------------------------------------------ loaders
DOCS = {"doc A": [("Who?", "Alice"), ("Where?", "Paris")], "doc B": [("When?", "1999")], "doc C": [("Why?", "x")]}


def _write_official(tmp_path, sub=""):
    d = tmp_path / sub if sub else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (doc, qas) in enumerate(DOCS.items()):
        pairs = [{"Q": q, "A": a, "S": ["evidence"], "type": "t"} for q, a in qas]
        # the official files store qa_pairs as a Python-literal string
        lines.append({"input": doc, "title": f"title {i}", "qa_pairs": repr(pairs), "output": "none"})
    (d / "shortdep_qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cloze = [{"input": "doc A", "title": "t", "output": "none",
              "qa_pairs": [{"Q": "<mask-0> met <mask-1>.", "A": {"<mask-0>": "Bob", "<mask-1>": "Ann Lee"},
                            "S": []}]}]
    (d / "shortdep_cloze.jsonl").write_text("".join(json.dumps(x) + "\n" for x in cloze))
    summ = [{"input": "paper text", "title": "p", "qa_pairs": "none", "output": "the abstract"}]
    (d / "longdep_summarization.jsonl").write_text("".join(json.dumps(x) + "\n" for x in summ))


def _write_kvpress(tmp_path):
    for task in ["shortdep_qa", "shortdep_cloze", "longdep_summarization"]:
        if task == "shortdep_qa":
            items = [(doc, q, a) for doc, qas in DOCS.items() for q, a in qas]
        elif task == "shortdep_cloze":
            items = [("doc A", "<mask-0> met <mask-1>.", json.dumps({"<mask-0>": "Bob", "<mask-1>": "Ann Lee"}))]
        else:
            items = [("paper text", "", "the abstract")]
        df = pd.DataFrame({
            "context": [KV_CONTEXT[task].format(input=d) for d, _, _ in items],
            "question": [KV_QUESTION[task].format(Q=q) for _, q, _ in items],
            "answer_prefix": KV_PREFIX[task], "answer": [a for _, _, a in items], "task": task,
            "max_new_tokens": 1,
        })
        (tmp_path / task).mkdir()
        df.to_parquet(tmp_path / task / "test-00000-of-00001.parquet")


@pytest.mark.parametrize("layout", ["official", "official_sub", "kvpress"])
def test_loader_layouts_render_the_official_prompt(tmp_path, layout):
    if layout == "kvpress":
        _write_kvpress(tmp_path)
    else:
        _write_official(tmp_path, "LooGLE-testdata" if layout == "official_sub" else "")
    task = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa", "shortdep_cloze", "longdep_summarization"])
    data = task.load(None, None, 0)
    qa = [r for r in data.records if r.task == "shortdep_qa"]
    assert len(qa) == 4 and "longdep_qa" not in data.skipped
    for r in qa:
        doc = r.context.split("\n", 1)[1]
        q = r.question.split("Question: ")[1].split("\n")[0]
        assert r.context + r.question == PROMPTS["shortdep_qa"].format(input=doc, Q=q)
        assert r.max_new_tokens == 300 and r.metric == "rouge_l_recall" and r.answer_prefix == ""
    a = [r for r in qa if r.context.endswith("doc A")]
    assert len(a) == 2 and a[0].context_id == a[1].context_id  # one compressed context for both questions
    assert {r.answers[0] for r in a} == {"Alice", "Paris"}
    cloze = next(r for r in data.records if r.task == "shortdep_cloze")
    assert cloze.context + cloze.question == PROMPTS["shortdep_cloze"].format(input="doc A", Q="<mask-0> met <mask-1>.")
    assert "{'<mask-0>': 'Bob'" in cloze.context  # the {{ }} escapes rendered as single braces
    assert cloze.extra["cloze_answer"] == {"<mask-0>": "Bob", "<mask-1>": "Ann Lee"} and cloze.max_new_tokens == 50
    assert task.score(cloze, "{'<mask-0>': 'Bob', '<mask-1>': 'Ann'}") == 50.0
    summ = next(r for r in data.records if r.task == "longdep_summarization")
    assert summ.context + summ.question == PROMPTS["longdep_summarization"].format(input="paper text")
    assert summ.answers == ["the abstract"] and summ.max_new_tokens == 500


def test_subsampling_keeps_documents_together_and_is_prefix_stable(tmp_path):
    _write_official(tmp_path)
    task = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"])
    full = [r.sample_id for r in task.load(None, None, 3).records]
    assert len(full) == 4 and len(set(full)) == 4
    for n in (1, 2, 3):
        assert [r.sample_id for r in task.load(None, n, 3).records] == full[:n]
    # questions of a document are consecutive
    docs = [sid.split("/")[1] for sid in full]
    assert docs == sorted(docs, key=docs.index)


def test_missing_data(tmp_path):
    with pytest.raises(DataMissing) as e:
        make_task("loogle", data_dir=str(tmp_path)).load(None, 2, 0)
    msg = str(e.value)
    assert "shortdep_qa.jsonl" in msg and "simonjegou/loogle" in msg and str(tmp_path) in msg
    _write_official(tmp_path)
    data = make_task("loogle", data_dir=str(tmp_path)).load(None, 2, 0)
    assert set(data.skipped) == {"longdep_qa"}
