"""LongBench / LongBench-E: metrics on hand-worked predictions, loaders on every local layout."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest

from tasks import DataMissing, make_task
from tasks import metrics_text as M
from tasks.data import load_json
from tasks.longbench import ALL_TASKS, E_TASKS, EN_TASKS, TASK_METRIC, length_bucket, sample_score


# ------------------------------------------------------------------------------------------------ metrics
def test_normalize_strips_punctuation_articles_whitespace():
    assert M.normalize_answer("  The  Eiffel-Tower, an icon!! ") == "eiffeltower icon"
    assert M.normalize_answer("A theatre") == "theatre"  # article only as a whole word


def test_qa_f1_hand_worked():
    assert M.qa_f1("The Eiffel Tower!", "eiffel tower") == 1.0
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert M.qa_f1("a cat sat", "the cat sat down") == pytest.approx(0.8)
    assert M.qa_f1("", "anything") == 0.0
    # multiset overlap: "paris paris" vs "paris": P = 1/2, R = 1 -> 2/3
    assert M.qa_f1("Paris paris", "Paris") == pytest.approx(2 / 3)


def test_max_over_references_and_first_line_cut():
    # multiple references: best one counts
    assert sample_score("hotpotqa", "Barack Obama", ["George Bush", "Obama"]) == pytest.approx(2 / 3)
    # triviaqa keeps only the first line (after leading newlines)
    assert sample_score("triviaqa", "\n\nParis\nThe answer is London", ["Paris"]) == 1.0
    assert sample_score("triviaqa", "London\nParis", ["Paris"]) == 0.0
    # hotpotqa does not cut: both lines are scored tokens
    assert sample_score("hotpotqa", "Paris\nLondon", ["Paris"]) == pytest.approx(2 / 3)


def test_rouge_l_f_and_failures():
    # the rouge package's summary-level ROUGE-L counts distinct words: LCS "the cat on the mat" holds 4
    # distinct words ({the, cat, on, mat}), each text has 5 distinct words -> P = R = 4/5, F = 0.8
    # (its F carries a 1e-8 epsilon)
    assert M.rouge_l_f("the cat sat on the mat", "the cat was on the mat") == pytest.approx(0.8, abs=1e-6)
    assert M.rouge_l_f("", "reference") == 0.0  # rouge raises on an empty hypothesis -> 0
    assert sample_score("gov_report", "", ["x"]) == 0.0


def test_samsum_first_line_then_rouge():
    s = sample_score("samsum", "Tom and Ann meet.\nDialogue: ...", ["Tom and Ann meet."])
    assert s == pytest.approx(1.0, abs=1e-6)


def test_classification_overlapping_class_names():
    classes = ["Entity", "Other entity", "Animal"]
    # "Entity" is a substring of the truth "Other entity" -> dropped; the right class is alone: 1
    assert M.classification("Other entity", "Other entity", classes) == 1.0
    # two classes named, truth among them -> 1/2
    assert M.classification("Animal or Other entity", "Other entity", classes) == 0.5
    # wrong class only -> 0
    assert M.classification("Animal", "Other entity", classes) == 0.0
    # the official skip quirk: "Other" is removed, so "entity" (next) is never examined and stays -> 1/2
    assert M.classification("Other entity", "Other entity", ["Other", "entity", "Other entity"]) == 0.5
    # trec: first line only
    assert sample_score("trec", "Animal\nOther entity", ["Other entity"], classes) == 0.0


def test_classification_chinese_lsht():
    classes = ["体育", "财经", "国际财经"]
    assert sample_score("lsht", "类别：财经", ["财经"], classes) == 1.0
    # "财经" is inside "国际财经" -> dropped when the truth is 国际财经
    assert sample_score("lsht", "国际财经", ["国际财经"], classes) == 1.0


def test_retrieval_and_count_with_several_integers():
    assert M.retrieval("Paragraph 12", "Paragraph 12") == 1.0
    # integers 12, 3, 12 -> 2 of 3 equal the target
    assert M.retrieval("Paragraph 12, not 3, surely 12", "Paragraph 12") == pytest.approx(2 / 3)
    assert M.retrieval("no number", "Paragraph 4") == 0.0
    assert M.retrieval("Paragraph 21", "Paragraph 2") == 0.0  # whole integers, not substrings
    assert M.retrieval_zh("段落3，也可能是段落5", "段落3") == 0.5
    assert M.count("There are 7 unique paragraphs out of 10", "7") == 0.5
    assert M.count("seven", "7") == 0.0


def test_code_sim_skips_comment_lines():
    pred = "\n# the next line\n```python\n// js comment\nx = compute(a, b)\nreturn x"
    assert M.code_first_line(pred) == "x = compute(a, b)"
    assert M.code_sim(pred, "x = compute(a, b)") == 1.0
    # a line with '#' anywhere (even trailing) is skipped
    assert M.code_first_line("y = 1  # set\nz = 2") == "z = 2"
    assert M.code_first_line("# only\n# comments") == ""
    assert M.code_sim("# only comments", "x = 1") == 0.0


def test_fuzzy_ratio_matches_fuzzywuzzy_levenshtein_semantics():
    from rapidfuzz import fuzz

    # kitten / sitting: LCS "ittn" (4) -> InDel distance 6 + 7 - 8 = 5 -> (13 - 5) / 13 = 0.615 -> 62
    assert M.fuzzy_ratio("kitten", "sitting") == 62
    assert M.fuzzy_ratio("", "") == 100 and M.fuzzy_ratio("a", "") == 0
    for a, b in [("x = 1", "x = 2"), ("return foo(bar)", "return foo(baz, qux)"), ("abc", "cba")]:
        assert M.fuzzy_ratio(a, b) == int(round(fuzz.ratio(a, b)))  # same InDel ratio, rounded like fuzzywuzzy
    # difflib fallback differs in general but agrees on simple cases
    assert M.fuzzy_ratio("kitten", "sitting", "difflib") == 62
    assert sample_score("lcc", "x = compute(a, c)\n", ["x = compute(a, b)"]) == M.fuzzy_ratio(
        "x = compute(a, c)", "x = compute(a, b)") / 100


def test_chinese_metrics_use_jieba_words():
    assert M.qa_f1_zh("北京是中国的首都。", "中国的首都是北京") == 1.0
    assert M.qa_f1_zh("上海", "北京") == 0.0
    # jieba words 我/爱/北京/天安门 vs 我/爱/北京: LCS 3 -> P 3/4, R 1 -> F 6/7
    assert M.rouge_zh("我爱北京天安门", "我爱北京") == pytest.approx(6 / 7, abs=1e-6)


# ------------------------------------------------------------------------------------------------ loaders
def _row(i: int, task: str, length: int = 1000) -> dict:
    answers = {"passage_retrieval_en": [f"Paragraph {i % 3 + 1}"], "passage_count": [str(i)]}.get(task, [f"answer {i}"])
    return {
        "input": f"question {i}?", "context": f"document {i} text", "answers": answers, "length": length,
        "dataset": task, "language": "en", "all_classes": ["A", "B"] if task == "trec" else None, "_id": f"id{i}",
    }


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("layout", ["jsonl", "data_jsonl", "zip", "parquet_file", "parquet_dir"])
def test_loader_layouts(tmp_path, layout):
    rows = [_row(i, "hotpotqa") for i in range(5)]
    if layout == "jsonl":
        _write_jsonl(tmp_path / "hotpotqa.jsonl", rows)
    elif layout == "data_jsonl":
        _write_jsonl(tmp_path / "data" / "hotpotqa.jsonl", rows)
    elif layout == "zip":
        with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
            z.writestr("data/hotpotqa.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    elif layout == "parquet_file":
        pd.DataFrame(rows).to_parquet(tmp_path / "hotpotqa.parquet")
    else:
        (tmp_path / "hotpotqa").mkdir()
        pd.DataFrame(rows).to_parquet(tmp_path / "hotpotqa" / "test-00000-of-00001.parquet")
    data = make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa"]).load(None, None, 0)
    assert len(data.records) == 5 and not data.skipped
    r = next(r for r in data.records if r.sample_id == "hotpotqa/2")
    template = load_json("longbench_dataset2prompt.json")["hotpotqa"]
    assert r.context.endswith("document 2 text") and "{" not in r.context
    assert r.context + r.question == template.format(context="document 2 text", input="question 2?")
    assert r.question.endswith("Question: question 2?\nAnswer:")
    assert r.answers == ["answer 2"] and r.max_new_tokens == 32 and r.metric == "qa_f1"
    assert r.chat_template and r.length_bucket is None and r.suite == "longbench"


def test_every_task_prompt_splits_at_context(tmp_path):
    prompts, maxlen = load_json("longbench_dataset2prompt.json"), load_json("longbench_dataset2maxlen.json")
    assert set(prompts) == set(ALL_TASKS) == set(maxlen) == set(TASK_METRIC)
    for task in ALL_TASKS:
        _write_jsonl(tmp_path / f"{task}.jsonl", [_row(0, task)])
    data = make_task("longbench", data_dir=str(tmp_path), language="all").load(None, None, 0)
    assert {r.task for r in data.records} == set(ALL_TASKS)
    for r in data.records:
        assert r.context + r.question == prompts[r.task].format(context="document 0 text", input="question 0?")
        assert r.context.endswith("document 0 text")
        assert r.chat_template == (r.task not in {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
        assert r.max_new_tokens == maxlen[r.task]
    trec = next(r for r in data.records if r.task == "trec")
    assert trec.extra["all_classes"] == ["A", "B"]
    assert make_task("longbench").tasks == EN_TASKS and len(EN_TASKS) == 16


def test_subsampling_is_prefix_stable_and_context_ids(tmp_path):
    rows = [_row(i, "qasper") for i in range(20)]
    rows[7]["context"] = rows[3]["context"]  # two questions on one article share a context id
    _write_jsonl(tmp_path / "qasper.jsonl", rows)
    task = make_task("longbench", data_dir=str(tmp_path), tasks=["qasper"])
    ids5 = [r.sample_id for r in task.load(None, 5, 1).records]
    ids12 = [r.sample_id for r in task.load(None, 12, 1).records]
    assert ids12[:5] == ids5 and len(set(ids12)) == 12
    assert [r.sample_id for r in task.load(None, 5, 2).records] != ids5  # the seed matters
    by_id = {r.sample_id: r for r in task.load(None, None, 0).records}
    assert by_id["qasper/3"].context_id == by_id["qasper/7"].context_id
    assert by_id["qasper/3"].context_id != by_id["qasper/4"].context_id


def test_longbench_e_buckets(tmp_path):
    lengths = [100, 3999, 4000, 7999, 8000, 20000]
    _write_jsonl(tmp_path / "lcc_e.jsonl", [_row(i, "lcc", n) for i, n in enumerate(lengths)])
    task = make_task("longbench_e", data_dir=str(tmp_path), tasks=["lcc"])
    assert task.suite == "longbench_e" and len(make_task("longbench_e").tasks) == len(E_TASKS) == 13
    recs = sorted(task.load(None, None, 0).records, key=lambda r: r.sample_id)
    assert [r.length_bucket for r in recs] == [0, 0, 4000, 4000, 8000, 8000]
    assert [length_bucket(n) for n in lengths] == [0, 0, 4000, 4000, 8000, 8000]
    assert all(r.suite == "longbench_e" and not r.chat_template for r in recs)
    with pytest.raises(ValueError, match="narrativeqa"):
        make_task("longbench_e", tasks=["narrativeqa"])  # not a LongBench-E task


def test_missing_data_message_and_partial_skip(tmp_path):
    with pytest.raises(DataMissing) as e:
        make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa", "lcc"]).load(None, 3, 0)
    msg = str(e.value)
    assert "hotpotqa" in msg and "lcc" in msg and "data.zip" in msg and str(tmp_path) in msg
    assert "Xnhyacinth/LongBench" in msg
    _write_jsonl(tmp_path / "lcc.jsonl", [_row(0, "lcc")])
    data = make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa", "lcc"]).load(None, 3, 0)
    assert [r.task for r in data.records] == ["lcc"] and "hotpotqa" in data.skipped
    with pytest.raises(ValueError, match="unknown"):
        make_task("longbench", tasks=["nope"])


def test_score_and_headline():
    task = make_task("longbench")
    from tasks.records import Record

    rec = Record(context_id="c", sample_id="trec/0", suite="longbench", task="trec", context="", question="",
                 answers=["Other entity"], max_new_tokens=64, metric="classification",
                 extra={"all_classes": ["Entity", "Other entity"]})
    assert task.score(rec, "Other entity\nmore") == 100.0
    # categories: single-doc {qasper 50}, multi-doc {hotpotqa 30}, code {lcc 60, repobench-p 40} -> (50+30+50)/3
    assert task.headline({"qasper": 50, "hotpotqa": 30, "lcc": 60, "repobench-p": 40}) == pytest.approx(130 / 3)
    # LongBench-E keys with a bucket suffix are averaged per task first
    assert make_task("longbench_e").headline({"lcc/0-4k": 40, "lcc/4-8k": 60, "qasper": 20}) == pytest.approx(35)


# ------------------------------------------------------------- layouts: official jsonl vs kvpress's processed set
# Expected prompts are the official pred.py's ``dataset2prompt[task].format(**row)``, written out by hand; chat tasks
# then go through pred.py's ``build_chat`` (llama2 form ``[INST]{prompt}[/INST]``, mimicked by ``Llama2Chat``).
# kvpress rows are what kvpress's create_huggingface_dataset.py makes of the same official rows (docs/tasks/longbench.md).
HOTPOT_RULE = "Answer the question based on the given passages. Only give me the answer and do not output any other words."
PASSAGES = "Passage 1:\nAlice Smith\nAlice Smith wrote The Blue Book in 1901.\n\nPassage 2:\nBob\nBob is a painter."
REPORT = "The agency reviewed 12 programs.\nIt found two of them over budget."
TREC_SHOTS = "Question: Who invented the telephone ?\nType: Individual\nQuestion: What is a fjord ?\nType: Definition of something"
DIALOGUES = "Dialogue: Ann: Lunch?\nBob: Sure.\nSummary: Ann and Bob will have lunch.\n\n"
CODE = "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n"
PARAS = "Paragraph 1: The Nile is long.\n\nParagraph 2: Mars is red."
PR_ASK = 'Please enter the number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.'

CASES = {  # name: (task, official row, kvpress row, expected prompt before any chat template)
    "hotpotqa": (
        "hotpotqa",
        {"input": "Who wrote The Blue Book?", "context": PASSAGES},
        {"context": HOTPOT_RULE + "\n\nThe following are given passages.\n" + PASSAGES + "\n\n" + HOTPOT_RULE + "\n\n",
         "question": "Question: Who wrote The Blue Book?\n", "answer_prefix": "Answer:"},
        HOTPOT_RULE + "\n\nThe following are given passages.\n" + PASSAGES + "\n\n" + HOTPOT_RULE
        + "\n\nQuestion: Who wrote The Blue Book?\nAnswer:",
    ),
    "gov_report": (  # no {input} in the template
        "gov_report",
        {"input": "", "context": REPORT},
        {"context": "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n"
         + REPORT + "\n\n", "question": "Now, write a one-page summary of the report.\n\n", "answer_prefix": "Summary:"},
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n" + REPORT
        + "\n\nNow, write a one-page summary of the report.\n\nSummary:",
    ),
    "passage_retrieval_en": (
        "passage_retrieval_en",
        {"input": "A river in Africa.", "context": PARAS},
        {"context": "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
         "abstract is from.\n\n" + PARAS + "\n\nThe following is an abstract.\n\n",
         "question": "A river in Africa.\n\n" + PR_ASK + "\n\n", "answer_prefix": "The answer is: "},
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is "
        "from.\n\n" + PARAS + "\n\nThe following is an abstract.\n\nA river in Africa.\n\n" + PR_ASK + "\n\nThe answer is: ",
    ),
    "trec": (  # no chat template; kvpress cut "Type:" off the input into answer_prefix
        "trec",
        {"input": "Question: What is the capital of Peru ?\nType:", "context": TREC_SHOTS},
        {"context": "Please determine the type of the question below. Here are some examples of questions.\n\n"
         + TREC_SHOTS + "\n", "question": "Question: What is the capital of Peru ?\n", "answer_prefix": "Type:"},
        "Please determine the type of the question below. Here are some examples of questions.\n\n" + TREC_SHOTS
        + "\nQuestion: What is the capital of Peru ?\nType:",
    ),
    "samsum": (
        "samsum",
        {"input": "Dialogue: Tom: Late again.\nSue: Sorry!\nSummary:", "context": DIALOGUES},
        {"context": "Summarize the dialogue into a few short sentences. The following are some examples.\n\n" + DIALOGUES
         + "\n\n", "question": "Dialogue: Tom: Late again.\nSue: Sorry!\n", "answer_prefix": "Summary:"},
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n" + DIALOGUES
        + "\n\nDialogue: Tom: Late again.\nSue: Sorry!\nSummary:",
    ),
    "samsum_nothing_cut": (  # input ends "Summary: " (a space): kvpress's removesuffix("Summary:") cut nothing
        "samsum",
        {"input": "Dialogue: Tom: Late again.\nSue: Sorry!\nSummary: ", "context": DIALOGUES},
        {"context": "Summarize the dialogue into a few short sentences. The following are some examples.\n\n" + DIALOGUES
         + "\n\n", "question": "Dialogue: Tom: Late again.\nSue: Sorry!\nSummary: ", "answer_prefix": "Summary:"},
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n" + DIALOGUES
        + "\n\nDialogue: Tom: Late again.\nSue: Sorry!\nSummary: ",
    ),
    "lcc": (  # no {input}, empty question
        "lcc",
        {"input": "", "context": CODE},
        {"context": "Please complete the code given below. \n" + CODE, "question": "",
         "answer_prefix": "Next line of code:\n"},
        "Please complete the code given below. \n" + CODE + "Next line of code:\n",
    ),
}
CHAT_TASKS = {"hotpotqa", "gov_report", "passage_retrieval_en"}  # pred.py: build_chat for all but trec, triviaqa, ...


class Llama2Chat:
    """A tokenizer stand-in whose chat template is pred.py's llama2 ``build_chat``: ``[INST]{prompt}[/INST]``."""

    chat_template = "[INST]{{ messages[0]['content'] }}[/INST]"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, **kw):
        assert len(messages) == 1 and messages[0]["role"] == "user" and add_generation_prompt and not tokenize
        return f"[INST]{messages[0]['content']}[/INST]"


