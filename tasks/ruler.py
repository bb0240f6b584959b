"""RULER (NVIDIA, arXiv 2404.06654), generated locally with the evaluated model's tokenizer at any length.

Behaviour follows NVIDIA/RULER ``scripts/data/synthetic/`` (niah.py, variable_tracking.py,
common_words_extraction.py, freq_words_extraction.py, qa.py), the task settings of ``scripts/synthetic.yaml``,
the prompt strings of ``scripts/data/synthetic/constants.py`` and the metrics of ``scripts/eval/evaluate.py``
(``postprocess_pred``) and ``scripts/eval/synthetic/constants.py`` (``string_match_all``,
``string_match_part``). The code is this project's own; see the module docstrings for where it differs.

One record per sample (one question per context): ``context`` = the instructions before the haystack plus the
haystack (what is prefilled and compressed), ``question`` = the rest of the official input (it starts with the
official ``\\n``), ``answer_prefix`` = the official answer prefix (verbatim, with its leading space).

Haystack size: the largest number of haystack units (noise paragraphs, distractor needles, essay words, list
words, documents) whose *rendered* prompt (chat template included when the tokenizer has one and the record
uses it) plus ``tokens_to_generate`` fits ``length``; found by a binary search on a probe sample of the task,
then, for each sample, reduced (binary search) when that sample does not fit. QA searches every sample
(documents vary a lot in length). Sample ``i`` of a task depends only on (tokenizer, length, seed, task, i).
"""

from __future__ import annotations

import random
import re
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from tasks.prompts import largest_fitting, prompt_tokens, text_tokens
from tasks.records import Record
from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks import ruler_data

# ----------------------------------------------------------------------------------- official constants
# scripts/data/synthetic/constants.py (TASKS[...]['template'], ['answer_prefix'], ['tokens_to_generate'])
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
# "assgined" is the official spelling (sic).
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assgined the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other words."
    "\n\nThe following are given documents.\n\n{context}\n\n"
    "Answer the question based on the given documents. Only give me the answer and do not output any other words."
    "\n\nQuestion: {query}"
)
QA_ANSWER_PREFIX = " Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"  # qa.py DOCUMENT_PROMPT

TOKENS_TO_GENERATE = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}

# niah.py
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
DEPTHS = [round(100 * i / 39) for i in range(40)]  # np.round(np.linspace(0, 100, num=40)).astype(int)

# scripts/synthetic.yaml
NIAH_TASKS: dict[str, dict[str, Any]] = {
    "niah_single_1": dict(haystack="noise", k="words", v="numbers", nk=1, nv=1, nq=1),
    "niah_single_2": dict(haystack="essay", k="words", v="numbers", nk=1, nv=1, nq=1),
    "niah_single_3": dict(haystack="essay", k="words", v="uuids", nk=1, nv=1, nq=1),
    "niah_multikey_1": dict(haystack="essay", k="words", v="numbers", nk=4, nv=1, nq=1),
    "niah_multikey_2": dict(haystack="needle", k="words", v="numbers", nk=1, nv=1, nq=1),
    "niah_multikey_3": dict(haystack="needle", k="uuids", v="uuids", nk=1, nv=1, nq=1),
    "niah_multivalue": dict(haystack="essay", k="words", v="numbers", nk=1, nv=4, nq=1),
    "niah_multiquery": dict(haystack="essay", k="words", v="numbers", nk=1, nv=1, nq=4),
}
VT_CHAINS, VT_HOPS = 1, 4
CWE_FREQ_CW, CWE_FREQ_UCW, CWE_NUM_CW, CWE_NUM_FEWSHOT = 30, 3, 10, 1
CWE_SHORT = 4096  # below this max_seq_length: common x6 / uncommon x1, few-shot of 20 words x3/x1
FWE_ALPHA, FWE_WORDLEN = 2.0, 6
VT_ICL_LENGTH = 500  # variable_tracking.py builds its one in-context example for max_seq_length=500

ALL_TASKS = [
    "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
    "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2",
]
OFFLINE_TASKS = ["niah_single_1", "niah_multikey_2", "niah_multikey_3", "vt", "cwe", "fwe"]
DEFAULT_N_SAMPLES = 500


def task_family(task: str) -> str:
    return "niah" if task.startswith("niah") else ("qa" if task.startswith("qa") else task)


def metric_of(task: str) -> str:
    return "string_match_part" if task_family(task) == "qa" else "string_match_all"


