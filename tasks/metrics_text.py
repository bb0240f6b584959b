"""Text metrics of the official scorers, ported in behaviour (returns are fractions in [0, 1]).

LongBench (THUDM/LongBench ``LongBench/metrics.py``): ``qa_f1``, ``qa_f1_zh``, ``rouge_l_f``, ``rouge_zh``,
``classification``, ``retrieval``, ``retrieval_zh``, ``count``, ``code_sim``.
LooGLE (bigai-nlco/LooGLE ``Evaluation/automatic_metrics.py``): ``bleu_1_4``, ``rouge_recall``,
``meteor`` (only with a local WordNet).

Every function takes ``(prediction, ground_truth)`` strings; callers do the max over references and the
first-line cut (see tasks/longbench.py).
"""

from __future__ import annotations

import difflib
import re
import string
import warnings
from collections import Counter
from functools import lru_cache

# ----------------------------------------------------------------------------------------- normalising
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_EN_PUNCT = frozenset(string.punctuation)
# the Chinese punctuation list of the official normalize_zh_answer (ASCII punctuation is added to it)
_CN_PUNCT = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_ZH_PUNCT = frozenset(string.punctuation + _CN_PUNCT)


def normalize_answer(s: str) -> str:
    """SQuAD-style: lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _EN_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    """Lowercase, drop ASCII and Chinese punctuation, remove all whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _ZH_PUNCT)
    return "".join(s.split())


def token_f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    """Bag-of-tokens F1 (multiset overlap)."""
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _jieba_cut(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)  # silence "Building prefix dict..." on first use
    return list(jieba.cut(text, cut_all=False))


# ------------------------------------------------------------------------------------ LongBench metrics
def qa_f1(prediction: str, ground_truth: str) -> float:
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh(prediction: str, ground_truth: str) -> float:
    """jieba words, each normalised (punctuation/whitespace removed), empty words dropped, then F1."""
    pred = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(prediction)) if t]
    ref = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(ground_truth)) if t]
    return token_f1(pred, ref)


@lru_cache(maxsize=1)
def _rouge():
    from rouge import Rouge

    return Rouge()


def rouge_l_f(prediction: str, ground_truth: str) -> float:
    """ROUGE-L F as the ``rouge`` package computes it; 0 when it raises (e.g. an empty hypothesis)."""
    try:
        return float(_rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"])
    except Exception:  # noqa: BLE001 - the official scorer's bare except
        return 0.0


def rouge_zh(prediction: str, ground_truth: str) -> float:
    """ROUGE-L F on jieba words joined by spaces."""
    return rouge_l_f(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(ground_truth)))


def _fraction_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(1 for n in numbers if n == str(target)) / len(numbers)


def count(prediction: str, ground_truth: str) -> float:
    """passage_count: fraction of the integers in the prediction that equal the reference."""
    return _fraction_equal(prediction, ground_truth)


