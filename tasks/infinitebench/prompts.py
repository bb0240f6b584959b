"""InfiniteBench prompts (docs/tasks/infinitebench.md, "Prompts"): the official templates of OpenBMB/InfiniteBench
``src/prompt.py``, the fields and labels of ``src/eval_utils.py`` (``create_prompt``, ``get_answer``,
``DATA_NAME_TO_MAX_NEW_TOKENS``), and kvpress' layout of its hub copy. Each prompt is returned as
(context part, question part[, answer prefix]); how those become the model's input is ``tasks.prompts``."""

from __future__ import annotations

import re
from typing import Any

# eval_utils.DATA_NAME_TO_MAX_NEW_TOKENS
MAX_NEW_TOKENS = {
    "passkey": 6,
    "number_string": 12,
    "kv_retrieval": 50,
    "longbook_sum_eng": 1200,
    "longbook_choice_eng": 40,
    "longbook_qa_eng": 40,
    "longbook_qa_chn": 40,
    "longdialogue_qa_eng": 40,
    "math_find": 3,
    "code_run": 5,
    "code_debug": 5,
}

# src/prompt.py, gpt4_templates (the chat templates) and yarn_mistral_templates (completion templates).
_DIALOGUE_HEAD = (
    'Below is a dialogue script where one random occurrence of a character name is replaced with "$$MASK$$", '
    "and you should try to guess who that character is."
)
_OPTIONS = "A. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}"
_CODE_DEBUG_HEAD = (
    "There is ONLY ONE function in the large project that is deliberately made to include an obvious error. "
    "Please find the function that contains the most obvious errors. I will give you four options to narrow your "
    "scope. You can inspect the options and think. Eventually, tell me the answer using one single letter "
    "(A, B, C, or D)."
)
TEMPLATES: dict[str, dict[str, str]] = {
    "gpt4": {
        "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.\n\n{context}\n\n{input}",
        "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. "
        "I will quiz you about the important information there.\n\n{context}\n\n{input}",
        "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n"
        "{context}\n\n{input}",
        "longbook_qa_eng": "Read the book below and answer a question.\n\n{context}\n\nQuestion: {question}\n\n"
        "Be very concise.",
        "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\n"
        "Only one of the following options is correct, tell me the answer using one single letter (A, B, C, or D). "
        "Don't say anything else.\n" + _OPTIONS,
        "longbook_sum_eng": "Summarize the following book.\n\n{context}",
        "longbook_qa_chn": "请根据以下书籍回答我的问题。\n\n{context}\n\n问题：{question}\n请尽量简短地回答。",
        "math_find": "{prefix}\n\n{context}\n\n{input}",
        "code_run": "Following is a set of Python functions. There is a function called named {func}.\n\n{context}\n\n"
        "Please give me the exact number of the return value of {func_call}. Be concise. "
        "Your response must end with the final returned value.",
        "code_debug": _CODE_DEBUG_HEAD + "\n\n{context}\n\nWhich funtion has deliberate error?\n" + _OPTIONS
        + "\n\nYou should first find the functions in the options. Repeat their content, inspect through code, "
        "and at last give me your answer for the function that has the deliberate and obvious error in A, B, C, or D.",
        "longdialogue_qa_eng": _DIALOGUE_HEAD + "\n\nThe dialogue:\n\n---\n\n{context}\n\n---\n\nEnd of dialogue.\n\n"
        'Which character is most likely "$$MASK$$"? Just say the name used by the scriptwriter (before the colon '
        "marks) of one single character and nothing else.",
    },
    "yarn_mistral": {
        "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information.\n\n{context}\n\n{input}\n\nThe pass key is",
        "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. "
        "I will quiz you about the important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is",
        "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n"
        "{context}\n\n{input}",
        "longbook_sum_eng": "Summarize the book below.\n\n{context}\n\nSummary:",
        "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n"
        + _OPTIONS + "\n\nThe letter of the correct answer is",
        "longbook_qa_eng": "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\n"
        "Question: {question}\nAnswer:",
        "longbook_qa_chn": "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
        "math_find": "{prefix}\n\n{context}\n\n{input}",
        "code_run": "There is a function called {func} in the following Python code.\n\n{context}\n\n"
        "Please compute the exact value of {func_call}. The value of {func_call} is",
        "code_debug": "Following is a Python code where exactly one of the functions/methods has a deliberate error "
        "that makes it crash.\n\n{context}\n\nOptions:\n" + _OPTIONS + "\n\nThe correct option is:",
        "longdialogue_qa_eng": _DIALOGUE_HEAD
        + "\n\n{context}\n\nThe name that has been replaced with $$MASK$$ is likely",
    },
}