# ------------------------------------------------------------------------------------------------ metrics
_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess_pred(pred: str) -> str:
    """evaluate.py ``postprocess_pred``: strip, control characters (``\\x00``-``\\x1f``) to newline, strip."""
    return _CONTROL.sub("\n", pred.strip()).strip()


def string_match_all(pred: str, refs: list[str]) -> float:
    """Fraction (0..1) of the references found, case-insensitively, in the prediction."""
    if not refs:
        return 0.0
    p = postprocess_pred(pred).lower()
    return sum(1.0 if r.lower() in p else 0.0 for r in refs) / len(refs)


def string_match_part(pred: str, refs: list[str]) -> float:
    """1 if any reference is found, case-insensitively, in the prediction, else 0."""
    p = postprocess_pred(pred).lower()
    return max((1.0 if r.lower() in p else 0.0 for r in refs), default=0.0)


METRICS: dict[str, Callable[[str, list[str]], float]] = {
    "string_match_all": string_match_all,
    "string_match_part": string_match_part,
}


# ------------------------------------------------------------------------------------- prompt counting
class PromptCounter:
    """Token count of a sample exactly as the protocol encodes it (``tasks.prompts.prompt_tokens``), for a
    tokenizer and a chat setting fixed once."""

    def __init__(self, tokenizer, chat: bool = True):
        self.tokenizer = tokenizer
        self.chat_flag = bool(chat)
        self.chat = bool(chat and getattr(tokenizer, "chat_template", None))

    def ntok(self, text: str, special: bool = False) -> int:
        return text_tokens(self.tokenizer, text, special)

    def count(self, context: str, question: str, answer_prefix: str) -> int:
        rec = Record(context_id="", sample_id="", suite="ruler", task="", context=context, question=question,
                     answers=[], max_new_tokens=0, metric="", answer_prefix=answer_prefix, chat_template=self.chat_flag)
        return prompt_tokens(self.tokenizer, rec)


# --------------------------------------------------------------------------------------------- sampling
@dataclass
class Sample:
    context: str
    question: str
    answer_prefix: str
    answers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, task: str, tag: Any) -> random.Random:
    # str seeds are hashed with sha512: stable across runs and Python versions (unlike hash()).
    return random.Random(f"kvbench-ruler:{seed}:{task}:{tag}")


def _random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def _random_key_word(rng: random.Random) -> str:
    # niah.py: random.choice over sorted(set(f"{adj}-{noun}")) == an adjective and a noun chosen uniformly
    adjs, nouns = ruler_data.wonderwords_list("adjectivelist.txt"), ruler_data.wonderwords_list("nounlist.txt")
    return f"{rng.choice(adjs)}-{rng.choice(nouns)}"


