"""MMLU-Pro: official answer extraction (with fallbacks), prompt format, loaders, headline weights."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from harness.records import Record
from tasks import DataMissing, make_task
from tasks.mmlu_pro import FULL_TEST_COUNTS, extract_answer, random_guess_correct


# ------------------------------------------------------------------------------------------ extraction
def test_extraction_order_and_fallbacks():
    assert extract_answer("... so the answer is (C).") == "C"
    assert extract_answer("the answer is D") == "D"
    # "answer is" wins over a later "Answer: B"
    assert extract_answer("the answer is (A)\nAnswer: B") == "A"
    # second step: the last "Answer: X" on the first line holding one (greedy .*, no DOTALL)
    assert extract_answer("Step 1: A is wrong. Answer: B, or Answer: E\nAnswer: F") == "E"
    assert extract_answer("final answer:   G") == "G"
    # third step: the last standalone capital A-J anywhere (DOTALL)
    assert extract_answer("Option B looks right.\nActually, pick H.") == "H"
    # quirk kept from the official regex: the pronoun "I" is a standalone letter too
    assert extract_answer("Option B looks right.\nActually I pick H since I see it.") == "I"
    assert extract_answer("Between B and\nC, I choose C") == "C"
    # letters inside words do not count; K is out of range
    assert extract_answer("Because Kelvin.") is None
    assert extract_answer("The answer is (K)") is None
    assert extract_answer("") is None


def test_random_guess_variant_is_the_official_seeded_draw():
    random.seed(12345)
    x = random.randint(0, 9)
    assert random_guess_correct(10, x) and not random_guess_correct(10, (x + 1) % 10)
    rec = Record(context_id="c", sample_id="math/1", suite="mmlu_pro", task="math", context="", question="",
                 answers=[chr(65 + x)], max_new_tokens=10, metric="accuracy",
                 extra={"n_options": 10, "answer_index": x})
    assert make_task("mmlu_pro").score(rec, "no letter here") == 0.0
    assert make_task("mmlu_pro", random_guess_on_fail=True).score(rec, "no letter here") == 100.0
    assert make_task("mmlu_pro").score(rec, f"the answer is ({chr(65 + x)})") == 100.0


# ------------------------------------------------------------------------------------------ loaders
def _q(qid, cat, n_opts=4, answer=1, cot=None):
    opts = [f"opt{k}" for k in range(n_opts)] + ["N/A"] * (10 - n_opts)
    return {"question_id": qid, "question": f"Q{qid}?", "options": opts, "answer": "ABCDEFGHIJ"[answer],
            "answer_index": answer, "cot_content": cot or "", "category": cat, "src": "s"}


def _splits():
    test = [_q(i, "math" if i % 2 else "computer science") for i in range(20)]
    val = [_q(100 + i, "math" if i % 2 else "computer science",
              cot=f"A: Let's think step by step. Work {i}. The answer is (B).") for i in range(14)]
    return test, val


@pytest.mark.parametrize("layout", ["hub_parquet", "jsonl"])
def test_loader_and_prompt(tmp_path, layout):
    test, val = _splits()
    if layout == "hub_parquet":
        (tmp_path / "data").mkdir()
        pd.DataFrame(test).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
        pd.DataFrame(val).to_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet")
    else:
        (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
        (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    task = make_task("mmlu_pro", data_dir=str(tmp_path), max_new_tokens=512)
    data = task.load(None, None, 0)
    assert len(data.records) == 20 and set(data.skipped) == set(FULL_TEST_COUNTS) - {"math", "computer science"}
    math = [r for r in data.records if r.task == "math"]
    assert len(math) == 10 and len({r.context_id for r in math}) == 1  # one 5-shot prefix per category
    assert {r.context_id for r in data.records if r.task == "computer_science"}.isdisjoint({math[0].context_id})
    r = next(r for r in math if r.sample_id == "math/3")
    header = ("You are an expert in math. Below is a series of example questions (with answers) about math for "
              "demonstration. You will be given a question at the end, after the examples, for you to answer. "
              "First give step-by-step reasoning about how to solve the question. Then output the answer.\n")
    shot = ("Question:\nQ{i}?\nOptions:\nA. opt0\nB. opt1\nC. opt2\nD. opt3\n"
            "Answer: Let's think step by step. Work {w}. The answer is (B).\n\n")
    # the first 5 validation examples of the category, in file order (ids 101, 103, ... are math)
    assert r.context == header + "".join(shot.format(i=101 + 2 * k, w=1 + 2 * k) for k in range(5))
    assert r.question == "Question:\nQ3?\nOptions:\nA. opt0\nB. opt1\nC. opt2\nD. opt3\nAnswer: Let's think step by step."
    assert r.answers == ["B"] and r.stop_strings == ["Question:"] and r.max_new_tokens == 512
    assert r.extra["n_options"] == 4 and r.extra["category"] == "math" and r.chat_template


def test_subsampling_and_category_filter(tmp_path):
    test, val = _splits()
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    task = make_task("mmlu_pro", data_dir=str(tmp_path), categories=["computer_science"])
    ids3 = [r.sample_id for r in task.load(None, 3, 7).records]
    ids6 = [r.sample_id for r in task.load(None, 6, 7).records]
    assert ids6[:3] == ids3 and all(i.startswith("computer_science/") for i in ids6)
    with pytest.raises(ValueError, match="valid"):
        make_task("mmlu_pro", categories=["astrology"])


def test_missing_data(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(DataMissing) as e:
        make_task("mmlu_pro", data_dir=str(tmp_path)).load(None, 1, 0)
    msg = str(e.value)
    assert "validation" in msg and "TIGER-Lab/MMLU-Pro" in msg and str(tmp_path) in msg


def test_headline_is_sample_weighted():
    task = make_task("mmlu_pro")
    # explicit counts: (50 * 10 + 100 * 30) / 40 = 87.5 (the per-sample mean), not the category mean 75
    assert task.headline({"math": 50.0, "law": 100.0}, counts={"math": 10, "law": 30}) == pytest.approx(87.5)
    # default: full test-set sizes (math 1351, law 1101)
    expect = (50 * 1351 + 100 * 1101) / (1351 + 1101)
    assert task.headline({"math": 50.0, "law": 100.0}) == pytest.approx(expect)
    assert sum(FULL_TEST_COUNTS.values()) == 12032
