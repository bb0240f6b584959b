"""InfiniteBench (OpenBMB, arXiv 2402.13718): ``infinitebench`` (hub / local jsonl) and ``infinitebench_synth``.

Sources read (OpenBMB/InfiniteBench): ``src/prompt.py`` (prompt templates), ``src/eval_utils.py``
(``create_prompt``, ``get_answer``, ``DATA_NAME_TO_MAX_NEW_TOKENS``, ``truncate_input``), ``src/compute_scores.py``
(the scorer) and ``data/construct_synthetic_dataset.py`` (how passkey, number_string, kv_retrieval and math_find
are built). The behaviour is ported; the code is ours.

Prompts
    ``prompt_style: gpt4`` (default) uses ``gpt4_templates``: the official templates written for chat models (no
    completion cue, the instruction is in the user turn), rendered with the model's chat template. Every template
    is split at ``{context}``: the *context part* is the template up to and including the filled context (the task
    instruction before the haystack is compressed with it), the *question part* is the rest (question, options,
    closing instruction). ``prompt_style: yarn_mistral`` uses ``yarn_mistral_templates`` (completion prompts that
    end with a cue such as "The pass key is"), rendered raw, without a chat template, as the official
    evaluation of base models does. ``prompt_style: kvpress`` reproduces kvpress' hub set (MaxJeblick/
    InfiniteBench): instruction + haystack as context, the raw input (+ options) as question, a yarn-mistral cue
    ("The pass key is:", "Answer:", ...) as the answer prefix after the assistant header, max new tokens + 20 (for
    numbers comparable with the kvpress leaderboard). The official GPT-4 run also adds a system message ("You
    are a helpful assistant"); the harness renders the user turn only, so the model's default system prompt (if
    any) is used.

Max new tokens
    ``DATA_NAME_TO_MAX_NEW_TOKENS`` (passkey 6, number_string 12, kv_retrieval 50, math_find 3, code_run 5,
    code_debug 5, QA / choice / dialogue 40, summary 1200) plus ``extra_new_tokens`` (default 0; 20 with
    ``prompt_style: kvpress``). The official limits assume the model answers at once; a chat model that first
    restates "The pass key is" runs out of tokens, which the official setting scores as wrong.

Truncation
    Official: the whole prompt is cut in the middle to the model's limit (``truncate_input``). Here the harness
    cuts the *context part* in the middle; every hub record carries ``extra["truncate_to"]`` (param
    ``truncate_to``, default 40000 tokens, the NestedKV-paper cap; null: no cap) and the task exposes
    ``self.truncate_to``; the sweep cuts to ``min(truncate_to, model window - question - max_new_tokens)``
    (``harness.sweep.context_budget``). ``max_length()`` is ``None`` for hub data (any model can run it after
    truncation) and ``length`` for synthetic data (checked against the model window before loading it).

Scorer
    Ported from the current ``compute_scores.py`` (after the fix of issue #18, 2024-08: long-dialogue names are
    matched as substrings of the upper-cased prediction against every reference; multiple choice first takes the
    last standalone letter of the first line that has one). See the ``score_*`` functions for each quirk.
    ROUGE-Lsum is the summary-level LCS of Google's ``rouge_score`` as ``evaluate.load("rouge")`` runs it (no
    stemmer, lower-cased ``[a-z0-9]+`` tokens, sentences split on newlines), re-implemented here because
    ``evaluate`` downloads its metric script and ``rouge_score`` is not a dependency.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tasks.records import Record
from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.hub import HubUnavailable, error_line, hub_file

HUB_ID = "xinrongzhang2022/InfiniteBench"
HUB_URL = f"https://huggingface.co/datasets/{HUB_ID}"

ENGLISH_TASKS = [
    "passkey",
    "number_string",
    "kv_retrieval",
    "longbook_qa_eng",
    "longbook_choice_eng",
    "longbook_sum_eng",
    "longdialogue_qa_eng",
    "code_debug",
    "code_run",
    "math_find",
]
ALL_TASKS = ENGLISH_TASKS + ["longbook_qa_chn"]  # the Chinese QA on request
SYNTH_TASKS = ["passkey", "number_string", "kv_retrieval", "math_find"]

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

METRIC = {
    "passkey": "first_int_match",
    "number_string": "first_int_match",
    "kv_retrieval": "kv_retrieval_word",
    "math_find": "math_find_first_number",
    "longbook_qa_eng": "qa_f1",
    "longbook_qa_chn": "qa_f1_zh",
    "longdialogue_qa_eng": "name_in_prediction",
    "longbook_sum_eng": "rouge_lsum",
    "longbook_choice_eng": "choice_letter",
    "code_debug": "code_debug_letter",
    "code_run": "last_word_int",
}

DEFAULT_TRUNCATE_TO = 40_000
DEFAULT_SYNTH_SAMPLES = 100

# ----------------------------------------------------------------------------------------------- prompts
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


# ------------------------------------------------------------------------------------------------ metric
def _blank(pred: str, chars: list[str]) -> str:
    """Each of ``chars`` -> a space, then runs of spaces -> one (the official cleaning)."""
    for c in chars:
        pred = pred.replace(c, " ")
    while "  " in pred:
        pred = pred.replace("  ", " ")
    return pred


def _first_int(prediction: str) -> str:
    for piece in re.split("[^0-9]", prediction):
        if piece != "":
            return piece
    return ""


def _to_number(value: Any) -> int | float:
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except ValueError:
        return float(value)


def score_first_int(pred: str, answers: list[str]) -> bool:
    """passkey, number_string: the first run of digits in the prediction equals the label (later ones ignored)."""
    return answers[0] == _first_int(pred)


def score_kv_retrieval(pred: str, answers: list[str]) -> bool:
    """The label is one of the words after ``\\n : " ' . , ? ! { }`` become spaces (hyphens, brackets stay)."""
    return answers[0] in _blank(pred, ["\n", ":", '"', "'", ".", ",", "?", "!", "{", "}"]).split()


