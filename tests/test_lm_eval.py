"""The lm-evaluation-harness adapter (``--model kvcompress``) on a tiny random model and local task files: the
uncompressed method reproduces plain greedy decoding and plain log-likelihoods (so the query-aware split of the
prompt is exact), compression changes them, lm-eval tasks run end to end through the API and the CLI, and the
run says it is query-aware. No downloads: the tasks read a jsonl written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from harness.errors import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="tiny-llama-random", dtype="float32", device="cpu")
PROMPT = ("Alice keeps the red key in the blue box. Bob keeps a green coin under the old mat. " * 4
          + "\nQuestion: Where is the red key?\nAnswer:")

GEN_TASK = """\
task: kvb_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

MC_TASK = """\
task: kvb_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def lm_modules():
    from harness import lm_eval_adapter

    return lm_eval_adapter


@pytest.fixture(scope="module")
def full_lm(lm_modules):
    return lm_modules.KVCompressLM(method="full", **TINY)


@pytest.fixture(scope="module")
def keydiff_lm(lm_modules):
    return lm_modules.KVCompressLM(method="keydiff", r=0.75, **TINY)


@pytest.fixture
def task_dir(tmp_path) -> Path:
    docs = [
        {"context": "The code is 7. The sky is blue. " * 6, "question": "What is the code?", "answer": "7",
         "choices": [" 7", " blue", " nine"], "label": 0},
        {"context": "Alice lives in Paris. The door is red. " * 6, "question": "Where does Alice live?",
         "answer": "Paris", "choices": [" London", " Paris"], "label": 1},
    ]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "kvb_tiny_gen.yaml").write_text(GEN_TASK.format(data=data))
    (tmp_path / "kvb_tiny_mc.yaml").write_text(MC_TASK.format(data=data))
    return tmp_path


def _gen(text, **kwargs):
    return Instance("generate_until", {}, (text, {"until": ["\n"], "max_gen_toks": 6, **kwargs}), 0)


def _plain_greedy(lm, text: str, n: int) -> str:
    ids = torch.tensor([lm._encode(text)])
    out = []
    with torch.no_grad():
        for _ in range(n):
            tok = int(lm.model(input_ids=ids).logits[0, -1].argmax())
            if tok in (lm.tokenizer.eos_token_id, lm.model.config.eos_token_id):
                break
            out.append(tok)
            ids = torch.cat([ids, torch.tensor([[tok]])], dim=-1)
    text = lm.tokenizer.decode(out, skip_special_tokens=True)
    return text.split("\n")[0]


def _plain_loglikelihood(lm, context: str, continuation: str) -> float:
    ctx, cont = lm._encode_pair(context, continuation)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
    logp = torch.log_softmax(logits[len(ctx) - 1 : -1], dim=-1)
    return float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())


# --------------------------------------------------------------------------------------------- the model
def test_registered_and_lm_evals_own_models_still_resolve(lm_modules):
    from lm_eval.api.registry import get_model

    assert get_model("kvcompress") is lm_modules.KVCompressLM
    assert get_model("dummy").__name__ == "DummyLM"  # importing the adapter leaves lm-eval's registry whole


def test_full_method_equals_plain_greedy_and_compression_changes_the_cache(full_lm, keydiff_lm):
    assert full_lm.generate_until([_gen(PROMPT)], disable_tqdm=True) == [_plain_greedy(full_lm, PROMPT, 6)]
    ctx = keydiff_lm._compressed(keydiff_lm._encode(PROMPT))
    n = len(keydiff_lm._encode(PROMPT)) - 1  # the whole prompt but its last token is prefilled and compressed
    assert ctx.n_context == n and ctx.kept_fraction == pytest.approx(0.25, abs=1 / n)
    out = keydiff_lm.generate_until([_gen(PROMPT), _gen(PROMPT, max_gen_toks=2, do_sample=True)], disable_tqdm=True)
    assert len(out) == 2 and all(isinstance(t, str) and "\n" not in t for t in out)


def test_loglikelihood_on_the_compressed_cache(full_lm, keydiff_lm, monkeypatch):
    reqs = [Instance("loglikelihood", {}, (PROMPT, c), i) for i, c in enumerate([" blue box", " mat"])]
    full = full_lm.loglikelihood(reqs, disable_tqdm=True)
    for (lp, greedy), r in zip(full, reqs):
        assert lp == pytest.approx(_plain_loglikelihood(full_lm, *r.args), abs=1e-4) and isinstance(greedy, bool)
    calls = {"n": 0}
    original = keydiff_lm.step.prefill

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    monkeypatch.setattr(keydiff_lm.step, "prefill", counting)
    keydiff_lm._memo = None
    compressed = keydiff_lm.loglikelihood(reqs, disable_tqdm=True)
    assert calls["n"] == 1  # the continuations of one context share its prefill and compression
    assert all(abs(c[0] - f[0]) > 1e-4 for c, f in zip(compressed, full))  # 75 % of the prompt cache removed
    with pytest.raises(NotImplementedError, match="rolling"):
        keydiff_lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("text",), 0)])


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(window_size=32), "method.<name>=<value>"),
        (dict(r=1.5), "outside [0, 1)"),
        (dict(method="nosuch"), "unknown method 'nosuch'"),
        (dict(budget_policy="greedy"), "uniform or adaptive"),
        (dict(dtype="float8"), "dtype='float8' is unknown"),
        (dict(max_gen_toks="many"), "max_gen_toks must be a positive integer"),
        (dict(enable_thinking="maybe"), "enable_thinking must be true or false"),
    ],
)
def test_bad_model_args_fail_before_loading(lm_modules, monkeypatch, args, message):
    monkeypatch.setattr(lm_modules, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError, match=None) as err:
        lm_modules.KVCompressLM(**{**TINY, **args})
    assert message in str(err.value)


def test_model_args_string_method_params_and_budget_tokens(lm_modules):
    lm = lm_modules.KVCompressLM.create_from_arg_string(
        "model=tiny-llama-random,method=snapkv,budget_tokens=64,method.window_size=8,dtype=float32,device=cpu",
        {"device": "cuda", "batch_size": 1},  # what lm-eval adds from its own options: model_args win
    )
    assert lm.cell.budget_tokens == 64 and lm.cell.r is None and lm.cell.method.params()["window_size"] == 8
    assert lm._device.type == "cpu" and lm.name == "kvcompress[tiny-llama-random,snapkv,budget_tokens=64,uniform,query-aware]"
    ids = lm._encode(PROMPT)
    assert lm._compressed(ids).n_kept_mean == 64


# ------------------------------------------------------------------------------------------ lm-eval tasks
def test_simple_evaluate_on_local_tasks(keydiff_lm, task_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model=keydiff_lm, tasks=["kvb_tiny_gen", "kvb_tiny_mc"], task_manager=TaskManager(include_path=str(task_dir)),
        log_samples=True, bootstrap_iters=0,
    )
    assert set(results["results"]) == {"kvb_tiny_gen", "kvb_tiny_mc"}
    assert 0 <= results["results"]["kvb_tiny_gen"]["exact_match,none"] <= 1
    assert 0 <= results["results"]["kvb_tiny_mc"]["acc,none"] <= 1
    info = results["config"]["kvcompress"]
    assert info["query_aware"] is True and "query-aware" in info["protocol"] and info["r"] == 0.75
    assert results["config"]["model_name"] == "kvcompress[tiny-llama-random,keydiff,r=0.75,uniform,query-aware]"
    assert len(results["samples"]["kvb_tiny_gen"]) == 2 and len(results["samples"]["kvb_tiny_mc"]) == 2


def test_cli(task_dir):
    """The README command as written (no --device: lm-eval's own default, cuda:0, must not reach the model)."""
    out = subprocess.run(
        [sys.executable, "-m", "harness.lm_eval_adapter", "--model", "kvcompress", "--model_args",
         "model=tiny-llama-random,method=snapkv,r=0.5,dtype=float32", "--tasks", "kvb_tiny_gen",
         "--include_path", str(task_dir), "--limit", "1", "--output_path", str(task_dir / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "query-aware" in out.stderr and "kvb_tiny_gen" in out.stdout
    (saved_path,) = (task_dir / "out").rglob("results_*.json")
    assert saved_path.parent.name == "tiny-llama-random__snapkv__r=0.5__uniform"  # not just the model's name
    saved = json.loads(saved_path.read_text())
    assert saved["config"]["kvcompress"]["query_aware"] is True and saved["config"]["kvcompress"]["method"] == "snapkv"
    assert saved["config"]["device"] == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert saved["config"]["kvcompress"]["device"].startswith(expected)


@pytest.mark.parametrize(
    "model_args, message",
    [
        ("model=tiny-llama-random,r=1.5", "outside [0, 1)"),
        ("model=tiny-llama-random,window_size=3", "method.<name>=<value>"),
        ("model=nosuch", "unknown model 'nosuch'"),
        ("model=tiny-llama-random,dtype=float8", "dtype='float8' is unknown"),
    ],
)
def test_cli_bad_model_args_are_one_line_and_fast(task_dir, model_args, message):
    import time

    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "harness.lm_eval_adapter", "--model", "kvcompress", "--model_args", model_args,
         "--tasks", "kvb_tiny_gen", "--include_path", str(task_dir), "--output_path", str(task_dir / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    seconds = time.perf_counter() - t0
    assert out.returncode == 2 and message in out.stderr
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: "), out.stderr
    assert seconds < 60  # before lm-eval indexes its tasks or any weights load (seconds on an idle machine)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_fails_before_loading(lm_modules, monkeypatch):
    monkeypatch.setattr(lm_modules, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError, match="needs a CUDA GPU and none is visible"):
        lm_modules.KVCompressLM(model="tiny-llama-random", device="cuda:0")


def test_prepare_argv_device_and_ruler_tokenizer(lm_modules):
    from transformers import AutoTokenizer

    base = ["--model", "kvcompress", "--model_args", "model=tiny-llama-random,r=0.5", "--tasks", "niah_single_1"]
    argv = lm_modules.prepare_argv(base)
    assert argv[0] == "run" and argv[argv.index("--device") + 1] == "auto"  # not lm-eval's default cuda:0
    ref = json.loads(argv[argv.index("--metadata") + 1])["tokenizer"]  # RULER sizes its prompts with it
    assert len(AutoTokenizer.from_pretrained(ref)("one two three").input_ids) == 3  # loads offline, no conf name
    explicit = lm_modules.prepare_argv([*base, "--device", "cpu", "--metadata", "tokenizer=gpt2"])
    assert explicit.count("--device") == 1 and explicit.count("--metadata") == 1
    given = lm_modules.prepare_argv(["-M", "kvcompress", "-a", "model=tiny-llama-random,tokenizer=x", "device=cpu",
                                     "-t", "t"])
    assert "--metadata" not in given and given.count("--device") == 1
    other = ["--model", "hf", "--model_args", "pretrained=gpt2", "--tasks", "t"]
    assert lm_modules.prepare_argv(other) == other
    with pytest.raises(UsageError, match="device=cuda:free is for harness multiruns"):
        lm_modules.prepare_argv([*base, "--device", "cuda:free"])


def test_missing_packages_of_lm_evals_longbench_tasks_are_named(lm_modules, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fuzzywuzzy" else real(name, *a))
    argv = ["--model", "kvcompress", "--model_args", "model=tiny-llama-random", "--tasks",
            "kvb_tiny_gen,longbench_qasper"]
    need = r"longbench tasks need .*\(fuzzywuzzy missing\): pip install 'lm-eval\[longbench\]'"
    with pytest.raises(UsageError, match=need):
        lm_modules.prepare_argv(argv)
    lm_modules.prepare_argv(argv[:-1] + ["kvb_tiny_gen"])  # other tasks do not need them
    with pytest.raises(UsageError, match=need):  # a config file's `tasks:` may be one comma-separated string
        lm_modules.check_task_packages("kvb_tiny_gen, longbench_qasper")
    lm_modules.check_task_packages("kvb_tiny_gen")


def test_results_folders_differ_by_method_and_budget(lm_modules):
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    def folder(source, args):
        tracker = GeneralConfigTracker()
        tracker.log_experiment_args(model_source=source, model_args=args, system_instruction=None,
                                    chat_template=None, fewshot_as_multiturn=False)
        return tracker.model_name_sanitized

    names = {
        folder("kvcompress", "model=tiny-llama-random,method=keydiff,r=0.5"),
        folder("kvcompress", {"model": "tiny-llama-random", "method": "keydiff", "r": 0.75}),
        folder("kvcompress", "model=tiny-llama-random,method=snapkv,r=0.5"),
        folder("kvcompress", "model=tiny-llama-random,method=snapkv,r=0.5,method.window_size=8"),
        folder("kvcompress", "model=tiny-llama-random,method=snapkv,budget_tokens=64"),
        folder("kvcompress", "model=tiny-llama-random,method=snapkv,r=0.5,budget_policy=adaptive"),
    }
    assert len(names) == 6 and "tiny-llama-random__keydiff__r=0.5__uniform" in names
    assert folder("hf", "pretrained=gpt2") == "gpt2"  # lm-eval's own models keep lm-eval's naming


# ------------------------------------------------------------------------------------ chat settings (Qwen3)
@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """A local tiny Qwen3 with Qwen3's chat template; its folder name makes it a Qwen3 (thinking off)."""
    from harness.models import build_random_model, load_tokenizer
    from test_chat import QWEN3_TEMPLATE, TINY_QWEN3

    path = tmp_path_factory.mktemp("local") / "tiny-Qwen3-local"
    build_random_model(TINY_QWEN3["arch"]).save_pretrained(path)
    tok = load_tokenizer("smollm2-135m")
    tok.chat_template = QWEN3_TEMPLATE
    tok.save_pretrained(path)
    return path


def test_qwen3_chat_template_with_thinking_off_and_thinking_stripped(lm_modules, qwen3_dir, monkeypatch):
    from test_chat import EMPTY_THINK

    lm = lm_modules.KVCompressLM(model=str(qwen3_dir), method="full", dtype="float32", device="cpu")
    turn = [{"role": "user", "content": "Where is the key?"}]
    assert lm.apply_chat_template(turn).endswith(EMPTY_THINK)
    monkeypatch.setattr(lm, "_generate", lambda *a, **k: "<think>\nblue box?\n</think>\n\nthe blue box")
    assert lm.generate_until([_gen(PROMPT)], disable_tqdm=True) == ["the blue box"]
    info = lm.get_model_info()["kvcompress"]
    assert info["chat_template_kwargs"] == {"enable_thinking": False} and info["thinking_stripped"] == 1
    assert lm.settings.folder.endswith("__enable_thinking=False")
    on = lm_modules.KVCompressLM(model=str(qwen3_dir), method="full", dtype="float32", device="cpu",
                                 enable_thinking="true")
    assert not on.apply_chat_template(turn).endswith(EMPTY_THINK) and on.settings.folder != lm.settings.folder
    with pytest.raises(UsageError, match="enable_thinking must be true or false"):
        lm_modules.KVCompressLM(model=str(qwen3_dir), enable_thinking="maybe")
