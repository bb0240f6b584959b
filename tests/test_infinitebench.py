"""InfiniteBench: official scorer quirks on hand-worked predictions, the jsonl loader, local generation."""

from __future__ import annotations

import json

import pytest

from tasks import DataMissing, make_task
from tasks import infinitebench as ib
from tasks.infinitebench import score_prediction as S
from tasks.infinitebench.synth import math_find_answer
from tasks.prompts import largest_fitting, prompt_tokens, render_parts


# ------------------------------------------------------------------------------------------------ metric
def test_first_int_match_passkey_number_string():
    assert S("first_int_match", "The pass key is 71432.", ["71432"]) == 100
    assert S("first_int_match", "71432abc", ["71432"]) == 100
    assert S("first_int_match", "Step 1: the pass key is 71432", ["71432"]) == 0  # only the first integer counts
    assert S("first_int_match", "714320", ["71432"]) == 0  # the whole digit run must equal the label
    assert S("first_int_match", "7143-2", ["71432"]) == 0
    assert S("first_int_match", "", ["71432"]) == 0
    assert S("first_int_match", "digits: 2200012222, i.e. 2200012222", ["2200012222"]) == 100
    assert S("first_int_match", "03817", ["03817"]) == 100  # compared as strings: leading zero kept


def test_kv_retrieval_label_among_words():
    v = "00a00042-6bcb-494f-9c35-57180f1e7251"
    assert S("kv_retrieval_word", f'The value is "{v}".', [v]) == 100
    assert S("kv_retrieval_word", f"{v},and more", [v]) == 100  # comma is a separator
    assert S("kv_retrieval_word", f"key:{v}}}", [v]) == 100  # ':' and '}' are separators
    assert S("kv_retrieval_word", f"({v})", [v]) == 0  # brackets are not separators
    assert S("kv_retrieval_word", f"{v}-x", [v]) == 0  # hyphen joins words
    assert S("kv_retrieval_word", v[:-1], [v]) == 0


def test_math_find_first_number():
    assert S("math_find_first_number", "96", ["96"]) == 100
    assert S("math_find_first_number", "The answer is 96, not 3", ["96"]) == 100
    assert S("math_find_first_number", "3 or 96", ["96"]) == 0
    assert S("math_find_first_number", "-96", ["96"]) == 100  # the sign is not part of the number
    assert S("math_find_first_number", "96.5", ["96"]) == 0
    assert S("math_find_first_number", "48.5", ["48.5"]) == 100  # median of an even-length list
    assert S("math_find_first_number", "48", ["48.0"]) == 100  # float label, integer prediction
    assert S("math_find_first_number", "48", ["48.5"]) == 0
    assert S("math_find_first_number", "none", ["48"]) == 0
    assert S("math_find_first_number", "7", [7]) == 100  # numeric labels as stored in the jsonl


def test_code_run_last_word_int():
    assert S("last_word_int", "The return value is: -14", ["-14"]) == 100
    assert S("last_word_int", "value is `-14`.", ["-14"]) == 100  # backticks and dots are separators
    assert S("last_word_int", "-14 is the answer", ["-14"]) == 0  # only the last word is read
    assert S("last_word_int", "func_3(2) = 5\n7", ["5"]) == 0
    assert S("last_word_int", "It is 14", ["-14"]) == 0
    assert S("last_word_int", "", ["1"]) == 0


def test_choice_letter_extraction():
    label = ["Walking Georgie", "A"]
    assert S("choice_letter", "A", label) == 100
    assert S("choice_letter", "A. Walking Georgie", label) == 100
    assert S("choice_letter", "  Walking Georgie", label) == 100  # the option text itself
    assert S("choice_letter", "I think it is A", label) == 100  # last standalone A-D of the line
    assert S("choice_letter", "A or B? B", label) == 100  # regex miss (B) falls through to the first character
    assert S("choice_letter", "D\nA", label) == 0  # the lookahead stops at the newline: D, then pred[0] == D
    assert S("choice_letter", "The answer is B", label) == 0
    assert S("choice_letter", "My answer is: Walking Georgie", label) == 100  # text after an answer prefix
    assert S("choice_letter", "", label) == 0


def test_code_debug_letter_extraction():
    label = ["parse_header", "C"]
    assert S("code_debug_letter", "C", label) == 100
    assert S("code_debug_letter", "The correct option is C", label) == 100
    assert S("code_debug_letter", "C. parse_header", label) == 100
    assert S("code_debug_letter", "parse_header has the bug", label) == 100  # starts with the function name
    assert S("code_debug_letter", "The answer is: `parse_header`", label) == 100  # after the "answer is:" prefix
    assert S("code_debug_letter", "B", label) == 0
    assert S("code_debug_letter", "Option B is wrong, see J", label) == 0  # last A-J letter is J
    assert S("code_debug_letter", "The answer is: B, not parse_header", label) == 0