def _meta(i: int, task: str) -> dict:
    return {"answers": [f"answer {i}"], "length": 3000 + i, "all_classes": ["Location", "Human"] if task == "trec" else None,
            "language": "en", "_id": f"id-{task}-{i}", "dataset": task}


def _official(case: str) -> dict:
    task, off, _, _ = CASES[case]
    return {**off, **_meta(0, task)}


def _kvpress(case: str) -> dict:
    task, _, kv, _ = CASES[case]
    return {**kv, **_meta(0, task), "task": task, "max_new_tokens": load_json("longbench_dataset2maxlen.json")[task] + 20}


def _prompt(rec) -> str:
    from harness.protocol import render_parts

    return "".join(render_parts(Llama2Chat(), rec))


@pytest.mark.parametrize("case", list(CASES))
def test_both_layouts_render_the_official_prompt(tmp_path, case):
    task, _, _, expected = CASES[case]
    if task in CHAT_TASKS:
        expected = f"[INST]{expected}[/INST]"
    _write_jsonl(tmp_path / "official" / f"{task}.jsonl", [_official(case)])
    (tmp_path / "kvpress" / task).mkdir(parents=True)  # kvpress's set downloaded: <task>/test-*.parquet
    pd.DataFrame([_kvpress(case)]).to_parquet(tmp_path / "kvpress" / task / "test-00000-of-00001.parquet")
    recs = {}
    for layout in ("official", "kvpress"):
        t = make_task("longbench", data_dir=str(tmp_path / layout), tasks=[task])
        t.check_data()
        (recs[layout],) = t.load(None, None, 0).records
        assert recs[layout].extra["layout"] == layout and str(tmp_path / layout) in recs[layout].extra["data_source"]
        assert recs[layout].extra["data_source"].endswith(f"({layout} layout)")
        prompt = _prompt(recs[layout])
        assert prompt == expected  # string for string what pred.py feeds the model
        question = _official(case)["input"].removesuffix("Type:").removesuffix("Summary:").strip()
        if question:
            assert prompt.count(question) == 1  # the question once (it was dropped from kvpress rows)
        document = CASES[case][1]["context"]
        instruction = expected.removeprefix("[INST]")[: expected.removeprefix("[INST]").index(document)]
        assert prompt.count(instruction) == 1  # the instruction once (it was prepended twice to kvpress rows)
    official, kvpress = recs["official"], recs["kvpress"]
    # same split at the document, so the same compression, context id and decode on either layout
    assert (official.context, official.question, official.answer_prefix, official.context_id) == (
        kvpress.context, kvpress.question, kvpress.answer_prefix, kvpress.context_id)
    assert official.context.endswith(CASES[case][1]["context"])
    assert official.max_new_tokens == kvpress.max_new_tokens == load_json("longbench_dataset2maxlen.json")[task]
    assert official.chat_template == kvpress.chat_template == (task in CHAT_TASKS)


