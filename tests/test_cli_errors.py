"""Bad input and faults through ``python -m harness``: each exits non-zero with one line on stderr
(``error: ...``), no traceback, and before the model loads (a loaded model would add its
``[kvbench] model ... loaded`` line). Ctrl-C keeps the rows written and a rerun resumes. See docs/errors.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.errors import UsageError
from harness.plan import make_plan
from harness.results import read_rows, result_files
from harness.run import compose

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu", "task=ruler_1k",
        "task.tasks=[niah_single_1]", "n_samples=1", "max_new_tokens=4"]


def _harness(*args: str, env: dict | None = None, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env=env)
    return out, time.perf_counter() - t0


def _one_error_line(out: subprocess.CompletedProcess, message: str) -> str:
    """Exit 2, stderr exactly one line ``error: ...`` holding ``message``, no traceback, nothing computed."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    assert len(lines) == 1, out.stderr[-3000:]  # no "[kvbench] model ... loaded": it failed before the model loaded
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    return lines[0]


def _not_a_model(tmp_path: Path) -> str:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a model\n")
    return str(tmp_path / "junk")


def _bad_config_json(tmp_path: Path) -> str:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"hidden_size": 8}')  # no model_type
    return str(tmp_path / "broken")


# ---------------------------------------------------------------------------------- one line, before loading
@pytest.mark.parametrize(
    "overrides, message",
    [
        (lambda t: [f"output_dir={t / 'afile' / 'out'}"], "cannot be written: Not a directory"),  # parent is a file
        (lambda t: [f"output_dir={t / 'afile'}"], "is a file, not a folder"),
        (lambda t: ["output_dir="], "output_dir is empty"),
        (lambda t: ["-m", "output_dir=", "method=keydiff,snapkv"], "output_dir is empty"),  # before Hydra's sweep dir
        (lambda t: ["+n_sample=3"], "unknown key 'n_sample'; valid keys: "),
        (lambda t: ["n_sample=3"], "unknown key 'n_sample'; valid keys: "),
        (lambda t: ["methods=[]"], "methods=[] is empty; give one or more of: expected_attention, expected_attention_adaptive, full, h2o"),
        (lambda t: ["method=snapkv", "method.params.window_size=-3"],
         "bad parameters for method 'snapkv': window_size must be >= 1, got -3"),
        (lambda t: ["method=snapkv", "+method.params.windowsize=3"],
         "method 'snapkv' has no parameter 'windowsize'; its parameters: window_size, kernel_size"),
        (lambda t: ["methods=[nestedkv,keydiff]", "method.params.windw=32"],
         "method.params.windw=32: no method of methods=[nestedkv, keydiff] has a parameter 'windw'; their parameters: "
         "nestedkv: window, "),
        (lambda t: ["turns=0"], "turns must be a positive integer (k questions of a context asked as successive "
                                "turns of one conversation; 1: each question on its own) or multi"),
        (lambda t: ["decode_budget=grow"], "decode_budget must be fixed (a decode rule keeps each head at the budget "
                                           "compression gave it) or ratio"),
        (lambda t: ["method=snapkv", "method.params.decode_rescore_every=10"],
         "method 'snapkv' has no parameter 'decode_rescore_every'; its parameters: window_size, kernel_size"),
        (lambda t: ["attn_impl=flash_attention_2"], "attn_impl=flash_attention_2 needs the flash-attn package"),
        (lambda t: ["device=cuda:99"], "device=cuda:99"),
        (lambda t: ["model=/nonexistent/path"], "model path '/nonexistent/path' does not exist"),
        (lambda t: [f"model={_not_a_model(t)}"], "is not a model: it holds no config.json"),
        (lambda t: [f"model={_bad_config_json(t)}"], "is not a model transformers can load"),
    ],
    ids=["output_dir-under-a-file", "output_dir-is-a-file", "output_dir-empty", "multirun-output_dir-empty",
         "plus-unknown-key", "unknown-key", "methods-empty", "method-param-value", "method-param-name",
         "methods-param-name", "turns-zero", "decode-budget-unknown", "rescore-needs-key-only", "flash-attn",
         "cuda-index", "model-missing-path", "model-dir-not-a-model", "model-dir-bad-config"],
)
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, overrides, message):
    (tmp_path / "afile").write_text("a regular file\n")
    args = [*TINY, f"output_dir={tmp_path / 'out'}", *overrides(tmp_path)]
    _one_error_line(_harness(*args)[0], message)
    assert not result_files(tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    args = [*TINY, "device=cuda", f"output_dir={tmp_path}"]
    _one_error_line(_harness(*args)[0], "device=cuda needs a CUDA GPU and none is visible")


def _no_hub_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, **extra}


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_hub_id_offline_fails_fast(tmp_path, how):
    """Not cached and no hub: one line at once (it was two rounds of five retries, 50 s, then 84 lines)."""
    if how == "HF_HUB_OFFLINE":
        env = _no_hub_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    else:  # what a machine without network sees: the probe's connection is refused (no HF_HUB_OFFLINE set)
        env = _no_hub_env(HF_ENDPOINT="https://127.0.0.1", HF_HUB_CACHE=str(tmp_path / "hub"))
    out, seconds = _harness(*TINY, "model=kvbench-test/no-such-model", f"output_dir={tmp_path / 'out'}", env=env)
    _one_error_line(out, "model 'kvbench-test/no-such-model' (a hub id: there is no local directory of that name) is "
                         "not in the local Hugging Face cache and the hub cannot be reached")
    assert "Retrying" not in out.stdout + out.stderr
    assert seconds < 40, seconds  # imports only; the retries alone took 45 s