def test_longdialogue_name_substring():
    label = ["ACE", "ACE ROTHSTEIN"]
    assert S("name_in_prediction", "Ace", label) == 100
    assert S("name_in_prediction", "It is Ace Rothstein.", label) == 100
    assert S("name_in_prediction", "SPACE", label) == 100  # substring, as official
    assert S("name_in_prediction", "GINGER", label) == 0


def test_qa_f1():
    assert S("qa_f1", "The Peyton.", ['"Peyton"']) == 100
    assert S("qa_f1", "Peyton and Seb", ["Peyton"]) == pytest.approx(50.0)  # P 1/3, R 1
    assert S("qa_f1", "Seb", ["Peyton", "Seb Bronwyn"]) == pytest.approx(2 / 3 * 100)  # best reference
    assert S("qa_f1", "", ["Peyton"]) == 0
    assert S("qa_f1_zh", "答案：北京。", ["北京"]) == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1) * 100)


def test_rouge_lsum_summary_level():
    # one sentence: LCS 5 of 6 reference / 5 prediction tokens: P 1, R 5/6, F 10/11
    assert S("rouge_lsum", "The cat on the mat!", ["the cat sat on the mat"]) == pytest.approx(100 * 10 / 11)
    # sentences are lines: each reference line's union LCS over all prediction lines -> 4/4 (plain ROUGE-L: 2/4)
    assert S("rouge_lsum", "c d\na b", ["a b\nc d"]) == pytest.approx(100.0)
    assert S("rouge_lsum", "a c\nd x e", ["a b c\nd e"]) == pytest.approx(80.0)
    assert S("rouge_lsum", "", ["a b"]) == 0
    assert S("rouge_lsum", "a b", ["x y", "a b"]) == pytest.approx(100.0)  # best reference


# ------------------------------------------------------------------------------------------------ loader
BOOK = "Chapter 1. Mrs Bronwyn had four children.\nThe end."


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf8")


@pytest.fixture
def data_dir(tmp_path):
    _write(tmp_path / "passkey.jsonl", [
        {"id": 0, "context": "noise\nThe pass key is 12345. Remember it. 12345 is the pass key.\nnoise\n",
         "input": "What is the pass key?", "answer": ["12345"], "options": []},
        {"id": 1, "context": "noise 2", "input": "What is the pass key?", "answer": ["54321"], "options": []},
    ])
    _write(tmp_path / "longbook_choice_eng.jsonl", [
        {"id": 7, "context": BOOK, "input": "Who is not a child?", "answer": ["Peyton"],
         "options": ["Annalisa", "Seb", "Peyton", "Gannonmarie"]},
    ])
    _write(tmp_path / "longbook_qa_eng.jsonl", [
        {"id": 0, "context": BOOK, "input": "How many children?", "answer": ["four"], "options": []},
        {"id": 1, "context": BOOK, "input": "Who is the mother?", "answer": ["Mrs Bronwyn"], "options": []},
    ])
    _write(tmp_path / "code_debug.jsonl", [
        {"id": 0, "context": "def a():\n    pass\n", "input": "", "answer": ["b_fn"],
         "options": ["a_fn", "b_fn", "c_fn", "d_fn"]},
    ])
    _write(tmp_path / "code_run.jsonl", [
        {"id": 0, "context": "def func_1(x):\n    return x - 3\n",
         "input": "Please give me the exact number of the return value of func_1(-2). Your response should end "
                  "with the sentence 'The return value is:'.", "answer": [-5], "options": []},
    ])
    _write(tmp_path / "math_find.jsonl", [
        {"id": 0, "prompt": "Find the largest number from the list below:", "context": "[3, 9, 2]",
         "input": "You should answer with only one number, no other words. The largest number of the list is: ",
         "answer": [9], "options": []},
    ])
    _write(tmp_path / "longdialogue_qa_eng.jsonl", [
        {"id": 0, "context": "ACE: Hi.\n$$MASK$$: Hello.", "input": "", "answer": ["GINGER"], "options": []},
    ])
    _write(tmp_path / "longbook_sum_eng.jsonl", [
        {"id": 0, "context": BOOK, "input": "", "answer": ["A mother and her children."], "options": []},
    ])
    return tmp_path