def test_kvpress_hub_rows_default_hub_and_longbench_e(monkeypatch):
    import tasks.longbench as LB

    asked = []

    def fake_hub_rows(repo, config, split):
        asked.append((repo, config, split))
        row = _kvpress("hotpotqa")
        return [{**row, "length": n, "_id": f"e{n}"} for n in (1000, 5000, 9000)]

    monkeypatch.setattr(LB, "hub_rows", fake_hub_rows)
    task = make_task("longbench_e", tasks=["hotpotqa"])
    task.check_data()
    recs = sorted(task.load(None, None, 0).records, key=lambda r: r.extra["length"])
    assert asked == [("Xnhyacinth/LongBench", "hotpotqa_e", "test")]  # read once: check_data, then load
    assert [r.length_bucket for r in recs] == [0, 4000, 8000]
    for r in recs:
        assert r.extra["layout"] == "kvpress"
        assert r.extra["data_source"] == "hub Xnhyacinth/LongBench config hotpotqa_e (kvpress layout)"
        assert _prompt(r) == "[INST]" + CASES["hotpotqa"][3] + "[/INST]"


@pytest.mark.parametrize(
    "row, found",
    [
        ({"prompt": "p", "answer": "a"}, "answer, prompt"),  # neither layout
        ({**_official("hotpotqa"), "question": "q", "answer_prefix": "A:"}, "answer_prefix"),  # both at once
        ({"context": "c", "question": "q", "answers": ["a"]}, "answers, context, question"),  # kvpress without prefix
    ],
)
def test_row_of_neither_layout_is_one_clear_error(tmp_path, row, found):
    from tasks.longbench import LayoutError

    _write_jsonl(tmp_path / "hotpotqa.jsonl", [_official("hotpotqa"), row])
    task = make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa"])
    with pytest.raises(LayoutError) as e:
        task.check_data()  # before any model loads
    msg = str(e.value)
    assert "\n" not in msg and "hotpotqa.jsonl row 1: a row with fields " in msg and found in msg
    assert "input, context, answers" in msg and "context, question, answer_prefix, answers" in msg
    assert isinstance(e.value, DataMissing)  # the CLI prints it as one error: line