def _cached_hub_model(cache: Path, repo: str) -> None:
    """A tiny random Llama and SmolLM2's tokenizer laid out as the hub cache holds a downloaded repository."""
    from harness.models import build_random_model, load_tokenizer
    from conftest import TINY_ARCHS

    revision = "0" * 40
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    build_random_model(TINY_ARCHS["llama"]).save_pretrained(snapshot)
    load_tokenizer("smollm2-135m").save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)


def test_cached_hub_model_runs_without_the_hub(tmp_path):
    """A hub id already in the local cache still runs when the hub cannot be reached, without retries."""
    _cached_hub_model(tmp_path / "hub", "kvbench-test/tiny-llama")
    env = _no_hub_env(HF_ENDPOINT="https://127.0.0.1", HF_HUB_CACHE=str(tmp_path / "hub"))
    args = [a for a in TINY if not a.startswith("model=")]
    out, _ = _harness(*args, "model=kvbench-test/tiny-llama", f"output_dir={tmp_path / 'out'}", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Retrying" not in out.stdout + out.stderr
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 1 and rows["model_source"].iloc[0] == "kvbench-test/tiny-llama"


# ----------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_one_line_keeps_rows_and_the_rerun_resumes(tmp_path):
    n = 30  # enough contexts that the run cannot finish between its first flush and the signal, even unloaded
    args = [*TINY, f"n_samples={n}", f"output_dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not result_files(tmp_path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the first rows were written and it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.strip().splitlines()[-1]], stderr[-3000:]  # one line, the last one
    assert errors[0].startswith("error: interrupted: rerun the same command to resume")
    kept = read_rows(tmp_path)
    assert 1 <= len(kept) < n  # the rows written before Ctrl-C are on disk
    out, _ = _harness(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"({len(kept)} already done)" in out.stderr
    rows = read_rows(tmp_path)
    assert len(rows) == n and not rows.duplicated(["run_id", "sample_id"]).any()
    assert set(kept["sample_id"]) <= set(rows["sample_id"])


# ------------------------------------------------------------------------------- the same checks, in-process
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+n_sample=3"], "unknown key 'n_sample'"),
        (["methods=[]"], "methods=[] is empty"),
        (["r=[]"], "r=[] is empty"),
        (["budget_tokens=[]"], "budget_tokens=[] is empty"),
        (["query_aware=[]"], "query_aware=[] is empty"),
        (["task.tasks=[]"], "task.tasks=[] is empty; give one or more sub-tasks, or leave it unset (null) for the "
                            "suite's default (niah_single_1, "),
        (["method=h2o", "method.params.recent_fraction=abc"], "bad parameters for method 'h2o'"),
    ],
)
def test_composed_configs_are_checked_too(tmp_path, overrides, message, monkeypatch):
    """Scripts and tests compose configs without the CLI; make_plan refuses the same input."""
    import harness.models as M

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError) as err:
        make_plan(compose([*TINY, f"output_dir={tmp_path}", *overrides]))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_documented_key_is_accepted(tmp_path):
    """The valid keys are conf/config.yaml's plus the groups: its own keys never trip the check."""
    from harness.plan import check_override_keys, config_keys

    keys = config_keys()
    assert {"n_samples", "methods", "output_dir", "model", "method", "task", "sweep"} <= set(keys)
    check_override_keys(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+sweep=demo", "++max_new_tokens=6",
                         "task.tasks=[vt]", "method.params.window_size=8", "shard=0/2,1/2", "--cfg", "job"])
    assert json.loads(json.dumps(keys)) == sorted(keys)
    with pytest.raises(UsageError, match="output_dir is empty"):
        check_override_keys(["output_dir="])
    with pytest.raises(UsageError, match="unknown key 'n_sample'"):
        check_override_keys(["-m", "+n_sample=3,4"])