def _random(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return _random_number(rng)
    if kind == "words":
        return _random_key_word(rng)
    if kind == "uuids":
        return _random_uuid(rng)
    raise ValueError(kind)


def _find_span(context: str, text: str, start: int = 0) -> list[int]:
    i = context.find(text, start)
    if i < 0:
        raise AssertionError(f"{text!r} not in context")
    return [i, i + len(text)]


# ------------------------------------------------------------------------------------------------- NIAH
def niah_templates(cfg: dict[str, Any], query: str) -> tuple[str, str, str]:
    """(head before the haystack, question after it, answer prefix) with niah.py's singular rewrite."""
    template, prefix, type_v = NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, cfg["v"]
    if cfg["nq"] * cfg["nv"] == 1:
        def sing(t: str) -> str:
            return t.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")

        template, prefix, type_v = sing(template), sing(prefix), type_v[:-1]
    head, tail = template.split("{context}")
    return (head.format(type_needle_v=type_v), tail.format(type_needle_v=type_v, query=query),
            prefix.format(type_needle_v=type_v, query=query))


def niah_sample(cfg: dict[str, Any], n: int, rng: random.Random, essay_words: list[str] | None = None) -> Sample:
    nk = max(cfg["nk"], cfg["nq"])
    keys: list[str] = []
    values: list[list[str]] = []
    needles: list[tuple[str, int]] = []  # (text, key index)
    used_values: set[str] = set()
    for ki in range(nk):
        key = _random(cfg["k"], rng)
        while key in keys:
            key = _random(cfg["k"], rng)
        keys.append(key)
        vals = []
        for _ in range(cfg["nv"]):
            v = _random(cfg["v"], rng)
            while v in used_values:
                v = _random(cfg["v"], rng)
            used_values.add(v)
            vals.append(v)
            needles.append((NEEDLE.format(type_needle_v=cfg["v"], key=key, value=v), ki))
        values.append(vals)
    rng.shuffle(needles)

    extra: dict[str, Any] = {"n_haystack": n, "haystack": cfg["haystack"]}
    if cfg["haystack"] == "essay":
        assert essay_words
        words = essay_words if n <= len(essay_words) else (essay_words * (n // len(essay_words) + 1))
        sents = ruler_data.split_sentences(" ".join(words[:n]).strip())
        depths = rng.sample(DEPTHS, len(needles))
        positions = [0] + sorted(int(len(sents) * (d / 100)) for d in depths) + [len(sents)]
        parts = []
        for i in range(1, len(positions)):
            parts.append(" ".join(sents[positions[i - 1]:positions[i]]))
            if i - 1 < len(needles):
                parts.append(needles[i - 1][0])
        haystack = " ".join(parts)
        extra["depth_percents"] = sorted(depths)
        extra["haystack_unit"] = "essay words"
    else:
        if cfg["haystack"] == "noise":
            sentences = [NOISE] * n
            extra["haystack_unit"] = "noise paragraphs"
        else:  # "needle": every line a distractor needle with a fresh key and value
            sentences = []
            for _ in range(n):
                k = _random(cfg["k"], rng)
                while k in keys:
                    k = _random(cfg["k"], rng)
                sentences.append(NEEDLE.format(type_needle_v=cfg["v"], key=k, value=_random(cfg["v"], rng)))
            extra["haystack_unit"] = "distractor needles"
        indexes = sorted(rng.sample(range(n), len(needles)), reverse=True)
        for index, (text, _) in zip(indexes, needles):
            sentences.insert(index, text)
        haystack = "\n".join(sentences)

    indices = rng.sample(range(nk), cfg["nq"])
    queries = [keys[i] for i in indices]
    answers = [a for i in indices for a in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    head, question, prefix = niah_templates(cfg, query)
    context = head + haystack

    answer_spans: list[list[int]] = []
    other_spans: list[list[int]] = []
    for text, ki in needles:
        span = _find_span(context, text, len(head))
        (answer_spans if ki in indices else other_spans).append(span)
    answer_spans.sort()
    extra["needle_spans"] = answer_spans
    if other_spans:
        extra["distractor_needle_spans"] = sorted(other_spans)
    extra["depth"] = answer_spans[0][0] / len(context)
    extra["needle_depths"] = [s[0] / len(context) for s in answer_spans]
    extra["keys"] = queries
    return Sample(context, question, prefix, answers, extra)


# --------------------------------------------------------------------------------------------------- VT
def _vt_names(rng: random.Random, count: int, k: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=k))
        if name not in names and name != "VAR":
            names.append(name)
    return names


def _vt_block(rng: random.Random, n_noise: int, k: int) -> tuple[str, str, list[str], list[str]]:
    """variable_tracking.py ``generate_input_output``: (noise text with the chain, value, names, chain)."""
    names = _vt_names(rng, VT_CHAINS * (VT_HOPS + 1), k)
    value = str(rng.randint(10000, 99998))  # np.random.randint(10000, 99999)
    chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(VT_HOPS)]
    sentences = [NOISE + "\n"] * n_noise
    positions = sorted(rng.sample(range(len(sentences)), len(chain)))
    for j, pos in enumerate(positions):
        sentences.insert(pos + j, chain[j])
    text = " ".join(sentences).replace(". \n", ".\n")
    return text, value, names, chain


def vt_icl_example(rng: random.Random, n_noise: int) -> str:
    """The in-context example: a full task (3-letter names) with its answer appended, then a blank line."""
    text, value, names, _ = _vt_block(rng, n_noise, k=3)
    full = VT_TEMPLATE.format(context=text, query=value) + VT_ANSWER_PREFIX.format(num_v=VT_HOPS + 1, query=value)
    return full + " " + " ".join(names) + "\n\n"


def vt_sample(n: int, rng: random.Random, icl_noise: int) -> Sample:
    icl = vt_icl_example(rng, icl_noise)
    text, value, names, chain = _vt_block(rng, n, k=5)
    head, tail = VT_TEMPLATE.split("{context}")
    context = icl + "\n\n" + head + text
    spans = [_find_span(context, c.rstrip(), len(icl)) for c in chain]
    return Sample(
        context=context,
        question=tail.format(query=value),
        answer_prefix=VT_ANSWER_PREFIX.format(num_v=VT_HOPS + 1, query=value),
        answers=names,
        extra={"n_haystack": n, "haystack_unit": "noise paragraphs", "needle_spans": spans,
               "depth": spans[0][0] / len(context), "needle_depths": [s[0] / len(context) for s in spans],
               "value": value, "icl_noise": icl_noise},
    )


# -------------------------------------------------------------------------------------------------- CWE
def cwe_words() -> list[str]:
    """common_words_extraction.py: wonderwords nouns + adjectives + verbs, deduplicated, sorted."""
    lists = ("nounlist.txt", "adjectivelist.txt", "verblist.txt")
    return sorted(set().union(*(ruler_data.wonderwords_list(name) for name in lists)))


def _cwe_pick(rng: random.Random, num_words: int, words: list[str], more: list[str] | None) -> list[str]:
    if num_words <= len(words):
        return rng.sample(words, num_words)
    if more is not None and num_words <= len(more):  # official: random.sample(randle_words, num_words)
        return rng.sample(more, num_words)
    # no larger list available: distinct hyphenated pairs of list words
    idx = rng.sample(range(len(words) ** 2), num_words)
    return [f"{words[i // len(words)]}-{words[i % len(words)]}" for i in idx]


def _cwe_example(rng, num_words, common_repeats, uncommon_repeats, words, more) -> tuple[str, list[str]]:
    full = _cwe_pick(rng, num_words, words, more)
    common, uncommon = full[:CWE_NUM_CW], full[CWE_NUM_CW:]
    word_list = common * common_repeats + uncommon * uncommon_repeats
    rng.shuffle(word_list)
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(word_list)), common


def cwe_sample(n: int, rng: random.Random, length: int, words: list[str], more: list[str] | None) -> Sample:
    if length < CWE_SHORT:
        shots = [_cwe_example(rng, 20, 3, 1, words, more) for _ in range(CWE_NUM_FEWSHOT)]
        cw, ucw = 6, 1
    else:
        shots = [_cwe_example(rng, 40, 10, 3, words, more) for _ in range(CWE_NUM_FEWSHOT)]
        cw, ucw = CWE_FREQ_CW, CWE_FREQ_UCW
    text, answer = _cwe_example(rng, n, cw, ucw, words, more)
    shot_text = "\n".join(
        CWE_TEMPLATE.format(context=c) + CWE_ANSWER_PREFIX + " " + " ".join(f"{i + 1}. {w}" for i, w in enumerate(a))
        for c, a in shots
    )
    head, tail = CWE_TEMPLATE.split("{context}")
    return Sample(
        context=shot_text + "\n" + head + text,
        question=tail,
        answer_prefix=CWE_ANSWER_PREFIX,
        answers=answer,
        extra={"n_haystack": n, "haystack_unit": "distinct words", "freq_common": cw, "freq_uncommon": ucw},
    )


# -------------------------------------------------------------------------------------------------- FWE
def _zeta(s: float, terms: int = 1000) -> float:
    """Riemann zeta for s > 1 (scipy.special.zeta without scipy): partial sum + Euler-Maclaurin tail."""
    n = terms
    return (sum(k ** -s for k in range(1, n)) + n ** (1 - s) / (s - 1) + 0.5 * n ** -s + s * n ** (-s - 1) / 12)


def fwe_sample(n: int, rng: random.Random, length: int) -> Sample:
    vocab_size = max(4, length // 50)
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=FWE_WORDLEN)) for _ in range(vocab_size)]
    while len(set(vocab)) < vocab_size:
        vocab.append("".join(rng.choices(string.ascii_lowercase, k=FWE_WORDLEN)))
    vocab = sorted(set(vocab))
    rng.shuffle(vocab)
    vocab[0] = "..."  # the top-ranked word is noise
    z = _zeta(FWE_ALPHA)
    sampled = [w for k, w in enumerate(vocab, start=1) for _ in range(int(n * k ** -FWE_ALPHA / z))]
    rng.shuffle(sampled)
    head, tail = FWE_TEMPLATE.split("{context}")
    return Sample(
        context=head + " ".join(sampled),
        question=tail,
        answer_prefix=FWE_ANSWER_PREFIX,
        answers=vocab[1:4],
        extra={"n_haystack": n, "haystack_unit": "zipf words", "vocab_size": vocab_size,
               "n_coded_words": len(sampled)},
    )


