"""Compressed caches: gather the kept context entries of every layer and KV head, account their bytes.

A ``CompressedContext`` is one configuration's cache of one context: per layer, keys/values of shape
(1, H_kv, L, d) where L is the longest head's kept length, a validity mask when heads differ (adaptive
budgets: padded to the longest head, never a full-size masked cache), and the RoPE position of each entry.
Uniform budgets shrink the cache physically to ``n_kept`` entries per head.

``batch_cache`` stacks several configurations into one batch (padded with masks) so their question decodes
run together; ``fresh_cache`` builds the transformers ``DynamicCache`` a decode appends to, so the
compressed context itself is never modified (restored for free between questions of one context).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from harness.attention import LayerMask, Masking


@dataclass
class LayerEntries:
    keys: torch.Tensor  # (1, H_kv, L, d)
    values: torch.Tensor  # (1, H_kv, L, d)
    positions: torch.Tensor  # (1, H_kv, L) int64
    valid: torch.Tensor | None  # (1, H_kv, L) bool or None
    sliding_window: int | None = None
    compressed: bool = True
    scores: torch.Tensor | None = None  # (1, H_kv, L) the method's prefill scores of the kept entries (decode rules)

    @property
    def length(self) -> int:
        return self.keys.shape[-2]

    def nbytes(self) -> int:
        n = self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()
        if self.valid is not None:
            n += self.valid.numel() * self.valid.element_size()
        return n


@dataclass
class CompressedContext:
    layers: list[LayerEntries]
    n_context: int  # context tokens prefilled (before compression)
    next_position: int  # where the question starts (n, or n_kept when the method declares rerotate)
    n_kept_per_head: list[list[int]]  # per compressed layer, per head (for kept_fraction / n_kept_mean)

    @property
    def kv_bytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    @property
    def n_kept_mean(self) -> float:
        counts = [c for layer in self.n_kept_per_head for c in layer]
        return sum(counts) / max(1, len(counts))

    @property
    def kept_fraction(self) -> float:
        return self.n_kept_mean / max(1, self.n_context)


def layer_kv(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys, values)`` of a filled attention layer of a transformers cache. transformers types them
    ``Tensor | None`` and ``Cache.layers`` as a union with linear-attention layers (no keys); the engine reads
    attention layers after the prefill filled them."""
    return layer.keys, layer.values


def full_cache_bytes(cache: DynamicCache, sliding: dict[int, int | None]) -> int:
    """Bytes of the uncompressed context cache (sliding layers hold at most their window)."""
    total = 0
    for idx, layer in enumerate(cache.layers):
        k, v = layer_kv(layer)
        n = k.shape[-2]
        keep = min(n, window) if (window := sliding.get(idx)) else n
        total += (k.numel() * k.element_size() + v.numel() * v.element_size()) * keep // max(1, n)
    return total


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rerotate(keys: torch.Tensor, old: torch.Tensor, new: torch.Tensor, rotary_emb) -> torch.Tensor:
    """Move post-RoPE keys from positions ``old`` to ``new``: rotate by ``new - old`` (RoPE composes)."""
    h, L = old.shape[-2], old.shape[-1]
    delta = (new - old).reshape(1, h * L)
    try:
        cos, sin = rotary_emb(keys, position_ids=delta)  # (1, h*L, d)
    except TypeError:  # hybrid models (Gemma 3) keep one RoPE per layer type; compressed layers are global
        cos, sin = rotary_emb(keys, position_ids=delta, layer_type="full_attention")
    scale = getattr(rotary_emb, "attention_scaling", 1.0) or 1.0
    # the rotary module may sit on another device than this layer (a model spread over GPUs)
    cos = (cos / scale).reshape(1, h, L, -1).to(device=keys.device, dtype=keys.dtype)
    sin = (sin / scale).reshape(1, h, L, -1).to(device=keys.device, dtype=keys.dtype)
    return keys * cos + rotate_half(keys) * sin


