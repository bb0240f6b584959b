"""InfiniteBench's synthetic tasks generated locally (docs/tasks/infinitebench.md, "Synthetic tasks"): passkey,
number_string, kv_retrieval and math_find as OpenBMB/InfiniteBench ``data/construct_synthetic_dataset.py`` builds
them, at any haystack size. The haystack size that fits a length is found by ``tasks.prompts.largest_fitting``
on the rendered prompt (``tasks.prompts.prompt_tokens``), in the suite (``tasks.infinitebench``)."""

from __future__ import annotations

import random
import uuid
from typing import Any, Callable

SYNTH_TASKS = ["passkey", "number_string", "kv_retrieval", "math_find"]

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


def math_find_answer(values: list[int], kind: str) -> int | float:
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
                    "answer": [math_find_answer(vals, kind)]}

        return make, 10, {"kind": kind, "range": [lo, hi]}

    raise ValueError(f"no local generator for {task!r}; synthetic tasks: {', '.join(SYNTH_TASKS)}")