def score_math_find(pred: str, answers: list[str]) -> bool:
    """First ``\\d+\\.\\d+|\\d+`` (no sign) compared as a number with the label (int or float label).

    Official ``int(first)`` raises on a decimal when the label is an int; here that compares as float (no match
    unless equal).
    """
    label = _to_number(answers[0])
    found = re.search(r"\d+\.\d+|\d+", pred)
    if found is None:
        return False
    first = found.group(0).strip()
    if isinstance(label, int) and "." not in first:
        return int(first) == label
    return float(first) == label


def score_code_run(pred: str, answers: list[str]) -> bool:
    """The last word (after ``\\n . ` ' " :`` become spaces) parsed as an int equals the label."""
    label = _to_number(answers[0])
    words = _blank(pred.strip(), ["\n", ".", "`", "'", '"', ":"]).split()
    if not words:
        return False
    try:
        return label == int(words[-1])
    except ValueError:
        return False


_LAST_LETTER_AJ = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)")  # no DOTALL: the lookahead stops at a newline
_LAST_LETTER_AD = re.compile(r"\b[A-D]\b(?!.*\b[A-D]\b)")


def _after_prefix(pred: str, prefixes: list[str]) -> str | None:
    """The text one character after the first of ``prefixes`` found in ``pred`` (in list order; "" when nothing
    follows), or None when none occurs: the first prefix found decides, as in the official scorer."""
    for prefix in prefixes:
        idx = pred.find(prefix)
        if idx != -1:
            return pred[idx + len(prefix) + 1 :]
    return None


def score_code_debug(pred: str, answers: list[str]) -> bool:
    """answers = [function name, letter]. Last standalone A-J letter of the first line that has one; then the
    cleaned prediction starting with the letter or name; then the text after "answer is:", "is:", "answer:",
    "correct option is:" (the first prefix found decides)."""
    fn_name, letter = answers[0], answers[1]
    pred = pred.strip()
    match = _LAST_LETTER_AJ.search(pred)
    if match and match.group(0) == letter:
        return True
    pred = _blank(pred, ["\n", "`", "'", '"', "-", "*", "Option", "option"])
    if pred.startswith(letter) or pred.startswith(fn_name):
        return True
    rest = _after_prefix(pred, ["answer is:", "is:", "answer:", "correct option is:"])
    return bool(rest) and (rest.startswith(letter) or rest.startswith(fn_name))


