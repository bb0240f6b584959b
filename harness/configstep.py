"""Prefill, select, compress, decode: one configuration (a ``Cell``) on one model (docs/protocol.md, steps 2-4).

The one path from a context's token ids to a configuration's predictions. The sweep (harness/sweep.py: many
configurations over one prefill, decoded in batches), the lm-eval adapter (harness/lm_eval_adapter.py: one
configuration, one prompt at a time), the cost benchmark (scripts/bench_methods.py: each phase timed) and
``kept_positions`` (harness/inspect.py: the selection alone) all call it, so what a configuration keeps and how
it decodes cannot differ between them::

    step = ConfigStep(model, tokenizer)
    pre = step.prefill(ids, cells)         # one full-attention prefill scoring the methods of every cell
    kept = step.select(cell, pre)          # kept positions per compressed layer and KV head
    ctx = step.compress(cell, pre, kept)   # the cell's compressed cache (kept=None: select first)
    ctx, cost = step.prefill_compress(ids, cell, layerwise=True, chunk=None)  # or: one cell on its own prefill
    preds, n_generated, seconds = step.decode([cell], [ctx], question_ids, max_new_tokens, stop_strings)

Selecting and compressing are separate calls because the sweep selects once per context and compresses once
per decode batch of each question, and the benchmark times the compression alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from harness.cache import CompressedContext, compress, full_cache_bytes
from harness.cell import Cell
from harness.protocol import compressed_layers, decode, decode_rule, num_layers, prefill, rotary_module, select_positions
from methods.base import DecodeRule


@dataclass
class Prefilled:
    """One prefill of a context for a set of configurations."""

    cache: DynamicCache  # the full cache of the n prefilled tokens (never modified by compress or decode)
    scores: dict[str, dict[int, torch.Tensor]]  # per Cell.score_key, per compressed layer: (H_kv, n) scores
    seconds: dict[str, float]  # scoring seconds per Cell.score_key
    prefill_s: float  # prefill seconds without the scoring
    n: int  # tokens prefilled
    full_bytes: int  # bytes of the uncompressed cache (sliding layers: their window)


class ConfigStep:
    """Prefill, select, compress and decode configurations on one model (what the model's layout fixes is
    read once: the compressed layers, sliding windows, rotary module and depth)."""

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer
        self.layers, self.sliding = compressed_layers(model)
        self.rotary = rotary_module(model)
        self.n_layers = num_layers(model)

    def prefill(self, ids: torch.Tensor, cells: list[Cell]) -> Prefilled:
        """Full-attention prefill of ``ids`` (1, n), scoring each distinct method of ``cells`` once (cells whose
        methods are equal share a ``score_key``)."""
        cache, scores, seconds, prefill_s = prefill(self.model, ids, {c.score_key: c.method for c in cells})
        return Prefilled(cache, scores, seconds, prefill_s, int(ids.shape[-1]), full_cache_bytes(cache, self.sliding))

    def prefill_compress(self, ids: torch.Tensor, cell: Cell, layerwise: bool = False, chunk: int | None = None):
        """``cell``'s compressed cache from a prefill of its own (``prefill=layerwise``: each layer compressed right
        after its attention; ``prefill_chunk``: chunks of ``chunk`` tokens, evicted to the budget after each):
        (CompressedContext, prefill_modes.OwnPrefill). docs/protocol.md, "Layer-wise and chunked prefill"."""
        from harness.prefill_modes import prefill_compress

        return prefill_compress(self, ids, cell, layerwise, chunk)

    def restrict(self, pre: Prefilled, ids: torch.Tensor, n: int) -> Prefilled:
        """The prefill of ``ids`` (1, pre.n) as if only its first ``n`` tokens had entered the cache while all of
        them scored the methods: every score cut to the first ``n`` positions, the cache holding the first ``n``
        tokens only. The multi-query protocol's query-aware mode prefills context + first question and keeps
        context entries only (docs/tasks/squad_mq.md). Full-attention caches are cropped in place; a model with
        sliding-window layers (whose windows already dropped context entries for the question's) prefills the
        first ``n`` tokens again for its cache."""
        if n >= pre.n:
            return pre
        if any(w is not None for w in self.sliding.values()):
            cache = prefill(self.model, ids[:, :n], {})[0]
        else:
            cache = pre.cache
            cache.crop(n - pre.n)  # a negative count removes that many trailing entries (transformers >= 5)
        scores = {k: {layer: s[..., :n] for layer, s in per.items()} for k, per in pre.scores.items()}
        return Prefilled(cache, scores, pre.seconds, pre.prefill_s, n, full_cache_bytes(cache, self.sliding))

    def select(self, cell: Cell, pre: Prefilled) -> dict[int, list[torch.Tensor]]:
        """The positions ``cell`` keeps, per compressed layer and KV head (``protocol.select_positions``)."""
        return select_positions(pre.scores[cell.score_key], cell.method, pre.n, cell.r, cell.budget_tokens,
                                cell.policy, cell.safeguard, self.n_layers)

    def rule(self, cell: Cell, n: int) -> DecodeRule | None:
        """A fresh decode rule for ``cell`` over an n-token context (None for prefill-only methods)."""
        return decode_rule(cell.method, n, cell.r, cell.budget_tokens, cell.decode_budget)

    def compress(self, cell: Cell, pre: Prefilled, kept: dict[int, list[torch.Tensor]] | None = None
                 ) -> CompressedContext:
        """``cell``'s compressed cache: the kept entries gathered (re-rotated when the method declares it), with
        the method's scores of the kept entries when it runs a decode rule."""
        kept = self.select(cell, pre) if kept is None else kept
        scores = pre.scores[cell.score_key] if self.rule(cell, pre.n) is not None else None
        return compress(pre.cache, kept, pre.n, self.sliding, cell.method.rerotate, self.rotary, scores)

    def decode(
        self,
        cells: list[Cell],
        contexts: list[CompressedContext],
        question_ids: torch.Tensor,
        max_new_tokens: int,
        stop_strings: list[str] | None = None,
        eos: set[int] | None = None,
        timing: dict | None = None,
        session: dict | None = None,
    ) -> tuple[list[str], list[int], float]:
        """Greedy decode of one question over ``contexts[b]``, the compressed cache of ``cells[b]``, as one batch
        (``protocol.decode``; each row runs its cell's decode rule). Returns (predictions, generated token
        counts, seconds); ``timing`` (optional) is filled as ``protocol.decode`` fills it. ``session`` (one cell):
        a conversation's turns decoded one after the other on one cache (``protocol.decode``, harness/turns.py)."""
        rules = [self.rule(c, ctx.n_context) for c, ctx in zip(cells, contexts)] if not session else None
        return decode(self.model, self.tokenizer, contexts, question_ids, max_new_tokens, stop_strings, rules, eos,
                      timing=timing, session=session)