# --------------------------------------------------------------------------------------------------- QA
def qa_sample(data: ruler_data.QAData, index: int, n_docs: int, rng: random.Random) -> Sample:
    """qa.py ``generate_input_output``: the question's documents, the article's other paragraphs (SQuAD),
    then random documents, shuffled. Below the question's own document count (short budgets) the supporting
    documents are kept first (an extension: RULER never asks for fewer)."""
    qa = data.qas[index]
    curr, more = list(qa["context"]), list(qa.get("more_context", []))
    if n_docs < len(data.docs):
        if n_docs <= len(curr):
            chosen = curr[:n_docs]
        elif n_docs - len(curr) > len(more):
            taken = set(curr) | set(more)
            addition = [i for i in range(len(data.docs)) if i not in taken]
            chosen = curr + more + rng.sample(addition, n_docs - len(curr) - len(more))
        else:
            chosen = curr + rng.sample(more, n_docs - len(curr))
    else:
        chosen = list(range(len(data.docs)))
    n_gold = qa.get("n_gold", 1)
    gold = set(curr[:n_gold])
    rng.shuffle(chosen)
    head, tail = QA_TEMPLATE.split("{context}")
    pieces, spans, pos = [], [], len(head)
    for i, d in enumerate(chosen):
        piece = QA_DOCUMENT.format(i=i + 1, document=data.docs[d])
        if d in gold:
            spans.append([pos, pos + len(piece)])
        pieces.append(piece)
        pos += len(piece) + 2
    return Sample(
        context=head + "\n\n".join(pieces),
        question=tail.format(query=qa["query"]),
        answer_prefix=QA_ANSWER_PREFIX,
        answers=list(qa["outputs"]),
        extra={"n_haystack": len(chosen), "haystack_unit": "documents", "gold_doc_spans": spans,
               "qa_index": index, "qa_source": data.source},
    )


