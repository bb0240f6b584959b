"""One configuration on its own prefill: layer-wise compression and chunked prefill (docs/protocol.md,
"Layer-wise and chunked prefill").

The shared sweep prefills the whole context with full attention, holds the full cache of every layer, and only
then compresses (one prefill serves every configuration). A serving system does not need to:

- ``prefill=layerwise``: each compressed layer is compressed right after its attention (``Scoring.after``), so
  the full cache of all layers never exists; at most one layer's full keys and values do. The scores, the kept
  positions and the predictions are the default's: a layer's compression cannot change the layers after it.
- ``prefill_chunk=N``: the context enters in chunks of N tokens; each chunk attends over the kept cache plus
  itself (``harness.attention.masked_attention``, by position), the method scores that cache, and every layer is
  evicted down to its budget (the budget of the whole context) before the next chunk: KeyDiff's block-wise
  protocol. Later chunks see only the kept cache. Combined with ``layerwise`` the eviction happens right after
  each layer's attention (the same entries, less memory).

Which methods can run chunked is read from their declarations (``Method.prefill_query_rows``,
``needs_rotary``); ``prefill_error`` says why one cannot.
"""

from __future__ import annotations

from typing import Any

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from harness import attention
from harness.cache import CompressedContext, LayerEntries, compress, rerotate
from harness.cell import Cell
from harness.protocol import _sync_all, base_model, layer_kept, with_cache
from methods.base import Method
from methods.budget import select

PREFILL_MODES = ("default", "layerwise")
_HUGE = 1 << 40  # "any context length" for a method's declared query rows


def prefill_error(method: Method, policy: str, query_aware: bool, mode: str, chunk: int | None) -> str | None:
    """Why ``method`` (under ``policy``) cannot run with this prefill mode and chunk size, or None."""
    if mode not in PREFILL_MODES:
        return f"prefill={mode!r} is unknown; choose one of {', '.join(PREFILL_MODES)}"
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        return f"prefill_chunk must be an integer >= 1 (tokens per chunk) or null, got {chunk!r}"
    if mode == "default" and chunk is None:
        return None
    if query_aware:
        return ("query_aware=true runs on the shared prefill only (the question is prefilled after the context); "
                "use query_aware=false with prefill=layerwise or prefill_chunk")
    if chunk is None or not method.compresses:
        return None
    rows = method.prefill_query_rows(_HUGE)
    if rows is None:
        return (f"method {method.name!r} scores with every query of the prefill (their attention or statistics), "
                f"which a chunked prefill no longer has (earlier chunks' queries are gone); run it without prefill_chunk")
    if method.needs_rotary:
        return (f"method {method.name!r} needs the prefill's positions 0..n-1 (needs_rotary), which a chunked "
                f"cache no longer holds; run it without prefill_chunk")
    if rows > chunk:
        return (f"method {method.name!r} reads the last {rows} query rows of the prefill; prefill_chunk={chunk} is "
                f"shorter: give prefill_chunk >= {rows}")
    if policy != "uniform":
        return (f"prefill_chunk needs budget_policy=uniform ({method.name} runs {policy}): after an adaptive eviction "
                f"the heads of a layer hold different numbers of entries, which the next chunk cannot be scored over "
                f"as one (H_kv, L) tensor")
    return None