def test_loader_official_layout(data_dir):
    task = make_task("infinitebench", data_dir=str(data_dir), truncate_to=1234)
    data = task.load(None, None, 0)
    by = {}
    for r in data.records:
        by.setdefault(r.task, []).append(r)
    # missing files are skipped with a message naming the file and where to put it
    assert set(data.skipped) == {"number_string", "kv_retrieval"}
    msg = data.skipped["kv_retrieval"]
    assert "kv_retrieval.jsonl" in msg and str(data_dir) in msg and "huggingface.co/datasets" in msg

    pk = by["passkey"]
    assert [r.sample_id for r in pk] == ["passkey/0", "passkey/1"]
    assert pk[0].context.startswith("There is an important info hidden inside a lot of irrelevant text.")
    assert pk[0].context.endswith("12345 is the pass key.\nnoise\n")
    assert pk[0].question == "\n\nWhat is the pass key?"
    assert pk[0].answers == ["12345"] and pk[0].max_new_tokens == 6 and pk[0].metric == "first_int_match"
    assert pk[0].extra["truncate_to"] == 1234 and pk[0].chat_template and pk[0].answer_prefix == ""

    ch = by["longbook_choice_eng"][0]
    assert ch.context == "Read the book and answer the question.\n\n" + BOOK
    assert ch.question == (
        "\n\nQuestion: Who is not a child?\n\nOnly one of the following options is correct, tell me the answer "
        "using one single letter (A, B, C, or D). Don't say anything else.\n"
        "A. Annalisa\nB. Seb\nC. Peyton\nD. Gannonmarie"
    )
    assert ch.answers == ["Peyton", "C"] and ch.max_new_tokens == 40
    assert task.score(ch, "C") == 100 and task.score(ch, "Peyton") == 100 and task.score(ch, "A") == 0

    qa = by["longbook_qa_eng"]
    assert qa[0].context_id == qa[1].context_id and qa[0].sample_id != qa[1].sample_id  # one book, one prefill
    assert qa[1].question == "\n\nQuestion: Who is the mother?\n\nBe very concise."
    assert qa[0].context_id != ch.context_id  # different instruction before the book

    cd = by["code_debug"][0]
    assert cd.answers == ["b_fn", "B"] and cd.max_new_tokens == 5
    assert "Which funtion has deliberate error?\nA. a_fn\nB. b_fn\nC. c_fn\nD. d_fn\n\n" in cd.question

    cr = by["code_run"][0]
    assert cr.context.startswith("Following is a set of Python functions. There is a function called named func_1.")
    assert "return value of func_1(-2). Be concise." in cr.question
    assert cr.answers == ["-5"] and task.score(cr, "The value is -5") == 100

    mf = by["math_find"][0]
    assert mf.context == "What is the largest number in the following list?\n\n[3, 9, 2]"
    assert mf.question.startswith("\n\nYou should answer with only one number")
    assert mf.max_new_tokens == 3 and task.score(mf, "9") == 100

    dl = by["longdialogue_qa_eng"][0]
    assert "The dialogue:\n\n---\n\nACE: Hi." in dl.context and dl.question.startswith("\n\n---\n\nEnd of dialogue.")
    sm = by["longbook_sum_eng"][0]
    assert sm.context == "Summarize the following book.\n\n" + BOOK and sm.question == ""
    assert sm.max_new_tokens == 1200 and sm.metric == "rouge_lsum"

    # n_samples takes the first lines, in file order
    first = task.load(None, 1, 3).records
    assert [r.sample_id for r in first if r.task == "passkey"] == ["passkey/0"]
    assert task.max_length() is None and task.truncate_to == 1234


def test_loader_yarn_mistral_style(data_dir):
    task = make_task("infinitebench", data_dir=str(data_dir), tasks=["passkey", "code_debug"],
                     prompt_style="yarn_mistral")
    recs = {r.task: r for r in task.load(None, 1, 0).records}
    assert not recs["passkey"].chat_template
    assert recs["passkey"].question == "\n\nWhat is the pass key?\n\nThe pass key is"
    assert recs["code_debug"].question.endswith("D. d_fn\n\nThe correct option is:")