# -------------------------------------------------------------------------------------------------- task
class LengthTooSmall(ValueError):
    """``length`` leaves no room for the smallest haystack of a task (reported as skipped by ``load``)."""


@dataclass
class _Gen:
    """One sub-task's generator: ``make(n_units, rng)`` and the bounds of its haystack size."""

    make: Callable[[int, random.Random], Sample] | None  # None for QA (samples are indexed questions)
    lo: int
    cap: int | None = None
    per_sample_search: bool = False
    n_available: int | None = None  # QA: number of questions


@register("ruler")
class Ruler(Task):
    """RULER's 13 tasks at ``length`` tokens (prompt + tokens_to_generate), with the evaluated tokenizer.

    Params: ``length`` (default 4096), ``tasks`` (subset; default every task), ``data_dir``, ``essay_source``
    (path or hub id), ``squad_path``, ``hotpotqa_path``, ``use_hub`` (default true: try the hub when no local
    file is found), ``chat_template`` (default true).
    """

    def __init__(self, length: int = 4096, tasks: Any = None, data_dir: str | None = None,
                 essay_source: str | None = None, squad_path: str | None = None, hotpotqa_path: str | None = None,
                 use_hub: bool = True, chat_template: bool = True, **params: Any):
        super().__init__(length=length, tasks=tasks, data_dir=data_dir, essay_source=essay_source,
                         squad_path=squad_path, hotpotqa_path=hotpotqa_path, use_hub=use_hub,
                         chat_template=chat_template, **params)
        self.length = int(length)
        if self.length <= 0:
            raise ValueError(f"ruler: length must be positive, got {length}")
        if tasks is None:
            names = list(ALL_TASKS)
        elif isinstance(tasks, str):
            names = [t.strip() for t in tasks.split(",") if t.strip()]
        else:
            names = [str(t) for t in tasks]
        unknown = [t for t in names if t not in ALL_TASKS]
        if unknown:
            raise ValueError(f"ruler: unknown task(s) {unknown}; valid: {', '.join(ALL_TASKS)}")
        self.tasks = names
        self.dirs = ruler_data.data_dirs(data_dir)
        self.essay_source, self.squad_path, self.hotpotqa_path = essay_source, squad_path, hotpotqa_path
        self.use_hub = bool(use_hub)
        self.chat_template = bool(chat_template)
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------------------------------ data
    def _essay_words(self) -> list[str]:
        if "essay" not in self._cache:
            try:
                text, source = ruler_data.load_essays(self.essay_source, self.dirs, self.use_hub)
                words = re.sub(r"\s+", " ", text).strip().split(" ")
                if len(words) < 10:
                    raise DataMissing(f"the essay corpus at {source} has fewer than 10 words")
                self._cache["essay"] = (words, source)
            except DataMissing as e:
                self._cache["essay"] = e
        got = self._cache["essay"]
        if isinstance(got, Exception):
            raise got
        return got[0]

    def _qa(self, which: str) -> ruler_data.QAData:
        if which not in self._cache:
            path = self.squad_path if which == "squad" else self.hotpotqa_path
            try:
                self._cache[which] = ruler_data.load_qa(which, path, self.dirs, self.use_hub)
            except DataMissing as e:
                self._cache[which] = e
        got = self._cache[which]
        if isinstance(got, Exception):
            raise got
        return got

    def _generator(self, task: str, counter: PromptCounter, seed: int) -> _Gen:
        fam = task_family(task)
        if fam == "niah":
            cfg = NIAH_TASKS[task]
            n_needles = max(cfg["nk"], cfg["nq"]) * cfg["nv"]
            if cfg["haystack"] == "essay":
                words = self._essay_words()
                return _Gen(lambda n, rng: niah_sample(cfg, n, rng, words), lo=10)
            return _Gen(lambda n, rng: niah_sample(cfg, n, rng), lo=max(1, n_needles))
        if task == "vt":
            icl_noise = self._vt_icl_noise(counter.tokenizer, seed)
            return _Gen(lambda n, rng: vt_sample(n, rng, icl_noise), lo=VT_HOPS + 1)
        if task == "cwe":
            words, more = cwe_words(), ruler_data.english_words(self.dirs)
            return _Gen(lambda n, rng: cwe_sample(n, rng, self.length, words, more), lo=CWE_NUM_CW + 1,
                        per_sample_search=True)
        if task == "fwe":
            return _Gen(lambda n, rng: fwe_sample(n, rng, self.length), lo=30, per_sample_search=True)
        if fam == "qa":
            data = self._qa("squad" if task == "qa_1" else "hotpotqa")
            lo = data.qas[0].get("n_gold", 1) if data.qas else 1
            return _Gen(None, lo=lo, cap=len(data.docs), per_sample_search=True, n_available=len(data.qas))
        raise ValueError(task)

    def _data_source(self, task: str) -> str:
        """Where a sub-task's data came from (recorded in every row): the file or hub set it was read from, or
        ``generated`` for the tasks that need no data."""
        fam = task_family(task)
        if fam == "qa":
            return self._qa("squad" if task == "qa_1" else "hotpotqa").source
        if fam == "niah" and NIAH_TASKS[task]["haystack"] == "essay":
            self._essay_words()
            return self._cache["essay"][1]
        return "generated"

    def _vt_icl_noise(self, tokenizer, seed: int) -> int:
        """Noise paragraphs of the in-context example: the largest multiple of 5 whose example (plain text, with
        its answer) plus tokens_to_generate fits 500 tokens, as variable_tracking.py sizes it."""
        key = ("vt_icl", id(tokenizer), seed)
        if key not in self._cache:
            plain = PromptCounter(tokenizer, chat=False)

            def count(m: int) -> int:
                ex = vt_icl_example(_rng(seed, "vt", "icl"), 5 * m)
                return plain.ntok(ex.rstrip("\n"))

            m = largest_fitting(count, VT_ICL_LENGTH - TOKENS_TO_GENERATE["vt"], 1, 5)
            self._cache[key] = 5 * (m or 1)
        return self._cache[key]

    # ------------------------------------------------------------------------------------------ load
    def load(self, tokenizer, n_samples: int | None = None, seed: int = 42) -> TaskData:
        n = DEFAULT_N_SAMPLES if n_samples is None else int(n_samples)
        counter = PromptCounter(tokenizer, chat=self.chat_template)
        records: list[Record] = []
        skipped: dict[str, str] = {}
        for task in self.tasks:
            try:
                records.extend(self.generate(task, tokenizer, n, seed, counter=counter))
            except DataMissing as e:
                skipped[task] = f"{task} {e}"
            except LengthTooSmall as e:
                skipped[task] = str(e)
        return TaskData(records=records, skipped=skipped)

    def generate(self, task: str, tokenizer, n_samples: int, seed: int = 42, indices: list[int] | None = None,
                 counter: PromptCounter | None = None) -> list[Record]:
        """Records of one sub-task: samples ``0..n_samples-1`` (or the given ``indices``)."""
        if task not in ALL_TASKS:
            raise ValueError(f"ruler: unknown task {task!r}; valid: {', '.join(ALL_TASKS)}")
        counter = counter or PromptCounter(tokenizer, chat=self.chat_template)
        gen = self._generator(task, counter, seed)
        fam = task_family(task)
        ttg = TOKENS_TO_GENERATE[fam]
        budget = self.length - ttg

        if fam == "qa":
            data = self._qa("squad" if task == "qa_1" else "hotpotqa")

            def make(k: int, idx: Any) -> Sample:
                return qa_sample(data, idx, k, _rng(seed, task, idx))

            n_available = gen.n_available
            assert n_available is not None  # set for QA
            wanted = [i for i in (indices if indices is not None else range(n_samples)) if i < n_available]
            probe_idx: Any = 0
        else:
            make_unit = gen.make
            assert make_unit is not None  # None only for QA

            def make(k: int, idx: Any) -> Sample:
                return make_unit(k, _rng(seed, task, idx))

            wanted = list(indices if indices is not None else range(n_samples))
            probe_idx = "probe"
        if not wanted:
            return []

        def counter_for(idx: Any) -> Callable[[int], int]:
            def count(k: int) -> int:
                s = make(k, idx)
                return counter.count(s.context, s.question, s.answer_prefix)
            return count

        # the haystack size of this (tokenizer, length, seed, task), searched on a probe sample
        probe_key = ("probe", task, id(tokenizer), seed, self.length, counter.chat)
        if probe_key not in self._cache:
            count = counter_for(probe_idx)
            a = gen.lo
            b = a * 2 + 10 if gen.cap is None else min(a * 2 + 10, gen.cap)
            ta = count(a)
            slope = max(1e-6, (count(b) - ta) / (b - a)) if b > a else 1.0
            guess = a + int((budget - ta) / slope)
            best = largest_fitting(count, budget, gen.lo, guess, gen.cap, slope)
            if best is None:
                raise LengthTooSmall(f"ruler {task}: length {self.length} is too small for even the smallest haystack "
                                 f"({gen.lo} units) plus {ttg} tokens to generate with this tokenizer")
            self._cache[probe_key] = (best, slope)
        n_star, slope = self._cache[probe_key]

        source = self._data_source(task)
        out = []
        for idx in wanted:
            count = counter_for(idx)
            lo = data.qas[idx].get("n_gold", 1) if fam == "qa" else gen.lo
            if gen.per_sample_search:
                k = largest_fitting(count, budget, lo, max(lo, n_star), gen.cap, slope)
            else:  # RULER: the probe's size, reduced for a sample that does not fit
                k = n_star if count(n_star) <= budget else largest_fitting(count, budget, lo, n_star - 1, n_star, slope)
            if k is None:
                raise LengthTooSmall(f"ruler {task}/{idx}: nothing fits length {self.length}")
            s = make(k, idx)
            n_tok = counter.count(s.context, s.question, s.answer_prefix)
            sid = f"{task}/{idx}"
            out.append(Record(
                context_id=sid, sample_id=sid, suite="ruler", task=task, context=s.context, question=s.question,
                answers=list(s.answers), max_new_tokens=ttg, metric=metric_of(task), answer_prefix=s.answer_prefix,
                chat_template=self.chat_template, length_bucket=self.length,
                extra={**s.extra, "prompt_tokens": n_tok, "length": self.length, "data_source": source},
            ))
        return out

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        fn = METRICS.get(record.metric)
        if fn is None:
            raise KeyError(f"ruler: unknown metric {record.metric!r}; known: {', '.join(METRICS)}")
        return 100.0 * fn(prediction, list(record.answers))

    @staticmethod
    def headline(task_scores: dict[str, float], counts: dict[str, int] | None = None) -> float:
        """Unweighted mean of the tasks that ran (``counts`` unused)."""
        return sum(task_scores.values()) / max(1, len(task_scores))

    def max_length(self) -> int | None:
        return self.length


__all__ = [
    "Ruler", "ALL_TASKS", "OFFLINE_TASKS", "TOKENS_TO_GENERATE", "postprocess_pred", "string_match_all",
    "string_match_part", "PromptCounter", "largest_fitting",
]
