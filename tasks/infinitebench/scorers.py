"""InfiniteBench scorers (docs/tasks/infinitebench.md, "Scores"): OpenBMB/InfiniteBench ``src/compute_scores.py``,
ported in behaviour, after the fix of its issue #18 (2024-08): long-dialogue names are matched as substrings of the
upper-cased prediction against every reference; multiple choice first takes the last standalone letter of the
first line that has one. Each ``score_*`` docstring names its quirks. ``score_prediction`` returns 0..100.

The QA normalisation and token F1 are the shared ones (``tasks.metrics_text``). ROUGE-Lsum is the summary-level
LCS of Google's ``rouge_score`` as ``evaluate.load("rouge")`` runs it (no stemmer, lower-cased ``[a-z0-9]+``
tokens, sentences split on newlines), written here because ``evaluate`` downloads its metric script and
``rouge_score`` is not a dependency (the ``rouge`` package of ``tasks.metrics_text`` computes a different ROUGE-L).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable

from tasks.metrics_text import normalize_answer, normalize_zh_answer, token_f1

# the official scorer of each task (the ``metric`` of its records)
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
    if not rest:
        return False
    return rest.startswith(letter) or rest.startswith(fn_name)


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



def score_qa_f1(pred: str, answers: list[str]) -> float:
    """Max over references of token F1 after lower-casing and removing punctuation, articles, extra spaces."""
    return max((token_f1(normalize_answer(pred).split(), normalize_answer(a).split()) for a in answers), default=0.0)


def score_qa_f1_zh(pred: str, answers: list[str]) -> float:
    """Chinese: one character one token after removing Chinese and ASCII punctuation and spaces."""
    return max((token_f1(list(normalize_zh_answer(pred)), list(normalize_zh_answer(a))) for a in answers), default=0.0)


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
    """The score (0 or 100; F1 and ROUGE in between) of ``prediction`` under the official scorer ``metric``."""
    return 100.0 * float(SCORERS[metric](prediction, answers))