def retrieval(prediction: str, ground_truth: str) -> float:
    """passage_retrieval_en: the target is the number in "Paragraph N" of the reference."""
    return _fraction_equal(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh(prediction: str, ground_truth: str) -> float:
    return _fraction_equal(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def classification(prediction: str, ground_truth: str, all_classes: list[str]) -> float:
    """trec / lsht, exactly as the official scorer behaves.

    Class names found (as substrings) in the prediction are collected; those that are substrings of the
    ground truth but not equal to it are then dropped. The official code drops them by removing from the
    list *while iterating over it*, so the element right after a removed one is never examined (a partial
    class name that follows a removed one survives). We keep that behaviour. Score = 1/len(list) when the
    ground truth is in the list, else 0. (The official difflib fallback sits behind ``if list != 0``, which
    is always true, so it never runs; it is not ported.)
    """
    matched = [c for c in all_classes if c in prediction]
    for term in matched:  # mutating while iterating: intentional, reproduces the official skip
        if term in ground_truth and term != ground_truth:
            matched.remove(term)
    return 1.0 / len(matched) if ground_truth in matched else 0.0


def fuzzy_ratio(a: str, b: str, backend: str = "levenshtein") -> int:
    """fuzzywuzzy's ``fuzz.ratio`` (0..100 integer).

    fuzzywuzzy returns 100 for equal strings, 0 when either is empty, else ``int(round(100 * r))`` with
    ``r`` the python-Levenshtein ratio ``(len(a)+len(b) - indel_distance) / (len(a)+len(b))`` (insertions
    and deletions only; rapidfuzz's ``Indel`` computes the same distance). ``backend="difflib"`` gives
    fuzzywuzzy's pure-Python fallback (``difflib.SequenceMatcher.ratio``), used when python-Levenshtein is
    not installed.
    """
    if a == b:
        return 100
    if not a or not b:
        return 0
    if backend == "difflib":
        r = difflib.SequenceMatcher(None, a, b).ratio()
    elif backend == "levenshtein":
        from rapidfuzz.distance import Indel

        lensum = len(a) + len(b)
        r = (lensum - Indel.distance(a, b)) / lensum
    else:
        raise ValueError(f"unknown fuzzy backend {backend!r}; use 'levenshtein' or 'difflib'")
    return int(round(100 * r))


def code_first_line(prediction: str) -> str:
    """The first line (after leading newlines) containing no backtick, ``#`` or ``//``; "" if none."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim(prediction: str, ground_truth: str, backend: str = "levenshtein") -> float:
    return fuzzy_ratio(code_first_line(prediction), ground_truth, backend) / 100


# ---------------------------------------------------------------------------------------- LooGLE metrics
def bleu_1_4(prediction: str, reference: str) -> tuple[float, float]:
    """nltk ``sentence_bleu`` on whitespace tokens (newlines as spaces), weights (1,0,0,0) and (0,0,0,1),
    default (no) smoothing, as LooGLE's ``get_bleu_score``. "BLEU-4" is thus the 4-gram precision alone
    (times the brevity penalty), not the geometric mean of 1..4."""
    from nltk.translate.bleu_score import sentence_bleu

    ref = reference.replace("\n", " ").split()
    hyp = prediction.replace("\n", " ").split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram counts and returns 0
        b1 = sentence_bleu([ref], hyp, weights=(1, 0, 0, 0))
        b4 = sentence_bleu([ref], hyp, weights=(0, 0, 0, 1))
    return float(b1), float(b4)


def rouge_recall(prediction: str, reference: str, kind: str = "r") -> dict[str, float]:
    """ROUGE-1/2/L of the ``rouge`` package, recall by default (LooGLE's ``metric="r"``).

    Returns zeros when the package raises (empty or punctuation-only texts)."""
    try:
        s = _rouge().get_scores(hyps=[prediction], refs=[reference])[0]
        return {"rouge1": float(s["rouge-1"][kind]), "rouge2": float(s["rouge-2"][kind]),
                "rouge_l": float(s["rouge-l"][kind])}
    except Exception:  # noqa: BLE001
        return {"rouge1": 0.0, "rouge2": 0.0, "rouge_l": 0.0}


@lru_cache(maxsize=1)
def wordnet_available() -> bool:
    """METEOR needs NLTK's WordNet data; we only look for it locally (never download)."""
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        wordnet.synsets("test")
        return True
    except Exception:  # noqa: BLE001 - LookupError, BadZipFile, ...
        return False


def meteor(prediction: str, reference: str) -> float | None:
    """LooGLE's ``single_meteor_score(set(reference), set(hypothesis))`` on whitespace tokens.

    The official passes Python sets, whose iteration order depends on hash randomisation, so its value
    is not reproducible across processes; we pass the same sets in sorted order (deterministic).
    Returns None when WordNet is not installed locally.
    """
    if not wordnet_available():
        return None
    from nltk.translate.meteor_score import single_meteor_score

    ref = sorted(set(reference.replace("\n", " ").split()))
    hyp = sorted(set(prediction.replace("\n", " ").split()))
    try:
        return float(single_meteor_score(ref, hyp))
    except Exception:  # noqa: BLE001
        return 0.0