def compress(
    cache: DynamicCache,
    kept: dict[int, list[torch.Tensor]],
    n_context: int,
    sliding: dict[int, int | None],
    rerotate_to_cache: bool = False,
    rotary_emb=None,
    scores: dict[int, torch.Tensor] | None = None,
) -> CompressedContext:
    """Gather the kept positions. ``kept[layer]`` = sorted indices per KV head; layers absent are left whole
    (sliding layers: their last ``window`` positions)."""
    layers: list[LayerEntries] = []
    counts: list[list[int]] = []
    next_position = n_context
    for idx, layer in enumerate(cache.layers):
        keys, values = layer_kv(layer)
        keys, values = keys[..., :n_context, :], values[..., :n_context, :]
        h_kv = keys.shape[1]
        device = keys.device
        if idx not in kept:
            start = max(0, n_context - window) if (window := sliding.get(idx)) else 0
            pos = torch.arange(start, n_context, device=device).expand(1, h_kv, -1)
            layers.append(LayerEntries(keys[..., start:, :], values[..., start:, :], pos, None, sliding.get(idx), False))
            continue
        heads = kept[idx]
        lengths = [len(h) for h in heads]
        counts.append(lengths)
        L = max(lengths)
        index = torch.zeros(h_kv, L, dtype=torch.long, device=device)
        valid = torch.zeros(h_kv, L, dtype=torch.bool, device=device)
        for h, ix in enumerate(heads):
            index[h, : len(ix)] = ix.to(device)
            valid[h, : len(ix)] = True
        gather = index[None, :, :, None].expand(1, h_kv, L, keys.shape[-1])
        k = torch.gather(keys, 2, gather)
        v = torch.gather(values, 2, gather)
        pos = index[None]
        if rerotate_to_cache:
            new = torch.arange(L, device=device).expand(1, h_kv, L)
            k = rerotate(k, pos, new, rotary_emb)
            pos = new.clone()
            next_position = L
        uniform = all(n == L for n in lengths)
        kept_scores = torch.gather(scores[idx].to(device), 1, index)[None] if scores is not None else None
        layers.append(LayerEntries(k, v, pos, None if uniform else valid[None], sliding.get(idx), True, kept_scores))
    return CompressedContext(layers, n_context, next_position, counts)


def batch_cache(
    contexts: list[CompressedContext], rules=None, device: torch.device | str | None = None
) -> tuple[DynamicCache, Masking, torch.Tensor]:
    """One DynamicCache holding several configurations' contexts as batch rows (padded with masks).

    Returns the cache, the masking state for ``harness.attention`` and the first question position per row.
    Each layer's entries stay on that layer's device; the question positions (``starts``, the appended
    positions) live on ``device``, where the decode's input ids are (default: layer 0's device).
    """
    cache = DynamicCache()
    cache.layers = []
    masks: dict[int, LayerMask] = {}
    for idx in range(len(contexts[0].layers)):
        entries = [c.layers[idx] for c in contexts]
        L = max(e.length for e in entries)
        ks, vs, ps, valids = [], [], [], []
        need_mask = any(e.valid is not None or e.length != L for e in entries)
        for e in entries:
            pad = L - e.length
            ks.append(torch.nn.functional.pad(e.keys, (0, 0, 0, pad)))
            vs.append(torch.nn.functional.pad(e.values, (0, 0, 0, pad)))
            ps.append(torch.nn.functional.pad(e.positions, (0, pad)))
            if need_mask:
                v = e.valid if e.valid is not None else torch.ones_like(e.positions, dtype=torch.bool)
                valids.append(torch.nn.functional.pad(v, (0, pad), value=False))
        layer = DynamicLayer()
        layer.lazy_initialization(ks[0], vs[0])
        layer.keys = torch.cat(ks) if len(ks) > 1 else ks[0]
        layer.values = torch.cat(vs) if len(vs) > 1 else vs[0]
        cache.layers.append(layer)
        scores = None
        if rules is not None and entries[0].compressed:
            scores = torch.cat([
                torch.nn.functional.pad(e.scores if e.scores is not None else torch.zeros_like(e.positions, dtype=torch.float32), (0, L - e.length))
                for e in entries
            ])
        masks[idx] = LayerMask(
            positions=torch.cat(ps) if len(ps) > 1 else ps[0],
            valid=(torch.cat(valids) if len(valids) > 1 else valids[0]) if need_mask else None,
            sliding_window=entries[0].sliding_window,
            scores=scores,
        )
    device = device if device is not None else contexts[0].layers[0].keys.device
    starts = torch.tensor([c.next_position for c in contexts], dtype=torch.long, device=device)
    state = Masking(layers=masks, appended=torch.zeros(len(contexts), 0, dtype=torch.long, device=device), rules=rules)
    return cache, state, starts


def keep_rows(cache: DynamicCache, state: Masking, rows: list[int]) -> None:
    """Drop finished rows from a batched decode, in place: keep batch ``rows`` (in that order) of every layer's
    cached keys and values and of the masking state. Not for batches with decode rules (their state is
    indexed by the original rows)."""
    if state.rules is not None:
        raise ValueError("rows of a batch with decode rules cannot be dropped")
    index: dict[torch.device, torch.Tensor] = {}

    def on(device: torch.device) -> torch.Tensor:
        if device not in index:
            index[device] = torch.tensor(rows, dtype=torch.long, device=device)
        return index[device]

    for layer in cache.layers:  # transformers' layer union (layer_kv): every layer here is an attention layer
        layer.keys = layer.keys.index_select(0, on(layer.keys.device))  # type: ignore[union-attr]
        layer.values = layer.values.index_select(0, on(layer.values.device))  # type: ignore[union-attr]
    for meta in state.layers.values():
        meta.positions = meta.positions.index_select(0, on(meta.positions.device))
        if meta.valid is not None:
            meta.valid = meta.valid.index_select(0, on(meta.valid.device))
        if meta.scores is not None:
            meta.scores = meta.scores.index_select(0, on(meta.scores.device))
    state.appended = state.appended.index_select(0, on(state.appended.device))