def test_loader_kvpress_style(data_dir):
    _write(data_dir / "kv_retrieval.jsonl", [
        {"id": 0, "context": 'JSON data:\n{"k1": "v1", "k2": "v2"}',
         "input": '\nKey: "k2"\nThe value associated with the specified key is: ', "answer": ["v2"], "options": []},
    ])
    task = make_task("infinitebench", data_dir=str(data_dir), prompt_style="kvpress",
                     tasks=["passkey", "kv_retrieval", "longbook_choice_eng", "math_find"])
    recs = {r.task: r for r in task.load(None, 1, 0).records}
    pk = recs["passkey"]
    assert pk.context.endswith("is the pass key.\nnoise\n\n\n") and pk.question == "What is the pass key?"
    assert pk.answer_prefix == "The pass key is:" and pk.max_new_tokens == 6 + 20 and pk.chat_template
    kv = recs["kv_retrieval"]
    assert kv.question == '\nKey: "k2"\n ' and kv.answer_prefix == "The value associated with the specified key is"
    ch = recs["longbook_choice_eng"]
    assert ch.context == "Read the book and answer the question.\n\n" + BOOK + "\n\n"
    assert ch.question.startswith("Who is not a child?\n\nOnly one of the following options is correct")
    assert ch.question.endswith("D. Gannonmarie") and ch.answers == ["Peyton", "C"]
    mf = recs["math_find"]  # kvpress removes the "largest number" instruction from the context
    assert mf.context == "What is the largest number in the following list?\n\n[3, 9, 2]\n\n \n\n"
    assert make_task("infinitebench", prompt_style="kvpress", extra_new_tokens=0).extra_new_tokens == 0


def test_missing_data_is_skipped(tmp_path):
    task = make_task("infinitebench", data_dir=str(tmp_path / "nowhere"), tasks=["passkey", "longbook_qa_eng"])
    data = task.load(None, 2, 0)
    assert data.records == [] and set(data.skipped) == {"passkey", "longbook_qa_eng"}
    assert "longbook_qa_eng.jsonl" in data.skipped["longbook_qa_eng"]
    # no data_dir and the hub disabled: skipped too, never a download
    data = make_task("infinitebench", hub=None, tasks=["passkey"]).load(None, 1, 0)
    assert "passkey.jsonl" in data.skipped["passkey"] and "hub disabled" in data.skipped["passkey"]


def test_official_repo_layout(tmp_path):
    """A clone of OpenBMB/InfiniteBench after scripts/download_dataset.sh: <repo>/data/<task>.jsonl."""
    repo_data = tmp_path / "InfiniteBench" / "data"
    repo_data.mkdir(parents=True)
    _write(repo_data / "passkey.jsonl", [
        {"id": 0, "context": "noise 12345", "input": "What is the pass key?", "answer": ["12345"], "options": []},
    ])
    task = make_task("infinitebench", data_dir=str(tmp_path / "InfiniteBench"), tasks=["passkey", "code_run"])
    task.check_data()
    data = task.load(None, None, 0)
    assert [r.sample_id for r in data.records] == ["passkey/0"] and data.records[0].answers == ["12345"]
    assert "neither code_run.jsonl nor data/code_run.jsonl" in data.skipped["code_run"]


def test_check_data_before_the_model(tmp_path):
    task = make_task("infinitebench", data_dir=str(tmp_path), tasks=["passkey", "math_find"])
    with pytest.raises(DataMissing) as e:
        task.check_data()
    msg = str(e.value)
    assert msg.startswith("InfiniteBench: none of the selected tasks (passkey, math_find) could be read from data_dir=")
    assert f"{tmp_path}/<task>.jsonl" in msg and "the same for 1 more" in msg and "huggingface.co/datasets" in msg
    make_task("infinitebench_synth", length=1024).check_data()  # generated locally: nothing to check


def test_cli_checks_data_before_loading_weights(tmp_path, monkeypatch):
    import harness.models as M
    from harness.run import compose, run

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before the data check"))
    cfg = compose(["task=infinitebench", f"task.data_dir={tmp_path}", "model=tiny-llama-random", "device=cpu",
                   f"output_dir={tmp_path / 'runs'}"])
    with pytest.raises(DataMissing, match="none of the selected tasks"):
        run(cfg)


def test_bad_params_fail_early():
    with pytest.raises(ValueError, match="valid: passkey"):
        make_task("infinitebench", tasks=["passkey", "nope"])
    with pytest.raises(ValueError, match="valid: passkey, number_string, kv_retrieval, math_find"):
        make_task("infinitebench_synth", length=1024, tasks=["longbook_qa_eng"])
    with pytest.raises(ValueError, match="prompt_style"):
        make_task("infinitebench", prompt_style="claude")
    with pytest.raises(ValueError, match="length"):
        make_task("infinitebench_synth")


