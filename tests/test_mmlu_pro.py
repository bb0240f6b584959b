"""MMLU-Pro: official answer extraction (with fallbacks), prompt format, loaders, headline weights."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from tasks import DataMissing, make_task
from tasks.mmlu_pro import FULL_TEST_COUNTS, extract_answer


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
    header = ("The following are multiple choice questions (with answers) about math. Think step by step and then "
              "finish your answer with \"the answer is (X)\" where X is the correct letter choice.\n\n\n\n")
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



# ------------------------------------------------------------------- the official prompt, string for string
NA = ["N/A"] * 6
# official layout (hub columns), categories interleaved in file order: computer science 1, 2, 3; math 4, 5, 6, 7
OFFICIAL_TEST = [
    {"question_id": 4, "question": "What is 2 + 2?", "options": ["4", "5", "6", "7", "8", "9", "10", "11", "12", "13"],
     "answer": "F", "answer_index": 5, "cot_content": "", "category": "math", "src": "ori_mmlu-x"},
    {"question_id": 1, "question": "Which structure is last in, first out?", "options": ["queue", "stack", "heap",
     "tree"] + NA, "answer": "C", "answer_index": 2, "cot_content": "", "category": "computer science", "src": "s"},
    {"question_id": 5, "question": "Is 7 prime?", "options": ["yes", "no", "unknown"] + NA + ["N/A"],
     "answer": "C", "answer_index": 2, "cot_content": "", "category": "math", "src": "s"},
    {"question_id": 2, "question": "Bits in a byte?", "options": [str(k) for k in range(1, 11)], "answer": "A",
     "answer_index": 0, "cot_content": "", "category": "computer science", "src": "s"},
    {"question_id": 6, "question": "3 * 3?", "options": [str(k) for k in range(3, 13)], "answer": "G",
     "answer_index": 6, "cot_content": "", "category": "math", "src": "s"},
    {"question_id": 3, "question": "Sort in O(n log n)?", "options": ["bubble", "merge", "insertion", "a", "b", "c",
     "d", "N/A", "N/A", "N/A"], "answer": "B", "answer_index": 1, "cot_content": "", "category": "computer science",
     "src": "s"},
    {"question_id": 7, "question": "10 / 2?", "options": [str(k) for k in range(5, 15)], "answer": "A",
     "answer_index": 0, "cot_content": "", "category": "math", "src": "s"},
]
OFFICIAL_VAL = [
    {"question_id": 90, "question": "What does CPU stand for?", "options": ["central processing unit", "core power unit"]
     + ["N/A"] * 8, "answer": "A", "answer_index": 0, "category": "computer science", "src": "v",
     "cot_content": "A: Let's think step by step. CPU abbreviates central processing unit. The answer is (A)."},
] + [
    {"question_id": 100 + k, "question": f"{k} + 1?", "options": [str(k + 1), str(k + 2)] + ["N/A"] * 8,
     "answer": "A", "answer_index": 0, "category": "math", "src": "v",
     "cot_content": f"A: Let's think step by step. {k} plus one is {k + 1}. The answer is (A)."}
    for k in range(6)
] + [
    {"question_id": 91, "question": "Is RAM volatile?", "options": ["yes", "no"] + ["N/A"] * 8, "answer": "A",
     "answer_index": 0, "category": "computer science", "src": "v",
     "cot_content": "A: Let's think step by step. RAM loses its content without power. The answer is (A)."},
]


def _official_dir(tmp_path, test=OFFICIAL_TEST, val=OFFICIAL_VAL):
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(test).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    pd.DataFrame(val).to_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet")
    return str(tmp_path)


def test_prompt_is_the_official_one_string_for_string(tmp_path):
    """What evaluate_from_local.py's generate_cot_prompt(val_df, curr, 5) returns, written out by hand: the
    2024-05-23 initial_prompt.txt (three trailing newlines) + "\\n", up to 5 shots of the category, the question."""
    task = make_task("mmlu_pro", data_dir=_official_dir(tmp_path))
    records = {r.sample_id: r for r in task.load(None, None, 0).records}
    cs = ("The following are multiple choice questions (with answers) about computer science. Think step by step "
          "and then finish your answer with \"the answer is (X)\" where X is the correct letter choice.\n\n\n\n"
          "Question:\nWhat does CPU stand for?\nOptions:\nA. central processing unit\nB. core power unit\n"
          "Answer: Let's think step by step. CPU abbreviates central processing unit. The answer is (A).\n\n"
          "Question:\nIs RAM volatile?\nOptions:\nA. yes\nB. no\n"
          "Answer: Let's think step by step. RAM loses its content without power. The answer is (A).\n\n"
          "Question:\nWhich structure is last in, first out?\nOptions:\nA. queue\nB. stack\nC. heap\nD. tree\n"
          "Answer: Let's think step by step.")
    math = ("The following are multiple choice questions (with answers) about math. Think step by step "
            "and then finish your answer with \"the answer is (X)\" where X is the correct letter choice.\n\n\n\n"
            "Question:\n0 + 1?\nOptions:\nA. 1\nB. 2\nAnswer: Let's think step by step. 0 plus one is 1. The answer is (A).\n\n"
            "Question:\n1 + 1?\nOptions:\nA. 2\nB. 3\nAnswer: Let's think step by step. 1 plus one is 2. The answer is (A).\n\n"
            "Question:\n2 + 1?\nOptions:\nA. 3\nB. 4\nAnswer: Let's think step by step. 2 plus one is 3. The answer is (A).\n\n"
            "Question:\n3 + 1?\nOptions:\nA. 4\nB. 5\nAnswer: Let's think step by step. 3 plus one is 4. The answer is (A).\n\n"
            "Question:\n4 + 1?\nOptions:\nA. 5\nB. 6\nAnswer: Let's think step by step. 4 plus one is 5. The answer is (A).\n\n"
            "Question:\nIs 7 prime?\nOptions:\nA. yes\nB. no\nC. unknown\nAnswer: Let's think step by step.")
    assert records["computer_science/1"].context + records["computer_science/1"].question == cs
    assert records["math/5"].context + records["math/5"].question == math
    assert records["math/5"].question == "Question:\nIs 7 prime?\nOptions:\nA. yes\nB. no\nC. unknown\nAnswer: Let's think step by step."
    assert records["math/5"].extra["n_options"] == 3


# ------------------------------------------------------------------------------ random guess on failure
def _official_credits(test_rows: list[dict], subjects: list[str], preds: dict[int, str | None]) -> dict[int, bool]:
    """The official scoring written out: random.seed(12345) once, subjects sorted, questions in file order,
    save_res twice per subject (the second call's credits are reported)."""
    random.seed(12345)
    credited = {}
    for subject in sorted(subjects):
        res = [r for r in test_rows if r["category"] == subject]
        for _call in range(2):  # eval_cot calls save_res twice
            for each in res:
                n = len([o for o in each["options"] if o != "N/A"])
                pred = preds[each["question_id"]]
                if not pred:
                    credited[each["question_id"]] = random.randint(0, n - 1) == each["answer_index"]
                else:
                    credited[each["question_id"]] = pred == each["answer"]
    return credited


def _scores(task, records, preds):
    return {r.extra["question_id"]: task.score(r, preds[r.extra["question_id"]]) for r in records}


def test_random_guess_true_reproduces_the_official_draws_when_every_answer_fails(tmp_path):
    task = make_task("mmlu_pro", data_dir=_official_dir(tmp_path), random_guess_on_fail=True)
    records = task.load(None, None, 0).records
    fail = {q: "no idea, sorry." for q in range(1, 8)}  # no standalone capital A-J anywhere
    assert all(extract_answer(p) is None for p in fail.values())
    official = _official_credits(OFFICIAL_TEST, ["math", "computer science"], {q: None for q in fail})
    # by hand: seed 12345; computer science (4, 10, 7 options) draws 3 0 6, then 2 5 1 (counted); math
    # (10, 3, 10, 10) draws 4 2 6 2, then 5 0 6 4 (counted). Answers: cs 2 0 1, math 5 2 6 0.
    assert official == {1: True, 2: False, 3: True, 4: True, 5: False, 6: True, 7: False}
    assert _scores(task, records, fail) == {q: 100.0 if ok else 0.0 for q, ok in official.items()}
    assert {r.metric for r in records} == {"accuracy_guess"}
    # a parsable answer never draws: right is 100, wrong is 0
    rec = next(r for r in records if r.extra["question_id"] == 1)
    assert task.score(rec, "the answer is (C)") == 100.0 and task.score(rec, "the answer is (D)") == 0.0
    # sample i keeps its draw whatever n_samples is (resume), and a category subset draws as the official -sub
    sub = make_task("mmlu_pro", data_dir=_official_dir(tmp_path), random_guess_on_fail=True).load(None, 1, 0).records
    full = {r.sample_id: r.extra["guess_index"] for r in records}
    assert all(full[r.sample_id] == r.extra["guess_index"] for r in sub)
    only_math = make_task("mmlu_pro", data_dir=_official_dir(tmp_path), random_guess_on_fail=True,
                          categories=["math"]).load(None, None, 0).records
    assert _scores(task, only_math, fail) == {
        q: 100.0 if ok else 0.0
        for q, ok in _official_credits(OFFICIAL_TEST, ["math"], {q: None for q in fail}).items()}


def test_random_guess_reseed_and_off(tmp_path):
    fail = {q: "no letter" for q in range(1, 8)}
    # before 2025-02-23 the official seeded before every draw: randint(0, n - 1) after seed(12345) is
    # 3 for 4 options, 6 for 10, 3 for 7, 1 for 3, so only question 6 (10 options, answer index 6) is credited
    reseed = make_task("mmlu_pro", data_dir=_official_dir(tmp_path), random_guess_on_fail="reseed")
    recs = reseed.load(None, None, 0).records
    assert _scores(reseed, recs, fail) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 100.0, 7: 0.0}
    assert {r.metric for r in recs} == {"accuracy_guess_reseed"}
    off = make_task("mmlu_pro", data_dir=_official_dir(tmp_path))
    recs = off.load(None, None, 0).records
    assert set(_scores(off, recs, fail).values()) == {0.0} and {r.metric for r in recs} == {"accuracy"}
    with pytest.raises(ValueError, match="random_guess_on_fail must be false, true or reseed"):
        make_task("mmlu_pro", random_guess_on_fail="sometimes")


