"""The CLI end to end on tiny random models: validation before weights load, rows and their columns, resume,
interruption, shared sweep == separate runs, and every suite through ``python -m harness`` on local files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UsageError
from harness.plan import make_plan
from harness.results import read_rows, result_files
from harness.run import compose, run
from harness.sweep import SweepRunner

ROOT = Path(__file__).resolve().parent.parent
NIAH = "task.tasks=[niah_single_1]"
TINY = ["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu"]


def _cfg(tmp_path, *overrides):
    return compose([*TINY, f"output_dir={tmp_path}", *overrides])


# ------------------------------------------------------------------------------- validation, no weights
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["r=1.0"], "outside [0, 1)"),
        (["r=-0.1"], "outside [0, 1)"),
        (["r=[0.5,1.2]"], "outside [0, 1)"),
        (["methods=[keydiff,nosuch]"], "unknown method 'nosuch'; choose one of"),
        (["budget_policy=greedy"], "budget_policy must be uniform or adaptive"),
        (["budget_tokens=0"], "budget_tokens must be a positive integer"),
        (["model=smollm2-135m", "task=ruler_32k"], "Models that fit: "),
        (["model=nosuch-model"], "unknown model 'nosuch-model'"),
        (["device=gpu0"], "is not a device; use auto, cpu, cuda, cuda:N or cuda:free"),
        (["budget_tokens=true"], "budget_tokens must be a positive integer"),
        (["attn_impl=foo"], "attn_impl='foo' is unknown; choose one of sdpa, eager, flash_attention_2"),
        (["dtype=fp8"], "dtype='fp8' is unknown; choose one of auto, float32"),
        (["seed=abc"], "seed must be an integer >= 0"),
        (["n_samples=-3"], "n_samples must be an integer >= 1 or null"),
        (["max_context=-5"], "max_context must be an integer >= 1 or null"),
        (["max_new_tokens=-1"], "max_new_tokens must be an integer >= 1 or null"),
        (["max_new_tokens=0"], "max_new_tokens must be an integer >= 1 or null"),
    ],
)
def test_bad_configs_fail_before_loading(tmp_path, overrides, message, monkeypatch):
    import harness.models as M

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError, match=None) as err:
        make_plan(_cfg(tmp_path, *overrides))
    assert message in str(err.value)


def test_budget_tokens_replaces_the_default_ratio(tmp_path):
    cells = make_plan(_cfg(tmp_path, "method=keydiff", "budget_tokens=128")).cells
    assert [(c.label, c.r, c.budget_tokens) for c in cells] == [("keydiff", None, 128)]
    cells = make_plan(_cfg(tmp_path, "method=keydiff", "r=[0.5,0.9]")).cells
    assert [(c.r, c.budget_tokens) for c in cells] == [(0.5, None), (0.9, None)]


def test_task_too_long_names_models_that_fit(tmp_path):
    with pytest.raises(UsageError) as err:
        make_plan(compose(["model=smollm2-135m", "task=ruler_32k", f"output_dir={tmp_path}"]))
    text = str(err.value)
    assert "needs 32768 tokens" in text and "holds 8192" in text and "qwen3-4b (40960)" in text


def test_cli_unknown_method_lists_choices(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness", "method=nosuch", f"output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "nestedkv" in out.stderr and "keydiff" in out.stderr  # Hydra lists the available options
    assert not result_files(tmp_path)


def test_cli_bad_ratio_is_one_clear_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness", "method=keydiff", "r=1.5", f"output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: r=1.5 is outside [0, 1)")
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------------------- end to end
def test_rows_sizes_and_resume(tmp_path):
    cfg = _cfg(tmp_path, "method=keydiff", "task=ruler_1k", NIAH, "n_samples=2", "r=0.5")
    rows = run(cfg)
    assert len(rows) == 2
    for col in ["run_id", "config_json", "created_at", "git_commit", "harness_version", "torch_version",
                "transformers_version", "device", "model", "model_source", "dtype", "attn_impl", "method",
                "method_params", "r", "budget_tokens", "budget_policy", "query_aware", "suite", "task",
                "length_bucket", "sample_id", "context_id", "n_context_tokens", "n_question_tokens", "n_kept_mean",
                "kept_fraction", "kv_bytes_full", "kv_bytes_kept", "n_generated_tokens", "prediction", "answers",
                "metric", "score", "prefill_s", "scoring_s", "decode_s", "decode_batch_s", "decode_batch_size",
                "peak_mem_bytes", "peak_mem_prefill_bytes", "peak_mem_decode_batch_bytes"]:
        assert col in rows.columns, col
    # batch figures, named as such: decode_s is the row's equal share of its batch, peak_mem_bytes the larger peak
    assert (rows["decode_s"] * rows["decode_batch_size"] - rows["decode_batch_s"]).abs().max() < 1e-9
    assert (rows["peak_mem_bytes"] == rows[["peak_mem_prefill_bytes", "peak_mem_decode_batch_bytes"]].max(axis=1)).all()
    assert rows["kept_fraction"].between(0.49, 0.5).all()
    assert ((rows["kv_bytes_kept"] / rows["kv_bytes_full"]) - rows["kept_fraction"]).abs().max() < 1e-9
    assert (rows["metric"] == "string_match_all").all() and rows["score"].between(0, 100).all()
    assert json.loads(rows["config_json"].iloc[0])["method"] == "keydiff"
    files = result_files(tmp_path)
    again = run(cfg)  # resume: nothing left to do
    assert len(again) == 2 and result_files(tmp_path) == files
    more = run(_cfg(tmp_path, "method=keydiff", "task=ruler_1k", NIAH, "n_samples=3", "r=0.5"))
    assert len(more) == 3 and not more.duplicated(["run_id", "sample_id"]).any()


def _interrupt_on_third_context(monkeypatch):
    """Make SweepRunner.run_group raise KeyboardInterrupt on its third call; returns the original method."""
    original = SweepRunner.run_group
    calls = {"n": 0}

    def dies_on_third_context(self, group, done):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, group, done)

    monkeypatch.setattr(SweepRunner, "run_group", dies_on_third_context)
    return original


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "methods=[keydiff,streamingllm]", "task=ruler_1k", NIAH, "n_samples=3", "r=[0.5,0.9]",
               "max_new_tokens=8")
    original = _interrupt_on_third_context(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    partial = read_rows(tmp_path)
    assert len(partial) == 2 * 4  # two contexts x four configurations survived
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    monkeypatch.setattr(SweepRunner, "run_group", original)
    rows = run(cfg)
    assert len(rows) == 3 * 4
    assert not rows.duplicated(["run_id", "sample_id"]).any()
    assert len(pd.concat([pd.read_parquet(p) for p in result_files(tmp_path)])) == 12  # on disk too


def test_rerun_under_the_same_job_name_keeps_earlier_rows(tmp_path, monkeypatch):
    """An interrupted run and its resume share a job name (an explicit job=, or the default one when both
    start in the same second): the resume must not overwrite the part files the first run wrote."""
    cfg = _cfg(tmp_path, "methods=[keydiff]", "task=ruler_1k", NIAH, "n_samples=3", "r=[0.5]", "max_new_tokens=8",
               "job=fixed")
    original = _interrupt_on_third_context(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    first = read_rows(tmp_path)
    assert len(first) == 2
    monkeypatch.setattr(SweepRunner, "run_group", original)
    run(cfg)  # resumes: only the third context is new
    rows = read_rows(tmp_path)
    assert len(rows) == 3 and not rows.duplicated(["run_id", "sample_id"]).any()
    assert set(first["sample_id"]) < set(rows["sample_id"])
    run(cfg)  # a complete rerun adds nothing and loses nothing
    assert len(read_rows(tmp_path)) == 3


def test_corrupt_result_file_is_one_clear_error(tmp_path):
    (tmp_path / "part-bad.parquet").write_bytes(b"not parquet")
    out = subprocess.run(
        [sys.executable, "-m", "harness", *TINY, "method=keydiff", "task=ruler_1k", NIAH, "n_samples=1",
         f"output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    assert "part-bad.parquet cannot be read" in out.stderr and "Move or delete it" in out.stderr


def test_shared_sweep_equals_separate_runs(tmp_path):
    grid = ["task=ruler_1k", "task.tasks=[niah_single_1,vt]", "n_samples=2", "max_new_tokens=12"]
    methods = ["full", "streamingllm", "h2o", "snapkv", "keydiff", "nestedkv", "pyramidkv", "expected_attention",
               "expected_attention_adaptive", "tova", "knorm"]
    ratios = [0.5, 0.9]
    shared = run(_cfg(tmp_path / "shared", f"methods=[{','.join(methods)}]", f"r=[{','.join(map(str, ratios))}]",
                      "decode_batch_size=16", *grid))
    assert len(shared) == (1 + 10 * 2) * 4
    separate = []
    for m in methods:
        for r in ([0.5] if m == "full" else ratios):
            separate.append(run(_cfg(tmp_path / f"{m}-{r}", f"method={m}", f"r={r}", *grid)))
    separate = pd.concat(separate)
    key = ["run_id", "sample_id"]
    merged = shared.merge(separate, on=key, suffixes=("_shared", "_alone"))
    assert len(merged) == len(shared)  # same run_ids: a shared sweep resumes a separate run and vice versa
    assert (merged["prediction_shared"] == merged["prediction_alone"]).all()
    assert (merged["kv_bytes_kept_shared"] == merged["kv_bytes_kept_alone"]).all()


def test_query_aware_and_budget_tokens(tmp_path):
    rows = run(_cfg(tmp_path, "method=snapkv", "task=ruler_1k", NIAH, "n_samples=1", "r=null",
                    "budget_tokens=[64]", "query_aware=[false,true]"))
    assert sorted(rows["query_aware"].tolist()) == [False, True]
    assert (rows["n_kept_mean"] == 64).all() and (rows["budget_tokens"] == 64).all()
    qa = rows[rows["query_aware"]].iloc[0]
    plain = rows[~rows["query_aware"]].iloc[0]
    assert qa["n_context_tokens"] == plain["n_context_tokens"] + plain["n_question_tokens"] - 1  # question prefilled too
    assert qa["n_question_tokens"] == plain["n_question_tokens"]


@pytest.mark.parametrize("model", ["tiny-qwen3-random", "tiny-gemma3-random"])
def test_every_method_runs_on_other_architectures(tmp_path, model):
    rows = run(compose([f"model={model}", "progress=false", "device=cpu", "dtype=float32", f"output_dir={tmp_path}",
                        "methods=[full,streamingllm,streamingllm_rerotate,h2o,h2o_online,snapkv,snapkv_paper,keydiff,"
                        "keydiff_adaptive,nestedkv,nestedkv_uniform,pyramidkv,expected_attention,"
                        "expected_attention_adaptive,tova,knorm]", "r=[0.25,0.95]", "task=ruler_1k", "task.tasks=[vt]",
                        "max_new_tokens=12",
                        "n_samples=1"]))
    assert len(rows) == 1 + 15 * 2
    if model == "tiny-gemma3-random":
        assert (rows["compressed_layers"] == "[5]").all()


# ------------------------------------------------------------------------------- every suite via the CLI
def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _suite_files(tmp_path: Path) -> dict[str, list[str]]:
    lb = tmp_path / "longbench"
    _jsonl(lb / "hotpotqa.jsonl", [{"input": f"Who wrote book {i}?", "context": "Passage 1: Alice wrote it. " * 20,
                                     "answers": ["Alice"], "length": 80, "all_classes": None, "language": "en",
                                     "_id": f"h{i}"} for i in range(2)])
    _jsonl(lb / "trec.jsonl", [{"input": "What is the capital?", "context": "Question: Who? Type: Human\n" * 10,
                                 "answers": ["Location"], "length": 60, "all_classes": ["Human", "Location"],
                                 "language": "en", "_id": "t0"}])
    _jsonl(lb / "hotpotqa_e.jsonl", [{"input": "Who?", "context": "Bob did it. " * 30, "answers": ["Bob"],
                                       "length": 5000, "all_classes": None, "language": "en", "_id": "e0"}])
    lg = tmp_path / "loogle"
    pairs = [{"Q": "Who is the hero?", "A": "Alice", "S": [], "type": "t"}, {"Q": "Where?", "A": "Paris", "S": []}]
    _jsonl(lg / "shortdep_qa.jsonl", [{"input": "Alice lives in Paris. " * 30, "title": "d", "qa_pairs": repr(pairs),
                                        "output": "none"}])
    mp = tmp_path / "mmlu"
    q = lambda i, cot="": {"question_id": i, "question": f"What is {i}+1?", "options": [str(i), str(i + 1), "x", "y"],  # noqa: E731
                           "answer": "B", "answer_index": 1, "cot_content": cot, "category": "math", "src": "s"}
    _jsonl(mp / "test.jsonl", [q(i) for i in range(2)])
    _jsonl(mp / "validation.jsonl", [q(100 + i, "A: Let's think step by step. The answer is (B).") for i in range(5)])
    ib = tmp_path / "infinitebench"
    _jsonl(ib / "passkey.jsonl", [{"id": 0, "context": "noise. " * 50 + "The pass key is 12345. " + "noise. " * 50,
                                    "input": "What is the pass key?", "answer": ["12345"], "options": []}])
    return {
        "longbench": ["task=longbench", f"task.data_dir={lb}", "task.tasks=[hotpotqa,trec]"],
        "longbench_e": ["task=longbench_e", f"task.data_dir={lb}", "task.tasks=[hotpotqa]"],
        "loogle": ["task=loogle", f"task.data_dir={lg}", "task.tasks=[shortdep_qa]"],
        "mmlu_pro": ["task=mmlu_pro", f"task.data_dir={mp}", "task.max_new_tokens=8"],
        "infinitebench": ["task=infinitebench", f"task.data_dir={ib}", "task.tasks=[passkey]"],
        "infinitebench_synth": ["task=infinitebench_synth_1k", "task.tasks=[passkey,kv_retrieval]"],
    }


@pytest.mark.parametrize(
    "suite, metrics",
    [
        ("longbench", {"qa_f1", "classification"}),
        ("longbench_e", {"qa_f1"}),
        ("loogle", {"rouge_l_recall"}),
        ("mmlu_pro", {"accuracy"}),
        ("infinitebench", {"first_int_match"}),
        ("infinitebench_synth", None),
    ],
)
def test_every_suite_through_the_cli(tmp_path, suite, metrics):
    args = _suite_files(tmp_path)[suite]
    out = subprocess.run(
        [sys.executable, "-m", "harness", *TINY, "methods=[full,keydiff]", "r=0.5", "n_samples=2", "max_new_tokens=16",
         f"output_dir={tmp_path / 'out'}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_rows(tmp_path / "out")
    assert len(rows) > 0 and set(rows["suite"]) == {suite.replace("_synth", "")}
    if metrics is not None:
        assert set(rows["metric"]) == metrics, set(rows["metric"])
    assert rows["score"].between(0, 100).all()
    assert "score (0-100) per method x r" in out.stdout