# --------------------------------------------------------------------------------------------- synthetic
def _rendered_tokens(tok, r):
    """Independent count: the chat template rendered in one piece, tokenised jointly."""
    text = tok.apply_chat_template([{"role": "user", "content": r.context + r.question}], tokenize=False,
                                   add_generation_prompt=True) + r.answer_prefix
    return len(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("length", [1024, 4096])
def test_synthetic_fits_budget(smollm_tokenizer, length):
    task = make_task("infinitebench_synth", length=length)
    assert task.max_length() == length
    data = task.load(smollm_tokenizer, 2, 0)
    assert not data.skipped and len(data.records) == 8
    for r in data.records:
        used = r.extra["n_prompt_tokens"] + r.max_new_tokens
        assert used <= length, (r.sample_id, used)
        assert _rendered_tokens(smollm_tokenizer, r) + r.max_new_tokens <= length + 2
        slack = {"kv_retrieval": 70, "passkey": 30, "number_string": 30, "math_find": 6}[r.task]
        assert used > length - slack, (r.sample_id, used)  # the largest haystack that fits
        assert r.length_bucket == length and r.max_new_tokens == ib.MAX_NEW_TOKENS[r.task]
        if r.task == "passkey":
            key = r.answers[0]
            needle = f"The pass key is {key}. Remember it. {key} is the pass key.\n"
            assert r.context.count(needle) == 1 and r.context.count(key) == 2 and key not in r.question
            assert r.context.count("The pass key is") == 1
            assert task.score(r, f"The pass key is {key}.") == 100
        elif r.task == "number_string":
            key = r.answers[0]
            assert len(key) == 10 and r.context.count(key) == 2
        elif r.task == "kv_retrieval":
            kv = json.loads(r.context.split("JSON data:\n", 1)[1])
            key = r.question.split('"')[1]
            assert kv[key] == r.answers[0] and len(kv) == r.extra["haystack_size"]
        elif r.task == "math_find":
            values = json.loads(r.context.split("\n\n", 1)[1])
            assert len(values) == r.extra["haystack_size"]
            assert r.answers[0] == str(max(values)) if r.extra["kind"] == "largest number" else True


def test_synthetic_deterministic(smollm_tokenizer):
    def load(n, seed=0, length=1024):
        return make_task("infinitebench_synth", length=length).load(smollm_tokenizer, n, seed).records

    a, b = load(3), load(3)
    assert [(r.context, r.question, r.answers) for r in a] == [(r.context, r.question, r.answers) for r in b]
    one = {r.sample_id: r for r in load(1)}
    for r in a:  # sample i does not depend on n_samples
        if r.sample_id in one:
            assert one[r.sample_id].context == r.context and one[r.sample_id].answers == r.answers
    assert len({r.context_id for r in a}) == len(a)
    other = load(1, seed=1)
    assert [r.answers for r in other] != [one[r.sample_id].answers for r in other]
    kinds = [r.extra["kind"] for r in load(7, length=1024) if r.task == "math_find"]
    assert kinds == ib.MATH_FIND_KINDS  # largest / ... / smallest / ... / median


def test_synthetic_math_find_answers():
    assert math_find_answer([5, 9, 9, 7, 1, 1, 3], "second largest number") == 7  # distinct values
    assert math_find_answer([5, 9, 9, 7, 1, 1, 3], "third smallest number") == 5
    assert math_find_answer([4, 1, 3, 2], "median") == 2.5
    assert math_find_answer([4, 1, 3], "median") == 3


def test_haystack_search_is_independent_of_the_guess():
    """The synthetic suite starts each search at the previous sample's size: the answer must not depend on it."""
    count = lambda n: n * 7 + 3  # noqa: E731  (142 * 7 + 3 = 997 <= 1000 < 1004 = 143 * 7 + 3)
    assert {largest_fitting(count, 1000, 0, g) for g in (0, 1, 50, 141, 142, 143, 500, 10_000)} == {142}
    assert largest_fitting(lambda n: 10**6, 1000, 0, 10) is None  # not even the smallest haystack fits


# Llama 3's way of writing a user turn: the content is trimmed, so a question's trailing space is not fed
TRIM_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_synthetic_sizing_counts_what_the_engine_feeds():
    """kvpress' kv_retrieval question ends with a space that a trimming chat template drops: the haystack is sized
    on the prompt the engine feeds (tasks.prompts), not on a rendering of its own."""
    from harness.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    tok.chat_template = TRIM_TEMPLATE
    records = make_task("infinitebench_synth", length=1024, prompt_style="kvpress", tasks=["kv_retrieval"]).load(
        tok, 3, 0).records
    for r in records:
        assert r.question.endswith(" ")
        head, tail = render_parts(tok, r)
        assert not tail.startswith(r.question)  # the space is gone from what the model sees
        fed = sum(len(tok(part, add_special_tokens=False)["input_ids"]) for part in (head, tail))
        assert r.extra["n_prompt_tokens"] == prompt_tokens(tok, r) == fed
        assert fed + r.max_new_tokens <= 1024