def score_choice(pred: str, answers: list[str]) -> bool:
    """answers = [option text, letter]. Last standalone A-D letter of the first line that has one (a hit only if
    right); the first character if it is A-D (decides); the whole prediction equal to the option text; the text
    after "answer is:", "answer:", "answer is", "option is" (first found decides); finally the first word that is
    a substring of "ABCD"."""
    label = answers
    pred = pred.strip()
    match = _LAST_LETTER_AD.search(pred)
    if match and match.group(0) in label:
        return True
    if pred == "":
        return False
    if pred[0] in "ABCD":
        return pred[0] in label
    if pred in label:
        return True
    pred = _blank(pred, ["\n", '"', "'", ".", ",", "?", "!", "{", "}"])
    after = _after_prefix(pred, ["answer is:", "answer:", "answer is", "option is"])
    if after is not None:
        return bool(after) and any(after.startswith(s) for s in label)
    for word in pred.split():
        if word in "ABCD":  # substring test, as official ("AB" counts)
            return word in label
    return False


def score_name_in_prediction(pred: str, answers: list[str]) -> bool:
    """longdialogue_qa_eng: any reference name is a substring of the upper-cased prediction ("ACE" in "SPACE")."""
    pred = pred.strip().upper()
    return any(a.upper() in pred for a in answers)