def test_random_guess_setting_is_in_config_json_and_run_id(tmp_path):
    from harness.errors import UsageError
    from harness.plan import make_plan
    from harness.run import compose, run_context

    def cells(value):
        cfg = compose(["model=tiny-llama-random", "method=keydiff", "task=mmlu_pro", f"output_dir={tmp_path}",
                       f"task.random_guess_on_fail={value}"])
        plan = make_plan(cfg)
        ctx = run_context(cfg, plan, "float32", "cpu")
        return [c.bind(ctx) for c in plan.cells], plan

    ids = {}
    for value, metric in (("false", "accuracy"), ("true", "accuracy_guess"), ("reseed", "accuracy_guess_reseed")):
        cs, plan = cells(value)
        assert plan.task.metric == metric
        ids[value] = {c.run_id for c in cs}
        params = json.loads(cs[0].config_json)["task_params"]
        assert str(params["random_guess_on_fail"]).lower() == value
    assert len(set(map(frozenset, ids.values()))) == 3
    with pytest.raises(UsageError, match="random_guess_on_fail must be false, true or reseed"):
        cells("sometimes")


# ------------------------------------------------------------------------------------------ headline
def test_headline_is_sample_weighted():
    task = make_task("mmlu_pro")
    # explicit counts: (50 * 10 + 100 * 30) / 40 = 87.5 (the per-sample mean), not the category mean 75
    assert task.headline({"math": 50.0, "law": 100.0}, counts={"math": 10, "law": 30}) == pytest.approx(87.5)
    # without counts: full test-set sizes (math 1351, law 1101)
    expect = (50 * 1351 + 100 * 1101) / (1351 + 1101)
    assert task.headline({"math": 50.0, "law": 100.0}) == pytest.approx(expect)
    assert sum(FULL_TEST_COUNTS.values()) == 12032