def chunk_bounds(n: int, chunk: int | None, rows: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each chunk: ``[0, N), [N, 2N), ...``; a last chunk shorter than ``rows`` (the query rows the
    method reads) joins the one before it, so every chunk holds the rows its scores read."""
    if chunk is None or chunk >= n:
        return [(0, n)]
    bounds = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < rows:
        bounds = bounds[:-2] + [(bounds[-2][0], n)]
    return bounds


@dataclass
class OwnPrefill:
    """What ``prefill_compress`` measured: seconds without scoring and eviction, scoring seconds, eviction
    (selection + gather) seconds, bytes the full cache would hold, chunks."""

    prefill_s: float
    scoring_s: float
    evict_s: float
    full_bytes: int
    n_chunks: int


@dataclass
class _Evicting(attention.Scoring):
    """Scoring that also evicts: ``finish(idx)`` keeps the layer's budget of its current cache (the kept entries
    of earlier chunks plus this chunk) and frees the rest. ``layerwise``: right after the layer's attention."""

    cell: Cell | None = None
    n: int = 0  # tokens of the whole context (budgets are the whole context's)
    n_layers: int = 0
    sliding: dict = field(default_factory=dict)
    layerwise: bool = False
    final: bool = False  # the last chunk: what is kept now is the configuration's compressed cache
    cache: Any = None  # the chunk's DynamicCache
    mask: attention.Masking | None = None  # the chunk's masking state (None for the first chunk)
    kept: dict = field(default_factory=dict)  # layer -> LayerEntries after this chunk
    counts: dict = field(default_factory=dict)  # compressed layer -> kept entries per head
    token_bytes: dict = field(default_factory=dict)  # layer -> bytes of one token's keys and values
    keep_scores: bool = False  # the method runs a decode rule: keep the scores of the kept entries
    rotary: object = None  # the model's rotary module (re-rotation of kept keys, ``Method.rerotate``)
    next_position: int = 0  # where the question starts (n; the kept length when the method re-rotates)
    evict_s: float = 0.0

    def observe(self, module, query, key, value, scaling) -> None:
        if self.needs_queries and query.shape[-2] < key.shape[-2]:
            # queries of earlier chunks are gone: zero rows, never read (prefill_error checks prefill_query_rows)
            query = F.pad(query, (0, 0, key.shape[-2] - query.shape[-2], 0))
        super().observe(module, query, key, value, scaling)

    def after(self, module) -> None:
        if self.layerwise:
            self.finish(module.layer_idx)

    def positions(self, idx: int, h_kv: int, length: int, device) -> torch.Tensor:
        """(1, H_kv, L) position of every entry of layer ``idx``'s cache (its kept entries, then this chunk)."""
        if self.mask is None:  # the first chunk: the cache holds positions 0..L-1
            return torch.arange(length, device=device).expand(1, h_kv, length)
        meta = self.mask.layers[idx]
        app = self.mask.appended.to(device)
        return torch.cat([meta.positions, app[:, None, :].expand(1, h_kv, app.shape[-1])], dim=-1)

    def finish(self, idx: int) -> None:
        if idx in self.kept:
            return
        assert self.cell is not None and self.layers is not None, "set by prefill_compress before the forward"
        layer = self.cache.layers[idx]
        keys, values = layer.keys, layer.values
        _, h_kv, length, d = keys.shape
        self.token_bytes.setdefault(idx, (keys.element_size() + values.element_size()) * h_kv * d)
        attention.sync(keys.device)
        t0 = time.perf_counter()
        pos = self.positions(idx, h_kv, length, keys.device)
        window = self.sliding.get(idx)
        if idx not in self.layers:  # not compressed (a sliding layer): its last window entries
            start = max(0, length - window) if window else 0
            self.kept[idx] = LayerEntries(keys[..., start:, :].clone(), values[..., start:, :].clone(),
                                          pos[..., start:].clone(), None, window, False)
        else:
            method = self.cell.method
            scores = self.scores[self.cell.score_key].pop(idx)  # (H_kv, L)
            budget = layer_kept(method, self.n, self.cell.r, self.cell.budget_tokens, idx, self.n_layers)
            heads = select(scores, budget, self.cell.policy, self.cell.safeguard, method.protected(length, budget))
            self.counts[idx] = [len(h) for h in heads]
            sc = scores if self.keep_scores else None
            if self.mask is None and self.final:  # one chunk: positions are cache indices, the default's gather
                shim = SimpleNamespace(layers=[SimpleNamespace(keys=keys, values=values)])
                one = compress(shim, {0: heads}, length, {0: None}, method.rerotate,  # type: ignore[arg-type]
                               self.rotary, {0: sc} if sc is not None else None)  # (a one-layer stand-in)
                entries = one.layers[0]
                entries.sliding_window = window
                self.next_position = one.next_position
            else:
                entries = self._gather(keys, values, pos, heads, sc, window)
            self.kept[idx] = entries
        layer.keys = keys.new_empty((1, h_kv, 0, d))  # the layer's full cache goes now (freed once attention returns)
        layer.values = values.new_empty((1, h_kv, 0, d))
        attention.sync(keys.device)
        self.evict_s += time.perf_counter() - t0

    def _gather(self, keys, values, pos, heads, scores, window) -> LayerEntries:
        """The kept entries of a chunked cache (uniform: every head keeps as many)."""
        if len({len(h) for h in heads}) != 1:
            raise ValueError("prefill_chunk: the heads of a layer kept different numbers of entries (adaptive "
                             "budget); use budget_policy=uniform")
        index = torch.stack([h.to(keys.device) for h in heads])  # (H_kv, k)
        h_kv, k = index.shape
        g = index[None, :, :, None].expand(1, h_kv, k, keys.shape[-1])
        kk, vv, pp = torch.gather(keys, 2, g), torch.gather(values, 2, g), torch.gather(pos, 2, index[None])
        if self.final and self.cell is not None and self.cell.method.rerotate:
            new = torch.arange(k, device=keys.device).expand(1, h_kv, k)
            kk, pp = rerotate(kk, pp, new, self.rotary), new.clone()
            self.next_position = k
        kept_scores = torch.gather(scores.to(keys.device), 1, index)[None] if scores is not None else None
        return LayerEntries(kk, vv, pp, None, window, True, kept_scores)