@pytest.mark.parametrize(
    "change, what",
    [
        ({"context": PASSAGES}, "context"),  # the instruction is not in the context: not kvpress's rendering
        ({"question": "Who wrote The Blue Book?"}, "question + answer_prefix"),  # no "Question: " label
        ({"answer_prefix": "A:"}, "question + answer_prefix"),
        ({"task": "musique"}, "task 'musique'"),
    ],
)
def test_kvpress_row_that_is_not_the_official_prompt_is_refused(tmp_path, change, what):
    from tasks.longbench import LayoutError

    _write_jsonl(tmp_path / "hotpotqa.jsonl", [{**_kvpress("hotpotqa"), **change}])
    with pytest.raises(LayoutError, match="row 0") as e:
        make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa"]).check_data()
    assert what in str(e.value) and "\n" not in str(e.value)


def test_unreadable_file_is_one_clear_error(tmp_path):
    from tasks.longbench import LayoutError

    (tmp_path / "lcc.jsonl").write_text('{"input": "", "context": "x"\n', encoding="utf-8")
    with pytest.raises(LayoutError, match="lcc.jsonl cannot be read") as e:
        make_task("longbench", data_dir=str(tmp_path), tasks=["lcc"]).check_data()
    assert "\n" not in str(e.value)


def test_check_data_names_each_reason_once(tmp_path, monkeypatch):
    import tasks.longbench as LB

    with pytest.raises(DataMissing) as e:
        make_task("longbench", data_dir=str(tmp_path)).check_data()
    msg = str(e.value)
    assert "\n" not in msg and msg.count("looked for") == 1 and len(msg) < 1200, msg
    assert all(t in msg for t in EN_TASKS) and "data.zip" in msg and "docs/tasks/longbench.md" in msg

    calls = []

    def offline(repo, config, split):
        calls.append(config)
        raise ConnectionError(f"the Hugging Face hub is not reachable (needed for {repo})")

    monkeypatch.setattr(LB, "hub_rows", offline)
    with pytest.raises(DataMissing) as e:
        make_task("longbench").check_data()
    msg = str(e.value)
    assert calls == ["narrativeqa"]  # tried once, not 16 times
    assert msg.count("not reachable") == 1 and "config narrativeqa" not in msg and len(msg) < 1200, msg
    # some tasks present: check_data passes, the others are skipped with a short reason
    _write_jsonl(tmp_path / "lcc.jsonl", [_official("lcc")])
    task = make_task("longbench", data_dir=str(tmp_path), tasks=["hotpotqa", "lcc"])
    task.check_data()
    data = task.load(None, None, 0)
    assert [r.task for r in data.records] == ["lcc"] and len(data.skipped["hotpotqa"]) < 300


