"""LooGLE: metrics on hand-worked predictions, official and kvpress layouts, shared contexts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.records import Record
from tasks import DataMissing, make_task
from tasks import metrics_text as M
from tasks.data import load_json
from tasks.loogle import cloze_counts, cloze_micro, parse_cloze, read_cloze_answer

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
    assert read_cloze_answer(["Bob", "Paris"]) == {"<mask-0>": "Bob", "<mask-1>": "Paris"}  # hub rows
    assert read_cloze_answer('{"<mask-0>": "Bob"}') == {"<mask-0>": "Bob"}  # kvpress's json.dumps
    assert parse_cloze("The answer is {'<mask-0>': 'Bob'}") is None  # extra words: official eval fails too
    assert parse_cloze("['Bob']") is None  # not a dict
    assert parse_cloze("__import__('os').system('echo pwned')") is None  # never evaluated
    assert parse_cloze("{'<mask-0>': 'a' * 10**9}") is None  # not built: over the size limit


# (model answer, what the official ``eval(answer)`` + ``isinstance(dict)`` gives), worked out by hand
EVAL_CASES = [
    # JSON literals are undefined names to eval: NameError, the whole answer scores 0 of all masks
    ('{"<mask-0>": "Bob", "<mask-1>": null}', None),
    ('{"<mask-0>": "Bob", "<mask-1>": true}', None),
    ('{"<mask-0>": "Bob", "<mask-1>": false}', None),
    ('{"<mask-0>": "Bob", "<mask-1>": NaN}', None),
    ('{"<mask-0>": "Bob", "<mask-1>": None}', {"<mask-0>": "Bob", "<mask-1>": None}),
    # expressions eval computes and ast.literal_eval refuses
    ("{'<mask-0>': 'Bob' + ' Lee'}", {"<mask-0>": "Bob Lee"}),
    ("{'<mask-0>': 'Bob', **{'<mask-1>': 'Ann'}}", {"<mask-0>": "Bob", "<mask-1>": "Ann"}),
    ("{'<mask-0>': f'Bob {1 + 1}'}", {"<mask-0>": "Bob 2"}),
    ("{'<mask-0>': 'ab' * 2, '<mask-1>': -(2 ** 3) // 3}", {"<mask-0>": "abab", "<mask-1>": -3}),
    ("{'<mask-0>': 'Bob' 'by'}", {"<mask-0>": "Bobby"}),  # adjacent strings
    ("{'<mask-0>': 'Bob', } # done", {"<mask-0>": "Bob"}),  # trailing comma and comment
    ("\t {'<mask-0>': 'Bob'}", {"<mask-0>": "Bob"}),  # eval skips leading spaces and tabs
    ("\n{'<mask-0>': 'Bob'}\n", {"<mask-0>": "Bob"}),
    # errors eval raises
    ("\n\n {'<mask-0>': 'Bob'}", None),  # IndentationError
    ("\u00a0{'<mask-0>': 'Bob'}", None),  # no-break space: SyntaxError
    ("{'<mask-0>': 'Bob' + 1}", None),  # TypeError
    ("{'<mask-0>': 1 / 0}", None),  # ZeroDivisionError
    ("{**['<mask-0>']}", None),  # TypeError: not a mapping
    ("{['<mask-0>']: 'Bob'}", None),  # unhashable key
    ("{'<mask-0>': 'Bob'}\n{'<mask-1>': 'Ann'}", None),  # two expressions
    ("({'<mask-0>': 'Bob'},)", None),  # a tuple, not a dict
    ("None", None),  # the official stand-in for an empty answer
]


@pytest.mark.parametrize("answer, expected", EVAL_CASES)
def test_cloze_parsing_follows_the_official_eval(answer, expected):
    assert parse_cloze(answer) == expected
    # the same outcome as Python's eval of these fixed, harmless strings (builtins withheld: none is used)
    try:
        official = eval(answer, {"__builtins__": {}}, {})  # noqa: S307 - test oracle on constants only
        official = official if isinstance(official, dict) else None
    except Exception:  # noqa: BLE001
        official = None
    assert official == expected


def test_cloze_parsing_residual_difference_is_documented():
    # names and calls eval resolves (builtins, the official scorer's variables) are not followed: scored 0
    assert parse_cloze("dict([('<mask-0>', 'Bob')])") is None
    assert parse_cloze("{'<mask-0>': str('Bob')}") is None
    assert parse_cloze("{'<mask-0>': '%s' % 'Bob'}") is None
    import tasks.loogle as L

    assert "Residual difference" in L.parse_cloze.__doc__ and "dict(a='x')" in L.parse_cloze.__doc__


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


# ------------------------------------------------------------------------------- cloze: official micro average
def _cloze_rec(ref: dict, i: int = 0) -> Record:
    return Record(context_id="c", sample_id=f"shortdep_cloze/0/{i}", suite="loogle", task="shortdep_cloze",
                  context="", question="", answers=[json.dumps(ref)], max_new_tokens=50, metric="exact_match",
                  extra={"cloze_answer": ref}, score_weight=float(len(ref)))


def _row(runner_score, rec: Record, pred: str) -> dict:
    """The result row the engine writes for one prediction (harness/sweep.py SweepRunner.row)."""
    from types import SimpleNamespace as NS

    from harness.sweep import SweepRunner

    method = NS(name="full", params=lambda: {}, rerotate=False)
    cell = NS(run_id="run", config_json="{}", label="full", method=method, r=0.0, budget_tokens=None,
              policy="uniform", query_aware=False, score_key="full", decode_budget="fixed")
    runner = NS(static={"model": "m"}, score=runner_score, extra_scores=None, layers=[0], tokenizer=None,
                prefill="default", prefill_chunk=None)
    return SweepRunner.row(runner, rec, cell, NS(n_kept_mean=1.0, kept_fraction=1.0, kv_bytes=1), pred, 1,
                           NS(n_context_original=1, truncated=False), 1, 1, 1, 0.0, {}, 0.0, 1, 0)


def test_cloze_tables_show_the_official_micro_average(tmp_path):
    from harness import report as R

    task = make_task("loogle", tasks=["shortdep_cloze"])
    one = _cloze_rec({"<mask-0>": "Bob"}, 0)
    four = _cloze_rec({"<mask-0>": "Ann", "<mask-1>": "Paris", "<mask-2>": "Kim", "<mask-3>": "Rome"}, 1)
    preds = {one.sample_id: "{'<mask-0>': 'Bob'}", four.sample_id: "{'<mask-0>': 'Joe'}"}
    # official get_match_score: (1 + 0) matches / (1 + 4) masks = 20 %; a per-question mean would say 50 %
    official = cloze_micro([task.metrics(r, preds[r.sample_id]) for r in (one, four)])
    assert official["exact_match"] == pytest.approx(20.0)
    rows = [_row(task.score, r, preds[r.sample_id]) for r in (one, four)]
    assert [(x["score"], x["score_weight"]) for x in rows] == [(100.0, 1.0), (0.0, 4.0)]
    (tmp_path / "res").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "res" / "part.parquet")
    df = R.load_results(tmp_path / "res")
    assert R.task_cells(R.prepare(df))["score"].tolist() == [pytest.approx(20.0)]
    assert R.summary(df)["score"].tolist() == [pytest.approx(20.0)]  # the suite headline of the tables
    t = R.task_cells(R.prepare(df), ci=True)
    assert t["ci_lo"].iloc[0] <= 20.0 <= t["ci_hi"].iloc[0]
    # rows written before score_weight existed, and other suites, weigh 1: the plain mean
    assert R.task_cells(R.prepare(df.drop(columns=["score_weight"])))["score"].tolist() == [pytest.approx(50.0)]


def test_loaded_cloze_records_weigh_their_masks(tmp_path):
    _write_official(tmp_path)
    rec = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_cloze"]).load(None, None, 0).records[0]
    assert rec.score_weight == 2.0 and rec.extra["cloze_answer"] == {"<mask-0>": "Bob", "<mask-1>": "Ann Lee"}
    qa = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"]).load(None, None, 0).records
    assert {r.score_weight for r in qa} == {1.0}


def test_cloze_counts_official_cases():
    ref = {"<mask-0>": "Ann Lee", "<mask-1>": "Paris"}
    assert cloze_counts(ref, "{'<mask-0>': 'Ann Lee', '<mask-1>': 'paris'}") == (1, 1, 2)  # case matters
    assert cloze_counts(ref, "{'<mask-1>': 'Paris, France'}") == (0, 0, 2)  # "Paris," is not the token "Paris"
    assert cloze_counts(ref, "{'<mask-0>': 'Lee  Ann\\n'}") == (0, 1, 2)  # whitespace split: tokens shared
    assert cloze_counts(ref, '{"<mask-0>": "Ann Lee", "<mask-1>": null}') == (0, 0, 2)  # eval fails: all 0
    assert cloze_counts(ref, "None") == (0, 0, 2)  # an empty answer is scored as "None"
    assert cloze_counts(ref, "{'<mask-0>': 'Ann' + ' Lee'}") == (1, 1, 2)


# ------------------------------------------------------------------------------------------- BERTScore
def test_bertscore_takes_the_official_element(monkeypatch):
    import tasks.loogle as L

    calls = []

    class FakeScorer:  # bert_score's BERTScorer.score(cands, refs) -> (P, R, F)
        def score(self, cands, refs):
            calls.append((cands, refs))
            return [0.1], [0.2], [0.3]

    monkeypatch.setattr(L, "_bert_scorer", lambda: (FakeScorer(), ""))
    task = make_task("loogle", bertscore=True)
    m = task.metrics(_rec("shortdep_qa", ["the reference"]), "the prediction")
    # official: score([reference], [hypothesis], lang="EN")[1]: reference as candidate, element 1
    assert calls == [(["the reference"], ["the prediction"])] and m["bertscore"] == pytest.approx(0.2)
    assert task.metric_status()["bertscore"] == "ran"


# ------------------------------------------------------------------------------ prompts, string for string
DOC = "Chapter {1}: the {input} slot and {{braces}} stay as written.\nAnn met Bob in Paris."
Q_QA = "Who met {Bob}?"
Q_CLOZE = "<mask-0> met <mask-1> in {Paris}."


def _official_prompts(rows: list[dict], task: str) -> list[str]:
    """What the official Prediction/pred_opensource_models.py get_pred builds (its eval of qa_pairs done with
    ast.literal_eval on our own data)."""
    import ast

    prompt_format = PROMPTS[task]
    out = []
    for row in rows:
        if row["qa_pairs"] == "none":
            out.append(prompt_format.format(**{"input": row["input"]}))
        else:
            for j in ast.literal_eval(row["qa_pairs"]):
                out.append(prompt_format.format(**{"Q": j["Q"], "input": row["input"]}))
    return out


HAND_PROMPTS = {  # written out by hand from config/task2prompt.json
    "shortdep_qa": "Please answer the question based on the long texts below. \n" + DOC + "\nQuestion: " + Q_QA
    + "\nAnswer: ",
    "shortdep_cloze": "Please fill in the clozes based on the given long texts below. Each of the placeholder "
    "'<mask-n>' in the question could be an entity of Person, Location or Organiocation. The same masks represent "
    "the same entity. Output a json format answer, for example: {'<mask-0>': 'Bob', '<mask-1>': 'Gorrosion "
    "Magazine','<mask-2>': 'Bethel Horizon'}\n" + DOC + "\n Question: " + Q_CLOZE
    + " What are the masked entities? \nAnswer:",
    "longdep_summarization": "Please generate a summary of the below paper. \n" + DOC + "\n Summarization: ",
}
OFFICIAL_ROWS = {
    "shortdep_qa": [{"input": DOC, "title": "t", "output": "none",
                     "qa_pairs": repr([{"Q": Q_QA, "A": "Ann", "S": ["Ann met Bob"]}])}],
    "shortdep_cloze": [{"input": DOC, "title": "t", "output": "none",
                        "qa_pairs": repr([{"Q": Q_CLOZE, "A": {"<mask-0>": "Ann", "<mask-1>": "Bob"}, "S": []}])}],
    "longdep_summarization": [{"input": DOC, "title": "t", "qa_pairs": "none", "output": "the abstract",
                               "question": "none"}],
}


@pytest.mark.parametrize("layout", ["official", "kvpress"])
@pytest.mark.parametrize("task_name", sorted(HAND_PROMPTS))
def test_prompt_equals_the_official_code_string_for_string(tmp_path, layout, task_name):
    rows = OFFICIAL_ROWS[task_name]
    official = _official_prompts(rows, task_name)
    assert official == [HAND_PROMPTS[task_name]]
    if layout == "official":
        (tmp_path / f"{task_name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # kvpress's create_huggingface_dataset.py applied to the hub's one-row-per-question copy
        q = {"shortdep_qa": Q_QA, "shortdep_cloze": Q_CLOZE, "longdep_summarization": ""}[task_name]
        answer = {"shortdep_qa": "Ann", "shortdep_cloze": json.dumps({"<mask-0>": "Ann", "<mask-1>": "Bob"}),
                  "longdep_summarization": "the abstract"}[task_name]
        (tmp_path / task_name).mkdir()
        pd.DataFrame({"context": [KV_CONTEXT[task_name].format(input=DOC)],
                      "question": [KV_QUESTION[task_name].format(Q=q)], "answer_prefix": [KV_PREFIX[task_name]],
                      "answer": [answer], "task": [task_name], "max_new_tokens": [1]},
                     ).to_parquet(tmp_path / task_name / "test-00000-of-00001.parquet")
    rec = make_task("loogle", data_dir=str(tmp_path), tasks=[task_name]).load(None, None, 0).records[0]
    assert rec.context + rec.question == official[0] and rec.answer_prefix == ""  # no prefix after the turn
    assert rec.context.endswith(DOC) and rec.question == official[0][len(rec.context):]  # the context boundary


# --------------------------------------------------------------------------------------------- data sources
def _official_lines(n_docs: int) -> str:
    rows = [{"input": f"document {i}", "title": f"t{i}", "output": "none",
             "qa_pairs": repr([{"Q": f"q{i}?", "A": f"a{i}", "S": []}])} for i in range(n_docs)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_json_file_of_json_lines_is_read(tmp_path):
    from tasks.data import read_rows

    p = tmp_path / "shortdep_qa.json"  # the hub data.zip's names: <config>.json holding JSON lines
    p.write_text(_official_lines(2))
    assert [r["title"] for r in read_rows(p)] == ["t0", "t1"]
    (tmp_path / "one.json").write_text('[{"a": 1}]')
    assert read_rows(tmp_path / "one.json") == [{"a": 1}]
    (tmp_path / "bad.json").write_text('{"a": 1}\n{"a": ')
    with pytest.raises(ValueError, match="bad.json: line 2"):
        read_rows(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('[{"a": 1},')
    with pytest.raises(ValueError, match="broken.json"):
        read_rows(tmp_path / "broken.json")
    recs = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"]).load(None, None, 0).records
    assert len(recs) == 2


def test_hub_data_zip_is_read_and_named_as_the_full_test_set(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("shortdep_qa.json", _official_lines(6))
    recs = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"]).load(None, None, 0).records
    assert len(recs) == 6
    source = recs[0].extra["data_source"]
    assert "data.zip:shortdep_qa.json" in source and "6 documents" in source and "sample" not in source


def test_sample_files_are_named_as_a_sample(tmp_path, capsys):
    _write_official(tmp_path, "LooGLE-testdata")
    recs = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"]).load(None, None, 0).records
    source = recs[0].extra["data_source"]
    assert str(tmp_path / "LooGLE-testdata" / "shortdep_qa.jsonl") in source
    assert "[a sample, like the GitHub LooGLE-testdata files (5 documents each), not the full test set]" in source
    assert f"loogle/shortdep_qa: data from {source}" in capsys.readouterr().err
    row = _row(lambda r, p: 0.0, recs[0], "x")
    assert row["data_source"] == source  # the rows say which data a run used


def test_check_data_is_one_line_before_any_model(tmp_path, monkeypatch):
    task = make_task("loogle", data_dir=str(tmp_path))
    with pytest.raises(DataMissing) as e:
        task.check_data()
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("bigainlco/LooGLE", "data.zip", "simonjegou/loogle", "LooGLE-testdata/<config>.jsonl",
                 "5-document samples", f"task.data_dir={tmp_path}", "shortdep_qa.jsonl"):
        assert part in msg, part
    # an unreadable file is named in the same one line
    (tmp_path / "shortdep_qa.jsonl").write_text('{"input": "doc"\n')
    with pytest.raises(DataMissing) as e:
        make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa"]).check_data()
    assert "unreadable" in str(e.value) and "shortdep_qa.jsonl: line 1" in str(e.value) and "\n" not in str(e.value)
    # one readable config is enough; the others are skipped by load
    _write_official(tmp_path)
    task = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa", "longdep_qa"])
    task.check_data()
    assert set(task.load(None, 1, 0).skipped) == {"longdep_qa"}
    # the run checks the data before the weights load
    import harness.models as HM
    from harness.run import compose, run

    monkeypatch.setattr(HM, "load_model", lambda *a, **k: pytest.fail("weights loaded before the data check"))
    cfg = compose(["model=tiny-llama-random", "task=loogle", f"task.data_dir={tmp_path / 'empty'}",
                   f"output_dir={tmp_path / 'out'}", "device=cpu", "progress=false"])
    with pytest.raises(DataMissing):
        run(cfg)


def test_cli_missing_data_is_one_error_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-m", "harness", "model=tiny-llama-random", "task=loogle", f"task.data_dir={tmp_path}",
         f"output_dir={tmp_path / 'out'}", "device=cpu"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: loogle: no readable data for shortdep_qa"), out.stderr


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "shortdep_qa.parquet").write_bytes(b"not parquet")
    (tmp_path / "shortdep_cloze.jsonl").write_text(json.dumps(
        {"input": "doc", "title": "t", "output": "none", "qa_pairs": repr([{"Q": "q", "A": "not a dict", "S": []}])}))
    task = make_task("loogle", data_dir=str(tmp_path), tasks=["shortdep_qa", "shortdep_cloze"])
    with pytest.raises(DataMissing) as e:
        task.check_data()
    msg = str(e.value)
    assert "\n" not in msg
    assert "shortdep_qa: unreadable (" in msg and str(tmp_path / "shortdep_qa.parquet") in msg
    assert f"shortdep_cloze: unreadable {tmp_path / 'shortdep_cloze.jsonl'} (ValueError: cannot read cloze answer" in msg