def _chunk_cache(kept: dict[int, LayerEntries], n_layers_cached: int):
    """The DynamicCache and masking state a chunk runs over: every layer's kept entries (taken over by the
    cache, so the next chunk's concatenation replaces them)."""
    cache = DynamicCache()
    cache.layers = []
    masks = {}
    for idx in range(n_layers_cached):
        e = kept.pop(idx)
        layer = DynamicLayer()
        layer.lazy_initialization(e.keys, e.values)
        layer.keys, layer.values = e.keys, e.values
        cache.layers.append(layer)
        masks[idx] = attention.LayerMask(positions=e.positions, valid=None, sliding_window=e.sliding_window)
    device = cache.layers[0].keys.device  # type: ignore[union-attr]  # every layer here is a DynamicLayer
    return cache, attention.Masking(layers=masks, appended=torch.zeros(1, 0, dtype=torch.long, device=device))


@torch.no_grad()
def prefill_compress(step, ids: torch.Tensor, cell: Cell, layerwise: bool = False, chunk: int | None = None
                     ) -> tuple[CompressedContext, OwnPrefill]:
    """``cell``'s compressed cache of ``ids`` (1, n) from a prefill of its own (``step``: a ``ConfigStep``),
    layer-wise and/or in chunks of ``chunk`` tokens. Raises ValueError where the method cannot (``prefill_error``)."""
    err = prefill_error(cell.method, cell.policy, cell.query_aware, "layerwise" if layerwise else "default", chunk)
    if err:
        raise ValueError(err)
    model = step.model
    n = int(ids.shape[-1])
    device = next(model.parameters()).device
    ids = ids.to(device)
    rows = cell.method.prefill_query_rows(n) if chunk is not None and cell.method.compresses else 0
    bounds = chunk_bounds(n, chunk, rows or 0)
    base = base_model(model)
    kept: dict[int, LayerEntries] = {}
    scoring_s = evict_s = 0.0
    state = None
    _sync_all(model)
    t0 = time.perf_counter()
    for i, (s, e) in enumerate(bounds):
        final = i == len(bounds) - 1
        if i == 0:
            cache, mask = DynamicCache(), None
        else:
            cache, mask = _chunk_cache(kept, len(kept))
        positions = torch.arange(s, e, device=device)[None]
        state = _Evicting({cell.score_key: cell.method}, step.layers, step.rotary if cell.method.needs_rotary else None,
                          cell=cell, n=n, n_layers=step.n_layers, sliding=step.sliding, layerwise=layerwise,
                          final=final, cache=cache, mask=mask, keep_scores=step.rule(cell, n) is not None,
                          rotary=step.rotary, next_position=n)
        with attention.scoring_with(state):
            if mask is None:
                base(input_ids=ids[:, s:e], position_ids=positions, use_cache=True, **with_cache(base, cache))
            else:
                mask.extend(positions)
                with attention.masking(mask):
                    base(input_ids=ids[:, s:e], position_ids=positions, use_cache=True, **with_cache(base, cache))
        for idx in range(len(cache.layers)):  # default: every layer now (layerwise: already done)
            state.finish(idx)
        kept = state.kept
        scoring_s += sum(state.seconds.values())
        evict_s += state.evict_s
        del cache, mask
    _sync_all(model)
    total = time.perf_counter() - t0
    assert state is not None  # at least one chunk ran
    layers = [kept[i] for i in range(len(kept))]
    counts = [state.counts[i] for i in sorted(state.counts)]
    full = sum(b * (min(n, step.sliding[i]) if step.sliding.get(i) else n) for i, b in state.token_bytes.items())
    ctx = CompressedContext(layers, n, state.next_position, counts)
    return ctx, OwnPrefill(total - scoring_s - evict_s, scoring_s, evict_s, int(full), len(bounds))