def test_missing_data_stops_the_run_before_weights_load(tmp_path, monkeypatch):
    import harness.models as HM
    from harness.run import compose, run

    monkeypatch.setattr(HM, "load_model", lambda *a, **k: pytest.fail("weights loaded before the data check"))
    cfg = compose(["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu", "task=longbench",
                   f"task.data_dir={tmp_path / 'none'}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(DataMissing, match="longbench: no data for 16 task"):
        run(cfg)
    _write_jsonl(tmp_path / "bad" / "trec_e.jsonl", [{"prompt": "p"}])
    cfg = compose(["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu", "task=longbench_e",
                   f"task.data_dir={tmp_path / 'bad'}", f"output_dir={tmp_path / 'out'}", "task.tasks=[trec]"])
    with pytest.raises(DataMissing, match="neither the official LongBench layout"):
        run(cfg)


def test_longbench_e_bucket_labels_agree_in_summary_and_tables():
    from harness import report as R

    # one label per bucket whatever buckets a run holds (the CLI summary passed none: "0", "4k", "8k")
    for buckets in ([], [0, 4000], [0, 4000, 8000], [8000]):
        assert [R.bucket_label("longbench_e", b, buckets) for b in (0, 4000, 8000)] == ["0-4k", "4-8k", "8k+"]
    assert R.bucket_label("ruler", 4096, []) == "4k" and R.bucket_label("longbench", R.NO_BUCKET, []) == "all"
    summ = pd.DataFrame({"model": "m", "suite": "longbench_e", "length_bucket": pd.array([0, 4000, 8000], "Int64"),
                         "method": "full", "r": 0.0, "score": [1.0, 2.0, 3.0], "n": 1, "complete": True,
                         "reference": True})
    text = R.format_summary(summ)
    assert "longbench_e 0-4k" in text and "longbench_e 4-8k" in text and "longbench_e 8k+" in text


def test_cli_without_data_ends_with_one_error_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-m", "harness", "model=tiny-llama-random", "progress=false", "device=cpu", "task=longbench",
         f"task.data_dir={tmp_path / 'none'}", f"output_dir={tmp_path / 'out'}"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: longbench: no data for 16 task(s)")
    assert "loaded in" not in out.stderr  # the model never loaded
