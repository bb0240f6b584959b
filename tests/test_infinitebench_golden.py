"""InfiniteBench records and scores against a committed snapshot (tests/data/infinitebench_golden.json).

The snapshot was written by the single-module ``tasks/infinitebench.py`` before it was split by concern
(docs/tasks/infinitebench.md); the package must give the same records (prompt text, answers, sizes) and the same
scores. Synthetic records are generated at 1k and 2k tokens with the SmolLM2 tokenizer (the one tests use, no
download) in every prompt style; official records come from the small jsonl rows below. Long contexts are kept
as a sha256 and a length to keep the file small.

A deliberate change of records or scores regenerates the snapshot: ``python tests/test_infinitebench_golden.py
--write`` (then say why in the commit).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tasks import make_task
from tasks.records import Record

GOLDEN = Path(__file__).resolve().parent / "data" / "infinitebench_golden.json"
STYLES = ["gpt4", "yarn_mistral", "kvpress"]
# (length, style, n_samples, seed): 7 samples cover every math_find kind
SYNTH = [(1024, "gpt4", 7, 0), (2048, "gpt4", 7, 0), (1024, "gpt4", 2, 1), (1024, "yarn_mistral", 3, 0),
         (2048, "yarn_mistral", 2, 0), (1024, "kvpress", 3, 0), (2048, "kvpress", 2, 0)]

BOOK = "Chapter 1. Mrs Bronwyn had four children.\nThe end."
# one or two rows per task in the official layout (hub / data/<task>.jsonl), quirks included
OFFICIAL_ROWS: dict[str, list[dict]] = {
    "passkey": [
        {"id": 0, "context": "noise\nThe pass key is 12345. Remember it. 12345 is the pass key.\nnoise\n",
         "input": "What is the pass key?", "answer": ["12345"], "options": []},
        {"id": 1, "context": "noise 2", "input": "What is the pass key?", "answer": "54321", "options": []},
    ],
    "number_string": [
        {"id": 0, "context": "noise The sequence of digits is 2200012222. noise", "input":
         "What is the sequence of digits?", "answer": ["2200012222"], "options": []},
    ],
    "kv_retrieval": [
        {"id": 0, "context": 'JSON data:\n{"k1": "v1", "k2": "v2"}',
         "input": '\nKey: "k2"\nThe value associated with the specified key is: ', "answer": ["v2"], "options": []},
    ],
    "longbook_qa_eng": [
        {"id": 0, "context": BOOK, "input": "How many children?", "answer": ["four"], "options": []},
        {"id": 1, "context": BOOK, "input": "Who is the mother?", "answer": ["Mrs Bronwyn", "Bronwyn"],
         "options": []},
    ],
    "longbook_qa_chn": [
        {"id": 0, "context": "第一章。北京很大。", "input": "哪个城市？", "answer": ["北京"], "options": []},
    ],
    "longbook_choice_eng": [
        {"id": 7, "context": BOOK, "input": "Who is not a child?", "answer": ["Peyton"],
         "options": ["Annalisa", "Seb", "Peyton", "Gannonmarie"]},
        {"id": 8, "context": BOOK, "input": "Who is the mother?", "answer": "D",  # letter-only (kvpress' copy)
         "options": ["Annalisa", "Seb", "Peyton", "Mrs Bronwyn"]},
    ],
    "longbook_sum_eng": [
        {"id": 0, "context": BOOK, "input": "", "answer": ["A mother and her children.\nThe end."], "options": []},
    ],
    "longdialogue_qa_eng": [
        {"id": 0, "context": "ACE: Hi.\n$$MASK$$: Hello.", "input": "", "answer": ["GINGER", "ACE"], "options": []},
    ],
    "code_debug": [
        {"id": 0, "context": "def a():\n    pass\n", "input": "", "answer": ["b_fn"],
         "options": ["a_fn", "b_fn", "c_fn", "d_fn"]},
    ],
    "code_run": [
        {"id": 0, "context": "def func_1(x):\n    return x - 3\n",
         "input": "Please give me the exact number of the return value of func_1(-2). Your response should end "
                  "with the sentence 'The return value is:'.", "answer": [-5], "options": []},
    ],
    "math_find": [
        {"id": 0, "prompt": "Find the largest number from the list below:", "context": "[3, 9, 2]",
         "input": "You should answer with only one number, no other words. The largest number of the list is: ",
         "answer": [9], "options": []},
        {"id": 1, "prompt": "Calculate the median number from the list below:", "context": "[4, 1, 3, 2]",
         "input": "You should answer with only one number, no other words. The median number of the list is: ",
         "answer": [2.5], "options": []},
    ],
}

# predictions every record is scored on, besides its own references
PREDICTIONS = [
    "", " ", "A", "B", "C", "D", "AB", "A or B? B", "D\nA", "I think it is A", "The answer is B", "The answer is: C",
    "My answer is: Walking Georgie", "Option B is wrong, see J", "The correct option is C", "answer: D.",
    "12345", "The pass key is 12345.", "Step 1: the pass key is 54321", "714320", "7143-2", "03817",
    "2200012222", "digits: 2200012222, i.e. 2200012222", "v2", 'The value is "v2".', "(v2)", "v2-x", "key:v2}",
    "9", "The answer is 9, not 3", "-9", "9.5", "2.5", "2", "3 or 9", "none",
    "The return value is: -5", "value is `-5`.", "-5 is the answer", "It is 5",
    "four", "The Peyton.", "Peyton and Seb", "Mrs Bronwyn", "北京", "答案：北京。",
    "Ace", "It is Ace Rothstein.", "SPACE", "GINGER", "ginger!",
    "b_fn", "b_fn has the bug", "The answer is: `b_fn`", "The answer is: B, not b_fn",
    "A mother and her children.", "the cat sat on the mat", "c d\na b", "a c\nd x e",
    "A mother\nand her four children\nThe end.", "Summary: a book about a mother.\n\nThe end. The end.",
]
# (metric, references) probes beyond the records' own: the scorers' hand-worked test labels
PROBES = [
    ("first_int_match", ["71432"]), ("first_int_match", ["03817"]),
    ("kv_retrieval_word", ["00a00042-6bcb-494f-9c35-57180f1e7251"]),
    ("math_find_first_number", ["96"]), ("math_find_first_number", ["48.5"]), ("math_find_first_number", ["48.0"]),
    ("last_word_int", ["-14"]), ("choice_letter", ["Walking Georgie", "A"]),
    ("code_debug_letter", ["parse_header", "C"]),
    ("name_in_prediction", ["ACE", "ACE ROTHSTEIN"]), ("qa_f1", ['"Peyton"']), ("qa_f1", ["Peyton", "Seb Bronwyn"]),
    ("qa_f1_zh", ["北京"]), ("rouge_lsum", ["the cat sat on the mat"]), ("rouge_lsum", ["a b\nc d", "a b c\nd e"]),
]


def _record_json(r: Record) -> dict:
    out = {k: v for k, v in vars(r).items() if k != "context"}
    out["context_sha256"] = hashlib.sha256(r.context.encode()).hexdigest()[:20]
    out["context_len"] = len(r.context)
    if len(r.context) <= 400:
        out["context"] = r.context
    return json.loads(json.dumps(out, ensure_ascii=False))


def _scores(task, r: Record, predictions: list[str]) -> list[float]:
    return [task.score(r, p) for p in predictions + list(r.answers)]


def _near(answer: str) -> list[str]:
    """Predictions around a synthetic answer: stated in a sentence, one digit more, one character less."""
    return [f"The answer is {answer}.", answer + "0", answer[:-1], f"{answer}\n{answer}"]


def official(data_dir: Path) -> dict:
    """Records and scores of the official-file path on ``OFFICIAL_ROWS`` written under ``data_dir``."""
    for name, rows in OFFICIAL_ROWS.items():
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (data_dir / f"{name}.jsonl").write_text(text, encoding="utf8")
    out = {}
    for style in STYLES:
        task = make_task("infinitebench", data_dir=str(data_dir), tasks=list(OFFICIAL_ROWS), prompt_style=style,
                         truncate_to=1234)
        data = task.load(None, None, 0)
        out[style] = {"skipped": sorted(data.skipped),
                      "records": [{**_record_json(r), "scores": _scores(task, r, PREDICTIONS)} for r in data.records]}
    return out


def synthetic(tokenizer) -> dict:
    out = {}
    for length, style, n, seed in SYNTH:
        task = make_task("infinitebench_synth", length=length, prompt_style=style)
        data = task.load(tokenizer, n, seed)
        out[f"{length}/{style}/n{n}/seed{seed}"] = [
            {**_record_json(r), "scores": _scores(task, r, _near(r.answers[0]))} for r in data.records
        ]
    return out


def probes() -> list[list[float]]:
    task = make_task("infinitebench", hub=None)
    rows = []
    for metric, answers in PROBES:
        r = Record(context_id="", sample_id="", suite="infinitebench", task="", context="", question="",
                   answers=answers, max_new_tokens=1, metric=metric)
        rows.append([task.score(r, p) for p in PREDICTIONS])
    return rows


def _dumps(value, depth: int = 0) -> str:
    """JSON with one record (or one probe row) per line, so that a diff names the records that changed."""
    flat = not isinstance(value, (dict, list)) or not value or "sample_id" in value
    if flat or (isinstance(value, list) and not isinstance(value[0], (dict, list))):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    pad = "\n" + " " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in sorted(value.items())]
        return "{" + pad + ("," + pad).join(items) + "\n" + " " * depth + "}"
    return "[" + pad + ("," + pad).join(_dumps(v, depth + 1) for v in value) + "\n" + " " * depth + "]"


def snapshot(tokenizer, data_dir: Path) -> dict:
    return {"official": official(data_dir), "synthetic": synthetic(tokenizer), "probes": probes()}


def test_records_and_scores_match_the_snapshot(smollm_tokenizer, tmp_path):
    golden = json.loads(GOLDEN.read_text(encoding="utf8"))
    now = snapshot(smollm_tokenizer, tmp_path)
    assert now["probes"] == golden["probes"]
    assert now["official"] == golden["official"]
    assert now["synthetic"].keys() == golden["synthetic"].keys()
    for key, records in golden["synthetic"].items():
        assert len(now["synthetic"][key]) == len(records), key
        for new, old in zip(now["synthetic"][key], records):
            assert new == old, (key, old["sample_id"])


if __name__ == "__main__":  # python tests/test_infinitebench_golden.py --write
    import os
    import tempfile

    sys.path.insert(0, str(GOLDEN.parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from harness.models import load_tokenizer

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_infinitebench_golden.py --write  (rewrites " + str(GOLDEN) + ")")
    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(load_tokenizer("smollm2-135m"), Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(_dumps(snap) + "\n", encoding="utf8")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
