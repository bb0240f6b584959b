"""The sweep runner: one prefill per context for a whole grid of (method, r) configurations.

Prefill attention is full and compression happens after it, so every method's scores come out of one
prefill; each configuration then costs a gather plus its question decode, and the decodes of a context's
configurations run as batches (docs/protocol.md, "Why one prefill serves a whole sweep").
"""

from __future__ import annotations

import json
import subprocess
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.cell import Cell
from harness.configstep import ConfigStep, Prefilled
from harness.memory import model_devices, peak_bytes, reset_peak
from harness.protocol import encode_context, encode_question, generation_stats, has_decode_rule, kept_budget
from harness.turns import run_turns
from tasks.chat import chat_kwargs, kwargs_json, strip_thinking
from tasks.records import Record


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def versions() -> dict:
    import transformers

    from harness import __version__

    return {"harness_version": __version__, "torch_version": torch.__version__, "transformers_version": transformers.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def group_by_context(records: list[Record]) -> "OrderedDict[str, list[Record]]":
    groups: OrderedDict[str, list[Record]] = OrderedDict()
    for rec in records:
        groups.setdefault(rec.context_id, []).append(rec)
    return groups


@dataclass
class SweepRunner:
    model: torch.nn.Module
    tokenizer: Any
    cells: list[Cell]
    static: dict  # columns equal for every row of the run (model, versions, task name, ...)
    window: int | None = None  # model context window (prompt + answer tokens)
    max_context: int | None = None  # optional cap on context tokens
    decode_batch_size: int = 8
    score: Callable[[Record, str], float] | None = None  # (record, prediction) -> 0..100
    # (record, prediction) -> {name: 0..100}, written as score_<name>
    extra_scores: Callable[[Record, str], dict[str, float]] | None = None
    # callable(rows, note): told during a context, so a progress bar moves inside it: (0, "prefill ...") before
    # each prefill, (k, "decoded i/n configurations") after each decode batch of k rows
    progress: Callable[[int, str], None] | None = None
    turns: int | str = 1  # 1: each question on its own; k or "multi": conversations (harness/turns.py)
    prefill: str = "default"  # "layerwise": each layer compressed after its attention (one configuration per prefill)
    prefill_chunk: int | None = None  # chunked prefill: tokens per chunk, evicted to the budget after each

    def __post_init__(self):
        self.device = next(self.model.parameters()).device
        self.devices = model_devices(self.model)  # every GPU of a model spread with device=auto
        self.step = ConfigStep(self.model, self.tokenizer)  # prefill, select, compress, decode a configuration
        self.layers = self.step.layers

    # ----------------------------------------------------------------- planning
    def context_budget(self, n_question: int, record: Record) -> int | None:
        caps = []
        if self.window:
            caps.append(self.window - n_question - record.max_new_tokens)
        if self.max_context:
            caps.append(self.max_context)
        if record.extra.get("truncate_to"):
            caps.append(int(record.extra["truncate_to"]))
        return min(caps) if caps else None

    # ---------------------------------------------------------------- execution
    def _report(self, rows: int, note: str) -> None:
        if self.progress is not None:
            self.progress(rows, note)

    def run_group(self, group: list[Record], done: set[tuple[str, str]]) -> list[dict]:
        """All configurations of one context: returns the new rows."""
        rows: list[dict] = []
        todo = [c for c in self.cells if any((c.run_id, r.sample_id) not in done for r in group)]
        if self.turns != 1:  # the questions as turns of conversations
            return run_turns(self, group, todo, done)
        if self.prefill != "default" or self.prefill_chunk is not None:
            return self._run_own_prefill(group, todo, done)
        shared = [c for c in todo if not c.query_aware]
        if shared:
            rows += self._run_shared(group, shared, done)
        if len(group) > 1 and all("query_index" in r.extra for r in group):  # one context, several questions
            aware = [c for c in todo if c.query_aware]
            if aware:
                rows += self._run_multi_query_aware(group, aware, done)
            return rows
        for rec in group:
            aware = [c for c in todo if c.query_aware and (c.run_id, rec.sample_id) not in done]
            if aware:
                rows += self._run_query_aware(rec, aware)
        return rows

    def _prefill(self, ids: torch.Tensor, cells: list[Cell]) -> tuple[Prefilled, int]:
        reset_peak(self.devices)
        pre = self.step.prefill(ids, cells)
        return pre, peak_bytes(self.devices)

    def _encode_group(self, group: list[Record]):
        """The questions of a context's records and the context, truncated to fit the longest of them."""
        questions = {r.sample_id: encode_question(self.tokenizer, r) for r in group}
        budgets = [self.context_budget(questions[r.sample_id].shape[-1], r) for r in group]
        known = [b for b in budgets if b is not None]
        return questions, encode_context(self.tokenizer, group[0], min(known) if known else None)

    def _run_shared(self, group: list[Record], cells: list[Cell], done) -> list[dict]:
        questions, enc = self._encode_group(group)
        self._report(0, f"prefill {enc.context_ids.shape[-1]} tokens")
        pre, prefill_peak = self._prefill(enc.context_ids, cells)
        return self._answer_all(group, cells, done, pre, enc, questions, prefill_peak)

    def _answer_all(self, group, cells, done, pre: Prefilled, enc, questions, prefill_peak) -> list[dict]:
        """Every question of ``group`` answered from one prefill: each cell selects once, then decodes each
        question it still lacks."""
        kept = {c.run_id: self.step.select(c, pre) for c in cells}
        rows = []
        for rec in group:
            need = [c for c in cells if (c.run_id, rec.sample_id) not in done]
            rows += self._decode_cells(rec, need, pre, kept, enc, questions[rec.sample_id], prefill_peak)
        return rows

    def _run_own_prefill(self, group: list[Record], cells: list[Cell], done) -> list[dict]:
        """``prefill=layerwise`` / ``prefill_chunk``: each configuration on a prefill of its own, compressed while it
        runs (harness/prefill_modes.py), so the one-prefill sharing of the sweep does not apply; every question
        decodes alone (batch of one) over it. A row's ``peak_mem_bytes`` is its own prefill's and decode's."""
        questions, enc = self._encode_group(group)
        n = int(enc.context_ids.shape[-1])
        how = ", ".join(([self.prefill] if self.prefill != "default" else []) +
                        ([f"chunks of {self.prefill_chunk}"] if self.prefill_chunk else []))
        rows = []
        for cell in cells:
            need = [r for r in group if (cell.run_id, r.sample_id) not in done]
            if not need:
                continue
            self._report(0, f"prefill {n} tokens for {cell.label} ({how})")
            reset_peak(self.devices)
            ctx, cost = self.step.prefill_compress(enc.context_ids, cell, self.prefill == "layerwise",
                                                   self.prefill_chunk)
            prefill_peak = peak_bytes(self.devices)
            for rec in need:
                q_ids = questions[rec.sample_id]
                reset_peak(self.devices)
                timing: dict = {}
                preds, n_gen, decode_s = self.step.decode([cell], [ctx], q_ids, rec.max_new_tokens, rec.stop_strings,
                                                          timing=timing)
                peak = max(peak_bytes(self.devices), prefill_peak)
                rows.append(self.row(rec, cell, ctx, preds[0], n_gen[0], enc, q_ids.shape[-1], n, cost.full_bytes,
                                     cost.prefill_s, {cell.score_key: cost.scoring_s}, decode_s, 1, peak,
                                     generation_stats(timing, 0)))
                self._report(1, f"decoded {len(rows)} rows")
            del ctx
        return rows

    def _run_multi_query_aware(self, group: list[Record], cells: list[Cell], done) -> list[dict]:
        """Query-aware on a multi-query context (records with ``query_index``, docs/tasks/squad_mq.md): the
        context is prefilled with the first question after it, so every method scores with that question in
        view; the kept positions are chosen among the context's positions only, and every question, the first
        included, is answered from that one compressed context."""
        questions, enc = self._encode_group(group)
        first = min(group, key=lambda r: int(r.extra["query_index"]))
        n = enc.context_ids.shape[-1]
        ids = torch.cat([enc.context_ids, questions[first.sample_id]], dim=-1)
        self._report(0, f"prefill {ids.shape[-1]} tokens (query-aware, first question in view)")
        pre, prefill_peak = self._prefill(ids, cells)
        pre = self.step.restrict(pre, ids, n)
        return self._answer_all(group, cells, done, pre, enc, questions, prefill_peak)

    def _run_query_aware(self, rec: Record, cells: list[Cell]) -> list[dict]:
        q = encode_question(self.tokenizer, rec)
        enc = encode_context(self.tokenizer, rec, self.context_budget(q.shape[-1], rec))
        ids = torch.cat([enc.context_ids, q[:, :-1]], dim=-1)  # the question is prefilled and compressed too
        self._report(0, f"prefill {ids.shape[-1]} tokens (query-aware)")
        pre, prefill_peak = self._prefill(ids, cells)
        kept = {c.run_id: self.step.select(c, pre) for c in cells}
        return self._decode_cells(rec, cells, pre, kept, enc, q[:, -1:], prefill_peak, n_question=q.shape[-1])

    def _batches(self, cells: list[Cell], n: int) -> list[list[Cell]]:
        """Decode batches; configurations with a decode rule batch only among themselves.
        Largest budgets first, so that a batch's rows have similar cache lengths (every row attends over the
        batch's longest cache, padding masked): r = 0.9 rows do not pay for a full cache's length."""
        out = []
        ruled = [has_decode_rule(c.method, n) for c in cells]
        for part in ([c for c, x in zip(cells, ruled) if not x], [c for c, x in zip(cells, ruled) if x]):
            # stable: ties keep the configured order
            part = sorted(part, key=lambda c: -kept_budget(c.method, n, c.r, c.budget_tokens))
            out += [part[i : i + self.decode_batch_size] for i in range(0, len(part), self.decode_batch_size)]
        return out

    def _decode_cells(self, rec, cells, pre: Prefilled, kept, enc, q_ids, prefill_peak, n_question=None):
        rows = []
        for batch in self._batches(cells, pre.n):
            ctxs = [self.step.compress(c, pre, kept[c.run_id]) for c in batch]
            reset_peak(self.devices)
            timing: dict = {}
            preds, n_gen, decode_s = self.step.decode(batch, ctxs, q_ids, rec.max_new_tokens, rec.stop_strings,
                                                      timing=timing)
            batch_peak = peak_bytes(self.devices)
            costs = {"decode_batch_s": float(decode_s), "peak_mem_prefill_bytes": int(prefill_peak),
                     "peak_mem_decode_batch_bytes": int(batch_peak)}
            for b, (cell, ctx, pred, ng) in enumerate(zip(batch, ctxs, preds, n_gen)):
                rows.append(
                    self.row(rec, cell, ctx, pred, ng, enc, n_question or q_ids.shape[-1], pre.n, pre.full_bytes,
                             pre.prefill_s, pre.seconds, decode_s / len(batch), len(batch),
                             max(batch_peak, prefill_peak), generation_stats(timing, b), costs)
                )
            del ctxs
            self._report(len(batch), f"decoded {len(rows)}/{len(cells)} configurations")
        return rows

    def row(self, rec, cell, ctx, pred, n_gen, enc, n_question, n, full_bytes, prefill_s, seconds, decode_s, batch, peak,
            gen: dict | None = None, costs: dict | None = None) -> dict:
        """One result row (docs/protocol.md, "Result rows"). ``decode_s`` is this row's share of its decode batch
        and ``peak`` the larger of the prefill's and the batch's peaks; ``costs`` holds the batch's own figures
        (``decode_batch_s``, ``peak_mem_prefill_bytes``, ``peak_mem_decode_batch_bytes``; by default the batch
        time is ``decode_s x batch`` and both peaks ``peak``)."""
        costs = {"decode_batch_s": float(decode_s) * int(batch), "peak_mem_prefill_bytes": int(peak),
                 "peak_mem_decode_batch_bytes": int(peak), **(costs or {})}
        scored = strip_thinking(pred)  # <think>...</think> never reaches the metric; the raw prediction is kept
        score = float(self.score(rec, scored)) if self.score else float("nan")
        row = {
            **self.static,
            "run_id": cell.run_id,
            "config_json": cell.config_json,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": cell.label,
            "method_params": json.dumps({"class": cell.method.name, **cell.method.params()}, sort_keys=True, default=str),
            "r": float(cell.r) if cell.r is not None else float("nan"),
            "budget_tokens": cell.budget_tokens,
            "budget_policy": cell.policy,
            "query_aware": bool(cell.query_aware),
            "rerotate": bool(getattr(cell.method, "rerotate", False)),
            "suite": rec.suite,
            "task": rec.task,
            "length_bucket": rec.length_bucket,
            "sample_id": rec.sample_id,
            "context_id": rec.context_id,
            "n_context_tokens_original": enc.n_context_original,
            "n_context_tokens": n,
            "truncated": bool(enc.truncated),
            "n_question_tokens": int(n_question),  # query-aware: the question tokens, though all but one were prefilled
            "n_kept_mean": float(ctx.n_kept_mean),
            "kept_fraction": float(ctx.kept_fraction),
            "compressed_layers": json.dumps(sorted(self.layers)),
            "kv_bytes_full": int(full_bytes),
            "kv_bytes_kept": int(ctx.kv_bytes),
            "n_generated_tokens": int(n_gen),
            # generation: ttft_s (question part + first token over the compressed cache), decode_tokens_per_s,
            # hit_limit (ran to max_new_tokens), from decode's timing (protocol.generation_stats)
            "ttft_s": float((gen or {}).get("ttft_s", float("nan"))),
            "decode_tokens_per_s": float((gen or {}).get("decode_tokens_per_s", float("nan"))),
            "hit_limit": bool((gen or {}).get("hit_limit", int(n_gen) >= rec.max_new_tokens)),
            "prediction": pred,
            "prediction_scored": scored,  # what the metric saw: the prediction without thinking text
            "chat_template_kwargs": kwargs_json(chat_kwargs(self.tokenizer)),  # e.g. {"enable_thinking": false}
            "answers": list(rec.answers),
            "metric": rec.metric,
            "score": score,
            "score_weight": float(rec.score_weight),
            "prefill_s": float(prefill_s),
            "scoring_s": float(seconds.get(cell.score_key, 0.0)),
            "decode_s": float(decode_s),  # this row's share of its decode batch: decode_batch_s / decode_batch_size
            "decode_batch_s": float(costs["decode_batch_s"]),  # the whole batch's decode seconds
            "decode_batch_size": int(batch),
            "peak_mem_bytes": int(peak),  # max(peak_mem_prefill_bytes, peak_mem_decode_batch_bytes)
            "peak_mem_prefill_bytes": int(costs["peak_mem_prefill_bytes"]),  # the shared prefill of the context
            "peak_mem_decode_batch_bytes": int(costs["peak_mem_decode_batch_bytes"]),  # the decode batch's peak
            # default | layerwise; tokens per prefill chunk or None (docs/protocol.md, "Layer-wise and chunked prefill")
            "prefill": self.prefill,
            "prefill_chunk": self.prefill_chunk,
            "data_source": str(rec.extra.get("data_source", "")),  # the file or hub set the record came from
        }
        budget = cell.decode_budget
        if budget != "fixed":  # recorded only when not the default (as in run_id)
            row["decode_budget"] = budget
        if self.extra_scores:
            row.update({f"score_{k}": float(v) for k, v in self.extra_scores(rec, scored).items()})
        for key in ("depth", "needle_start", "needle_end", "query_index"):
            if key in rec.extra:
                row[key] = rec.extra[key]
        return row