_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_ZH_PUNCT = set(
    string.punctuation
    + "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)


def normalize_zh_answer(s: str) -> str:
    return "".join("".join(ch for ch in s.lower() if ch not in _ZH_PUNCT).split())


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def score_qa_f1(pred: str, answers: list[str]) -> float:
    """Max over references of token F1 after lower-casing and removing punctuation, articles, extra spaces."""
    return max((_f1(normalize_answer(pred).split(), normalize_answer(a).split()) for a in answers), default=0.0)


def score_qa_f1_zh(pred: str, answers: list[str]) -> float:
    """Chinese: one character one token after removing Chinese and ASCII punctuation and spaces."""
    return max((_f1(list(normalize_zh_answer(pred)), list(normalize_zh_answer(a))) for a in answers), default=0.0)


def _rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming: lower-case, non-[a-z0-9] runs become spaces."""
    return [t for t in re.split(r"\s+", re.sub(r"[^a-z0-9]+", " ", text.lower())) if re.fullmatch(r"[a-z0-9]+", t)]


def _lcs_indices(ref: list[str], can: list[str]) -> list[int]:
    """Indices into ``ref`` of one LCS of ``ref`` and ``can`` (rouge_score's table and backtrack)."""
    n, m = len(ref), len(can)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        ri = ref[i - 1]
        row, prev = table[i], table[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if ri == can[j - 1] else (row[j - 1] if row[j - 1] > prev[j] else prev[j])
    out: list[int] = []
    i, j = n, m
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i -= 1
            j -= 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def rouge_lsum(pred: str, ref: str) -> float:
    """Summary-level ROUGE-L F (``rougeLsum`` of rouge_score): union LCS of each reference sentence with all
    prediction sentences, hits clipped by token counts; sentences are the non-empty lines."""
    ref_sents = [_rouge_tokens(s) for s in ref.split("\n") if len(s)]
    can_sents = [_rouge_tokens(s) for s in pred.split("\n") if len(s)]
    m = sum(map(len, ref_sents))
    n = sum(map(len, can_sents))
    if not m or not n:
        return 0.0
    ref_counts: Counter = Counter()
    can_counts: Counter = Counter()
    for s in ref_sents:
        ref_counts.update(s)
    for s in can_sents:
        can_counts.update(s)
    hits = 0
    for r in ref_sents:
        union = sorted(set().union(*(_lcs_indices(r, c) for c in can_sents)))
        for t in (r[i] for i in union):
            if can_counts[t] > 0 and ref_counts[t] > 0:
                hits += 1
                can_counts[t] -= 1
                ref_counts[t] -= 1
    precision, recall = hits / n, hits / m
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_rouge_lsum(pred: str, answers: list[str]) -> float:
    """``evaluate`` rouge with a list of references: the best reference."""
    return max((rouge_lsum(pred, a) for a in answers), default=0.0)


SCORERS: dict[str, Callable[[str, list[str]], float]] = {
    "first_int_match": score_first_int,
    "kv_retrieval_word": score_kv_retrieval,
    "math_find_first_number": score_math_find,
    "last_word_int": score_code_run,
    "code_debug_letter": score_code_debug,
    "choice_letter": score_choice,
    "name_in_prediction": score_name_in_prediction,
    "qa_f1": score_qa_f1,
    "qa_f1_zh": score_qa_f1_zh,
    "rouge_lsum": score_rouge_lsum,
}


def score_prediction(metric: str, prediction: str, answers: list[str]) -> float:
    return 100.0 * float(SCORERS[metric](prediction, answers))


# ------------------------------------------------------------------------------------- local generation
# data/construct_synthetic_dataset.py
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "What is the pass key?"
NUMBER_NEEDLE = "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n"
NUMBER_QUESTION = "What is the sequence of digits?"
KV_QUESTION = '\nKey: "{key}"\nThe value associated with the specified key is: '
MATH_FIND_KINDS = [
    "largest number",
    "second largest number",
    "third largest number",
    "smallest number",
    "second smallest number",
    "third smallest number",
    "median",
]
MATH_FIND_PROMPTS = {
    **{k: f"Find the {k} from the list below:" for k in MATH_FIND_KINDS if k != "median"},
    "median": "Calculate the median number from the list below:",
}
MATH_FIND_INPUTS = {
    **{
        k: f"You should answer with only one number, no other words. The {k} of the list is: "
        for k in MATH_FIND_KINDS
        if k != "median"
    },
    "median": "You should answer with only one number, no other words. The median number of the list is: ",
}


class _Stream:
    """An endless, seeded sequence whose first n items do not depend on how many were asked for before."""

    def __init__(self, seed: str, draw: Callable[[random.Random], Any]):
        self.rng = random.Random(seed)
        self.draw = draw
        self.items: list[Any] = []

    def take(self, n: int) -> list[Any]:
        while len(self.items) < n:
            self.items.append(self.draw(self.rng))
        return self.items[:n]


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _math_find_answer(values: list[int], kind: str) -> int | float:
    """The official answers: k-th largest / smallest *distinct* value (it removes every copy of the extreme), and
    the median (the mean of the two middle values, a float, for an even length)."""
    distinct = sorted(set(values))
    rank = {"largest number": -1, "second largest number": -2, "third largest number": -3,
            "smallest number": 0, "second smallest number": 1, "third smallest number": 2}
    if kind in rank:  # (a list too short to have the k-th distinct value falls back to the last one it has)
        k = rank[kind]
        return distinct[max(k, -len(distinct))] if k < 0 else distinct[min(k, len(distinct) - 1)]
    s = sorted(values)
    half = len(s) // 2
    return s[half] if len(s) % 2 == 1 else (s[half] + s[half - 1]) / 2


def synth_generator(task: str, seed: int, index: int) -> tuple[Callable[[int], dict], int, dict]:
    """``(make(size) -> example dict in the official layout, minimum size, extra)`` for one synthetic sample.

    Every random choice except the haystack size is drawn from ``(seed, task, index)`` first, so the sample is
    deterministic and independent of ``n_samples``; the haystack is a prefix of a seeded stream.
    """
    rng = random.Random(f"infinitebench/{task}/{seed}/{index}")
    if task in ("passkey", "number_string"):
        if task == "passkey":
            key = "".join(str(rng.randint(0, 9)) for _ in range(5))
            needle, question = PASSKEY_NEEDLE.format(key=key), PASSKEY_QUESTION
        else:  # 5 random digits, then 5 times a random digit is doubled in place (10 digits)
            digits = [str(rng.randint(0, 9)) for _ in range(5)]
            for k in range(5):
                pos = rng.randint(0, 5 + k - 1)
                digits.insert(pos, digits[pos])
            key = "".join(digits)
            needle, question = NUMBER_NEEDLE.format(key=key), NUMBER_QUESTION
        depth = rng.random()

        def make(size: int) -> dict:
            before = round(depth * size)
            return {"context": NOISE * before + needle + NOISE * (size - before), "input": question, "answer": [key]}

        return make, 0, {"depth": depth, "needle": needle}

    if task == "kv_retrieval":
        depth = rng.random()
        pairs = _Stream(f"infinitebench/{task}/{seed}/{index}/pairs", lambda r: (_uuid4(r), _uuid4(r)))

        def make(size: int) -> dict:
            kv = pairs.take(size)
            target = min(int(depth * size), size - 1)
            text = "JSON data:\n{" + ", ".join(f'"{k}": "{v}"' for k, v in kv) + "}"
            return {"context": text, "input": KV_QUESTION.format(key=kv[target][0]), "answer": [kv[target][1]],
                    "target_index": target}

        return make, 1, {"depth": depth}

    if task == "math_find":
        kind = MATH_FIND_KINDS[index % len(MATH_FIND_KINDS)]
        lo, hi = 0, 99
        if "largest" in kind or (kind == "median" and rng.random() <= 0.5):
            hi = rng.randint(int(hi * 0.8), hi)
        else:
            lo = rng.randint(lo, int(hi * 0.2))
        values = _Stream(f"infinitebench/{task}/{seed}/{index}/values", lambda r: r.randint(lo, hi))

        def make(size: int) -> dict:
            vals = values.take(size)
            return {"prompt": MATH_FIND_PROMPTS[kind], "context": str(vals), "input": MATH_FIND_INPUTS[kind],
                    "answer": [_math_find_answer(vals, kind)]}

        return make, 10, {"kind": kind, "range": [lo, hi]}

    raise ValueError(f"no local generator for {task!r}; synthetic tasks: {', '.join(SYNTH_TASKS)}")


class PromptCounter:
    """Prompt tokens of a record as the harness feeds them (``tasks.prompts.render_parts`` and the
    engine's ``encode_context`` / ``encode_question``): with a chat template, the rendered user turn up to the end of the
    context, then the rest of the turn + assistant header + answer prefix, tokenised separately without added
    special tokens; without one, the context with the tokenizer's special tokens and the question without."""

    PLACEHOLDER = "\u2063KVBENCH_INFINITEBENCH\u2063"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pre = self.post = None
        if getattr(tokenizer, "chat_template", None):
            from tasks.chat import render_chat  # the model's chat settings (Qwen3: thinking off)

            turn = [{"role": "user", "content": self.PLACEHOLDER}]
            rendered = render_chat(tokenizer, turn, add_generation_prompt=True)
            if isinstance(rendered, str) and rendered.count(self.PLACEHOLDER) == 1:
                self.pre, self.post = rendered.split(self.PLACEHOLDER)

    def _n(self, text: str, special: bool = False) -> int:
        return len(self.tokenizer(text, add_special_tokens=special)["input_ids"]) if (text or special) else 0

    def __call__(self, record: Record) -> int:
        if record.chat_template and self.pre is not None:
            return self._n(self.pre + record.context) + self._n(record.question + self.post + record.answer_prefix)
        return self._n(record.context, True) + self._n(record.question + record.answer_prefix)


def fit_size(fits: Callable[[int], bool], minimum: int, guess: int) -> int:
    """Largest ``size >= minimum`` with ``fits(size)`` (monotone), galloping from ``guess``; -1 if none fits.

    The answer does not depend on ``guess`` (only the number of ``fits`` calls does).
    """
    lo = max(minimum, guess)
    step = 1
    if fits(lo):
        hi = lo + step
        while fits(hi):
            lo, step = hi, step * 2
            hi = lo + step
    else:
        hi = lo
        while True:
            if hi == minimum:
                return -1
            lo = max(minimum, hi - step)
            if fits(lo):
                break
            hi, step = lo, step * 2
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


# ------------------------------------------------------------------------------------------------- suite
def _iter_jsonl(path: Path, limit: int | None):
    count = 0
    with open(path, encoding="utf8") as fin:
        for line in fin:
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            yield json.loads(line)
            count += 1


@register("infinitebench")
class InfiniteBench(Task):
    """Params: ``tasks`` (subset, default the 10 English tasks; ``longbook_qa_chn`` on request), ``data_dir``
    (a folder of the official ``<task>.jsonl`` files, or a clone of the official repo holding ``data/<task>.jsonl``;
    null: ``hub`` through ``tasks.hub``, offline the local Hugging Face cache; null disables it; see
    docs/tasks/infinitebench.md), ``truncate_to`` (context cap in
    tokens, default 40000), ``prompt_style`` (``gpt4`` chat prompts, default, or ``yarn_mistral`` raw completion
    prompts). ``infinitebench_synth`` adds ``length`` and generates the synthetic tasks locally."""

    synthetic = False
    valid_tasks = ALL_TASKS
    default_tasks = ENGLISH_TASKS

    def __init__(self, **params: Any):
        super().__init__(**params)
        tasks = params.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        tasks = list(tasks) if tasks else list(self.default_tasks)
        unknown = [t for t in tasks if t not in self.valid_tasks]
        if unknown:
            raise ValueError(
                f"unknown {type(self).__name__} task(s) {unknown}; valid: {', '.join(self.valid_tasks)}"
            )
        self.tasks = tasks
        self.prompt_style = params.get("prompt_style") or "gpt4"
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {self.prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
        extra_new = params.get("extra_new_tokens")
        if extra_new is None:
            extra_new = KVPRESS_EXTRA_NEW_TOKENS if self.prompt_style == "kvpress" else 0
        self.extra_new_tokens = int(extra_new)
        if self.extra_new_tokens < 0:
            raise ValueError(f"extra_new_tokens must be >= 0, got {extra_new!r}")
        self.data_dir = params.get("data_dir")
        self.hub = params.get("hub", HUB_ID)  # null disables the hub
        self._hub_down: str | None = None
        self._files: tuple[dict[str, Path], dict[str, str]] | None = None  # _resolve()
        self._contexts: dict[str, str] = {}
        cap = params.get("truncate_to", DEFAULT_TRUNCATE_TO)
        self.truncate_to = int(cap) if cap else None
        if self.truncate_to is not None and self.truncate_to <= 0:
            raise ValueError(f"truncate_to must be a positive number of tokens or null, got {cap!r}")

    def max_length(self) -> int | None:
        return None  # contexts are cut in the middle to truncate_to / the model's window by the harness

    # ------------------------------------------------------------------ data
    def _fetch_hint(self, name: str) -> str:
        target = (f"{self.data_dir}/{name}.jsonl" if self.data_dir
                  else f"<dir>/{name}.jsonl and set task.data_dir=<dir>")
        return (
            f"Fetch {name}.jsonl from {HUB_URL} and put it at {target} (a clone of the official repo after its "
            f"scripts/download_dataset.sh, <repo>/data/{name}.jsonl, is read with task.data_dir=<repo> too), or fill "
            f"the Hugging Face cache on a machine with network (`hf download {HUB_ID} --repo-type dataset`; "
            f"docs/data_offline.md)."
        )

    def _where(self) -> str:
        return f"data_dir={self.data_dir}" if self.data_dir else f"hub {self.hub}" if self.hub else "nowhere"

    def _missing(self, task: str, why: str) -> str:
        return (f"InfiniteBench {task}: {task}.jsonl could not be read from {self._where()} ({why}). "
                f"{self._fetch_hint(task)}")

    def _task_file(self, task: str) -> Path:
        """The task's jsonl; raises ``DataMissing`` with the reason only (``_missing`` makes the message)."""
        if self.data_dir:
            base = Path(str(self.data_dir)).expanduser()
            for path in (base / f"{task}.jsonl", base / "data" / f"{task}.jsonl"):  # hub files / the official repo
                if path.is_file():
                    return path
            raise DataMissing(f"neither {task}.jsonl nor data/{task}.jsonl under {base}")
        if not self.hub:
            raise DataMissing("no data_dir and hub disabled")
        if self._hub_down:
            raise DataMissing(self._hub_down)
        try:
            return hub_file(str(self.hub), f"{task}.jsonl")
        except HubUnavailable:  # offline and this file not cached (the next one may be)
            raise
        except Exception as exc:  # noqa: BLE001 - the hub failed, or this file is not in the repo
            from huggingface_hub.errors import RemoteEntryNotFoundError

            why = error_line(exc)
            if not isinstance(exc, RemoteEntryNotFoundError):
                self._hub_down = why  # the hub itself failed: do not try again for every task
            raise DataMissing(why) from exc

    def _resolve(self) -> tuple[dict[str, Path], dict[str, str]]:
        """``({task: its jsonl}, {task: why it cannot be read})`` for the selected tasks, looked up once."""
        if self._files is None:
            files: dict[str, Path] = {}
            missing: dict[str, str] = {}
            for task in self.tasks:
                try:
                    files[task] = self._task_file(task)
                except DataMissing as exc:
                    missing[task] = str(exc)
            self._files = files, missing
        return self._files

    def check_data(self) -> None:
        """Raise ``DataMissing`` (one message) when none of the selected tasks' jsonl files can be read."""
        files, missing = self._resolve()
        if not files:
            first = next(iter(missing))
            more = f"; the same for {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataMissing(
                f"InfiniteBench: none of the selected tasks ({', '.join(missing)}) could be read from {self._where()} "
                f"({first}: {missing[first]}{more}). {self._fetch_hint('<task>')}"
            )

    def make_record(self, task: str, eg: dict, index: int, length_bucket: int | None = None,
                    extra: dict | None = None, intern: bool = False) -> Record:
        if self.prompt_style == "kvpress":
            context, question, answer_prefix = kvpress_prompt(task, eg)
        else:
            (context, question), answer_prefix = split_prompt(task, eg, self.prompt_style), ""
        digest = hashlib.sha1(f"{self.prompt_style}\0{context}".encode()).hexdigest()[:16]
        if intern:
            context = self._contexts.setdefault(digest, context)  # one string per book, however many questions
        return Record(
            context_id=f"{task}/{digest}",
            sample_id=f"{task}/{index}",
            suite=self.suite,
            task=task,
            context=context,
            question=question,
            answers=official_label(task, eg),
            max_new_tokens=MAX_NEW_TOKENS[task] + self.extra_new_tokens,
            metric=METRIC[task],
            answer_prefix=answer_prefix,
            chat_template=self.prompt_style != "yarn_mistral",
            length_bucket=length_bucket,
            extra={"id": eg.get("id", index), "prompt_style": self.prompt_style, **(extra or {})},
        )

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        """The first ``n_samples`` lines of each ``<task>.jsonl`` in file order (the official order; ``seed`` is
        not used for hub data)."""
        self._contexts = {}
        records: list[Record] = []
        files, missing = self._resolve()
        for task, path in files.items():
            for i, eg in enumerate(_iter_jsonl(path, n_samples)):
                records.append(self.make_record(task, eg, i, extra={"truncate_to": self.truncate_to}, intern=True))
        return TaskData(records, {task: self._missing(task, why) for task, why in missing.items()})

    # ---------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        return score_prediction(record.metric, prediction, record.answers)


@register("infinitebench_synth")
class InfiniteBenchSynth(InfiniteBench):
    """passkey, number_string, kv_retrieval, math_find generated at ``length`` tokens with the model's tokenizer:
    the haystack is the largest that keeps prompt tokens + max_new_tokens <= length."""

    synthetic = True
    valid_tasks = SYNTH_TASKS
    default_tasks = SYNTH_TASKS

    def __init__(self, **params: Any):
        super().__init__(**params)
        if not params.get("length"):
            raise ValueError("infinitebench_synth needs length (prompt + answer tokens), e.g. length=4096")
        self.length = int(params["length"])
        self.default_samples = int(params.get("default_samples") or DEFAULT_SYNTH_SAMPLES)
        self._size_guess: dict[str, int] = {}
        self._counters: dict[int, PromptCounter] = {}

    def _counter(self, tokenizer) -> PromptCounter:
        if id(tokenizer) not in self._counters:
            self._counters[id(tokenizer)] = PromptCounter(tokenizer)
        return self._counters[id(tokenizer)]

    def max_length(self) -> int | None:
        return self.length

    def check_data(self) -> None:
        """Nothing to check: the samples are generated locally."""

    def make_synth_record(self, tokenizer, task: str, seed: int, index: int) -> Record:
        make, minimum, extra = synth_generator(task, seed, index)
        budget = self.length - MAX_NEW_TOKENS[task] - self.extra_new_tokens

        def build(size: int) -> Record:
            eg = make(size)
            info = {k: v for k, v in extra.items() if k != "needle"}
            info.update(haystack_size=size, **{k: v for k, v in eg.items() if k == "target_index"})
            return self.make_record(task, eg, index, length_bucket=self.length, extra=info)

        cache: dict[int, Record] = {}
        count = self._counter(tokenizer)

        def fits(size: int) -> bool:
            cache[size] = build(size)
            return count(cache[size]) <= budget

        guess = self._size_guess.get(task)
        if guess is None:
            guess = self._first_guess(count, build, minimum, budget)
        size = fit_size(fits, minimum, guess)
        if size < 0:
            raise ValueError(f"infinitebench_synth {task}: length {self.length} is too small for the prompt")
        self._size_guess[task] = size  # only a starting point: the search result does not depend on it
        record = cache[size]
        record.context_id = f"{task}/{self.length}/{seed}/{index}"
        record.extra["n_prompt_tokens"] = count(record)
        record.extra["seed"] = seed
        return record

    @staticmethod
    def _first_guess(count: Callable[[Record], int], build: Callable[[int], Record], minimum: int, budget: int) -> int:
        base = count(build(minimum))
        probe = count(build(minimum + 64))
        per_item = max((probe - base) / 64, 0.5)
        return max(minimum, minimum + int((budget - base) / per_item))

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        n = self.default_samples if n_samples is None else n_samples
        records = [self.make_synth_record(tokenizer, task, seed, i) for task in self.tasks for i in range(n)]
        return TaskData(records, {})