# NVIDIA/kvpress evaluation/benchmarks/infinite_bench/create_huggingface_dataset.py (hub MaxJeblick/InfiniteBench):
# the instruction and the haystack are the context, the raw input (+ options) the question, a completion cue taken
# from yarn_mistral_templates the answer prefix after the assistant header, and max new tokens official + 20.
KVPRESS_CONTEXT = {
    "passkey": TEMPLATES["gpt4"]["passkey"].split("{context}")[0] + "{context}\n\n",
    "kv_retrieval": TEMPLATES["gpt4"]["kv_retrieval"].split("{context}")[0] + "{context}\n\n",
    "number_string": TEMPLATES["gpt4"]["number_string"].split("{context}")[0] + "{context}\n\n",
    "longdialogue_qa_eng": _DIALOGUE_HEAD + "\n\n{context}\n\n",
    "longbook_qa_eng": "Read the book below and answer a question. Be very concise in your answer.\n\n{context}\n\n",
    "longbook_qa_chn": "请根据以下书籍回答我的问题。\n\n{context}\n\n",
    "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\n",
    "code_debug": "Following is a Python code where exactly one of the functions/methods has a deliberate error that "
    "makes it crash.\n\n{context}\n\n",
    "longbook_sum_eng": "Summarize the book below:\n\n{context}\n\n",
    "math_find": "{prefix}\n\n{context}\n\n{input}\n\n",
    "code_run": "There is a function called {func} in the following Python code.\n\n{context}\n\n",
}
KVPRESS_OPTIONS = {
    "longbook_choice_eng": "\n\nOnly one of the following options is correct, tell me the answer using one single "
    "letter (A, B, C, or D). Don't say anything else.\n" + _OPTIONS,
    "code_debug": "\n\nOptions:\n" + _OPTIONS,
}
KVPRESS_ANSWER_PREFIX = {
    "kv_retrieval": "The value associated with the specified key is",
    "passkey": "The pass key is:",
    "number_string": "The sequence of digits is",
    "longbook_sum_eng": "Summary:",
    "longbook_choice_eng": "The letter of the correct answer is",
    "longbook_qa_eng": "Answer:",
    "longbook_qa_chn": "答案：",
    "code_run": "The return value is:",
    "code_debug": "The correct option is:",
    "longdialogue_qa_eng": "The name that has been replaced with $$MASK$$ is likely",
}
KVPRESS_EXTRA_NEW_TOKENS = 20
PROMPT_STYLES = sorted(TEMPLATES) + ["kvpress"]


def official_label(task: str, eg: dict) -> list[str]:
    """``eval_utils.get_answer`` as strings: ``[option text, letter]`` for the two choice tasks, else the answers."""
    answer = eg.get("answer")
    if task in ("longbook_choice_eng", "code_debug"):
        options = list(eg.get("options") or [])
        if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
            return [str(answer[0]), str(answer[1])]
        text = answer[0] if isinstance(answer, list) else answer
        if text in options:
            return [str(text), "ABCD"[options.index(text)]]
        if text in ("A", "B", "C", "D") and len(options) == 4:  # letter-only copies (kvpress' hub set)
            return [str(options["ABCD".index(text)]), str(text)]
        raise ValueError(f"{task} id={eg.get('id')}: answer {answer!r} is not one of the options {options!r}")
    if isinstance(answer, list):
        return [str(a) for a in answer]
    return [str(answer)]


def prompt_fields(task: str, eg: dict) -> dict[str, Any]:
    """The template fields of ``eval_utils.create_prompt`` (minus ``context``)."""
    fields: dict[str, Any] = {"input": eg.get("input", "")}
    if task in ("longbook_choice_eng", "longbook_qa_eng", "longbook_qa_chn"):
        fields["question"] = eg.get("input", "")
    if task in ("longbook_choice_eng", "code_debug"):
        opts = list(eg.get("options") or [])
        if len(opts) != 4:
            raise ValueError(f"{task} id={eg.get('id')}: expected 4 options, got {len(opts)}")
        fields.update(OPTION_A=opts[0], OPTION_B=opts[1], OPTION_C=opts[2], OPTION_D=opts[3])
    if task == "code_run":
        found = re.findall(r"func_[0-9]+\(\-?[0-9]+\)", eg["input"])
        if not found:
            raise ValueError(f"code_run id={eg.get('id')}: no func_N(x) call in the input {eg['input']!r}")
        fields["func_call"] = found[0]
        fields["func"] = found[0].split("(")[0]
    if task == "math_find":
        # the current official version: "The .+ of" (greedy), lower-cased, minus the trailing " of"
        # ("What is the largest number in the following list?", "What is the median number in ...").
        found = re.findall(r"The .+ of", eg["input"])
        if not found:
            raise ValueError(f"math_find id={eg.get('id')}: no 'The ... of' in the input {eg['input']!r}")
        fields["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    return fields


def split_prompt(task: str, eg: dict, style: str = "gpt4") -> tuple[str, str]:
    """(context part, question part) whose concatenation is the official prompt of ``create_prompt``."""
    template = TEMPLATES[style][task]
    head, tail = template.split("{context}")
    fields = prompt_fields(task, eg)
    return head.format(**fields) + eg["context"], tail.format(**fields)


def kvpress_prompt(task: str, eg: dict) -> tuple[str, str, str]:
    """(context, question, answer prefix) as kvpress builds its InfiniteBench hub set (quirks kept: only the
    "largest number" answer instruction is removed from the math_find context; the kv_retrieval cue moves to the
    answer prefix)."""
    fields = prompt_fields(task, eg)
    context = KVPRESS_CONTEXT[task].format(**{**fields, "context": eg["context"]})
    if task == "math_find":
        context = context.replace(
            "You should answer with only one number, no other words. The largest number of the list is:", ""
        )
    question = str(eg.get("input", ""))
    if task in KVPRESS_OPTIONS:
        question += KVPRESS_OPTIONS[task].format(**fields)
    if task == "kv_retrieval":
        question = question.replace("The value associated with the specified key is:", "")
    return context, question, KVPRESS_ANSWER_PREFIX.get(task, "")

