"""Chat settings (tasks/chat.py, docs/chat_settings.md): Qwen3 configs render the generation prompt with
thinking off (the empty think block, as kvpress passes ``enable_thinking=False``), the setting is recorded in
every row and is part of run_id, and ``<think>`` text never reaches a metric while the raw prediction is kept.
No download: the Qwen3 template below is the part of Qwen3's own chat template (tokenizer_config.json of
Qwen/Qwen3-*) that a single user turn and the generation prompt go through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.chat import chat_kwargs, render_chat, strip_thinking
from harness.models import load_tokenizer, model_spec
from harness.protocol import render_parts
from tasks.records import Record

ROOT = Path(__file__).resolve().parent.parent

# Qwen3's template, reduced to system/user/assistant turns without tools; the generation prompt is verbatim.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'user' or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}"
)
EMPTY_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"

TINY_QWEN3 = {
    "name": "tiny-qwen3-chat", "source": "random", "tokenizer": "smollm2-135m",
    "arch": {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 49152,
             "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
}


def qwen3_tokenizer(**chat):
    """SmolLM2's vocabulary with Qwen3's chat template, loaded through a model spec with these chat settings."""
    tok = load_tokenizer(model_spec({**TINY_QWEN3, "chat_template_kwargs": chat}))
    tok.chat_template = QWEN3_TEMPLATE
    return tok


def record(**kw) -> Record:
    base = dict(context_id="c0", sample_id="t/0", suite="test", task="t", context="The key is 42. " * 5,
                question="\nWhat is the key?", answers=["42"], max_new_tokens=4, metric="m", answer_prefix="Key:")
    return Record(**{**base, **kw})


# ------------------------------------------------------------------------------------------ the setting
@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-4b", "qwen3-8b", "qwen3-4b-random", "Qwen/Qwen3-4B"])
def test_qwen3_models_default_to_thinking_off(name):
    assert model_spec(name).chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize("name", ["smollm2-135m", "llama3.1-8b", "gemma3-270m", "Qwen/Qwen2.5-7B-Instruct"])
def test_other_models_pass_no_chat_variables(name):
    assert model_spec(name).chat_template_kwargs == {}


def test_hub_id_override_and_bad_value(monkeypatch):
    from harness import plan as plan_module
    from harness.errors import UsageError
    from harness.plan import make_plan
    from harness.run import compose

    monkeypatch.setattr(plan_module, "check_model", lambda spec: None)

    cfg = compose(["model=Qwen/Qwen3-4B", "model.chat_template_kwargs={enable_thinking:true}"])
    assert model_spec(cfg.model).chat_template_kwargs == {"enable_thinking": True}
    with pytest.raises(UsageError, match="chat_template_kwargs must be a mapping"):
        make_plan(compose(["model=qwen3-4b", "model.chat_template_kwargs=off", "task=ruler_1k"]))


# ------------------------------------------------------------------------------------------- rendering
def test_qwen3_generation_prompt_ends_with_the_empty_think_block():
    tok = qwen3_tokenizer(enable_thinking=False)
    assert chat_kwargs(tok) == {"enable_thinking": False}
    head, tail = render_parts(tok, record())
    assert head == "<|im_start|>user\n" + record().context
    assert tail == "\nWhat is the key?<|im_end|>\n" + EMPTY_THINK + "Key:"
    # thinking on (or a tokenizer loaded without the setting): no think block, the model would think first
    assert EMPTY_THINK not in render_parts(qwen3_tokenizer(enable_thinking=True), record())[1]
    plain = load_tokenizer("smollm2-135m")
    plain.chat_template = QWEN3_TEMPLATE
    assert render_parts(plain, record())[1] == "\nWhat is the key?<|im_end|>\n<|im_start|>assistant\nKey:"
    # explicit arguments win over the model's setting
    assert EMPTY_THINK not in render_chat(tok, [{"role": "user", "content": "x"}], add_generation_prompt=True,
                                          enable_thinking=True)


def test_prompt_sizing_counts_the_think_block():
    """The suites size prompts with the same rendering (tasks.prompts.prompt_tokens: InfiniteBench directly, RULER
    through its counter)."""
    from tasks.prompts import prompt_tokens
    from tasks.ruler import PromptCounter as RulerCounter

    off, on = qwen3_tokenizer(enable_thinking=False), qwen3_tokenizer(enable_thinking=True)
    rec = record()

    def fed(tok) -> int:  # the tokens the protocol feeds for this record
        head, tail = render_parts(tok, rec)
        return len(tok(head, add_special_tokens=False).input_ids) + len(tok(tail, add_special_tokens=False).input_ids)

    assert fed(off) > fed(on)
    assert prompt_tokens(off, rec) == fed(off) and prompt_tokens(on, rec) == fed(on)
    args = (rec.context, rec.question, rec.answer_prefix)
    assert RulerCounter(off).count(*args) == fed(off) and RulerCounter(on).count(*args) == fed(on)


# ------------------------------------------------------------------------------------- thinking stripped
@pytest.mark.parametrize(
    "raw, scored",
    [
        ("<think>\nthe key was 41 or 42\n</think>\n\n42", "42"),
        ("<think>\nstill thinking about 41", ""),  # unterminated: ran out of answer tokens
        ("the key was 41</think>\n42", "42"),  # block opened by the prompt itself
        ("<think>a</think>4<think>b</think>2", "42"),
        ("<think>\n\n</think>\n\n 42 <think>", "42 "),
        (" 42\n", " 42\n"),  # no tags: unchanged, so other models score exactly as before
    ],
)
def test_strip_thinking(raw, scored):
    assert strip_thinking(raw) == scored


def test_rows_score_without_thinking_keep_the_raw_prediction_and_record_the_setting(monkeypatch):
    from harness import configstep, sweep
    from harness.cell import Cell
    from harness.models import build_random_model
    from harness.plan import build_method, load_method_config

    tok = qwen3_tokenizer(enable_thinking=False)
    model = build_random_model(TINY_QWEN3["arch"]).eval()
    from harness.attention import install

    install(model, "sdpa")
    raw = "<think>\nmaybe 41\n</think>\n\n42"
    def fake_decode(model, tok, ctxs, *a, timing=None, **k):
        if timing is not None:  # what protocol.decode records: one batch of 9 steps, every row ended on EOS
            timing.update(first_token_s=0.1, steps=[9] * len(ctxs), row_s=[0.9] * len(ctxs), ended=[True] * len(ctxs))
        return [raw] * len(ctxs), [9] * len(ctxs), 0.0

    monkeypatch.setattr(configstep, "decode", fake_decode)
    seen = []
    label, method, policy, safeguard = build_method(load_method_config("keydiff"))
    cell = Cell(label, method, 0.5, None, policy, safeguard).bind({"model": "tiny-qwen3-chat"})
    runner = sweep.SweepRunner(model, tok, [cell], {"model": "tiny-qwen3-chat"},
                               score=lambda rec, pred: seen.append(pred) or 100.0 * (pred == "42"))
    (row,) = runner.run_group([record()], set())
    assert seen == ["42"] and row["score"] == 100.0
    assert row["prediction"] == raw and row["prediction_scored"] == "42"
    assert json.loads(row["chat_template_kwargs"]) == {"enable_thinking": False}


def test_run_id_includes_the_setting_only_when_set(monkeypatch):
    from harness import plan as plan_module
    from harness.plan import make_plan
    from harness.run import compose, run_context

    monkeypatch.setattr(plan_module, "check_model", lambda spec: None)  # hub models need not be cached here
    def context(*overrides):
        cfg = compose(["task=ruler_1k", "r=0.5", *overrides])
        plan = make_plan(cfg)
        return run_context(cfg, plan, "bfloat16", "cuda"), plan.cells[0]

    off, cell = context("model=qwen3-4b")
    on, _ = context("model=Qwen/Qwen3-4B", "model.chat_template_kwargs={enable_thinking:true}")
    assert off["chat_template_kwargs"] == {"enable_thinking": False}
    assert on["chat_template_kwargs"] == {"enable_thinking": True}
    assert cell.bind(off).run_id != cell.bind({**off, "chat_template_kwargs": {"enable_thinking": True}}).run_id
    plain, _ = context("model=smollm2-135m")
    assert "chat_template_kwargs" not in plain  # run_ids of models without chat variables are unchanged


# --------------------------------------------------------------------------- a tasks/ folder in the cwd
def test_a_tasks_folder_in_the_working_directory_does_not_shadow_ours(tmp_path):
    """``--include_path tasks`` from a folder holding lm-eval YAMLs in ``tasks/``. With kvbench installed in
    editable mode (a meta-path finder, not a sys.path entry) the cwd's ``tasks/`` became a namespace package;
    the child process reproduces that: ``harness`` loaded from its file, the project root not on sys.path."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_task.yaml").write_text("task: my_task\n")
    code = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "root = Path(sys.argv[1])\n"
        "sys.path = [p for p in sys.path if p and Path(p).resolve() != root]\n"
        "sys.path.insert(0, '')\n"
        "spec = importlib.util.spec_from_file_location('harness', root / 'harness' / '__init__.py',\n"
        "                                              submodule_search_locations=[str(root / 'harness')])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['harness'] = module\n"
        "spec.loader.exec_module(module)\n"
        "from tasks import make_task\n"
        "import tasks; print(tasks.__file__)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()) == ROOT / "tasks" / "__init__.py"