def test_summary_weights_by_the_rows_present():
    """4 rows, one right: the summary says 25.00. Weighting the categories by their full test-set sizes (the
    issue's 11.64) gives 100 * 381 / (381 + 1351 + 1132 + 410) = 11.64 here."""
    from harness import report as R

    rows = [("history", 0, 100.0), ("math", 0, 0.0), ("chemistry", 0, 0.0), ("computer_science", 0, 0.0)]
    df = pd.DataFrame([dict(run_id="x", created_at="2026-01-01T00:00:00Z", model="m", suite="mmlu_pro", task=t,
                            method="full", r=0.0, sample_id=f"{t}/{i}", score=s, metric="accuracy")
                       for t, i, s in rows])
    s = R.summary(df)
    assert s["score"].tolist() == [pytest.approx(25.0)] and s["n"].tolist() == [4]
    assert "25.00 (4)" in R.format_summary(s)
    ci = R.headline_cells(R.prepare(df), ci=True)
    assert ci["score"].tolist() == [pytest.approx(25.0)]


# ------------------------------------------------------------------------------ data checked before weights
def test_check_data_missing_unreadable_or_wrong_layout(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataMissing, match="no test / validation split under") as e:
        make_task("mmlu_pro", data_dir=str(empty)).check_data()
    assert "\n" not in str(e.value) and "task.data_dir=" in str(e.value)
    bad = tmp_path / "bad" / "data"
    bad.mkdir(parents=True)
    (bad / "test-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    (bad / "validation-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DataMissing, match="cannot read the splits under") as e:
        make_task("mmlu_pro", data_dir=str(bad.parent)).check_data()
    assert "\n" not in str(e.value)
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "test.jsonl").write_text(json.dumps({"question": "q", "category": "math"}) + "\n")
    (layout / "validation.jsonl").write_text(json.dumps(OFFICIAL_VAL[1]) + "\n")
    with pytest.raises(DataMissing, match="the test split lacks answer, answer_index, options"):
        make_task("mmlu_pro", data_dir=str(layout)).check_data()
    with pytest.raises(DataMissing, match="no test question of law"):
        make_task("mmlu_pro", data_dir=_official_dir(tmp_path / "ok"), categories=["law"]).check_data()
    with pytest.raises(DataMissing, match="hub disabled"):
        make_task("mmlu_pro", hub=None).check_data()
    make_task("mmlu_pro", data_dir=_official_dir(tmp_path / "ok")).check_data()  # readable: no error


def test_cli_reports_missing_data_before_any_weights_load(tmp_path, monkeypatch):
    import harness.models
    from harness.run import compose, run

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the data check")

    monkeypatch.setattr(harness.models, "load_model", no_weights)
    cfg = compose(["model=tiny-llama-random", "progress=false", "device=cpu", "task=mmlu_pro",
                   f"task.data_dir={tmp_path}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(DataMissing, match="mmlu_pro: data not found"):
        run(cfg)
