"""Compressed caches: gather the kept context entries of every layer and KV head, account their bytes.

A ``CompressedContext`` is one configuration's cache of one context (docs/protocol.md, "What a compressed cache
holds"): per layer, the kept entries and the RoPE position of each. Uniform budgets hold a plain (1, H_kv,
n_kept, d) cache; adaptive budgets whose heads keep different counts hold the kept entries ragged, one (T, d)
tensor per layer with T the layer's kept total (Ada-KV's flattened layout), never padded to the longest head.

``batch_cache`` builds the decode cache (``harness.decode_cache``) of one or several configurations (batch rows,
padded with masks where lengths differ), which the decode appends to, so the compressed context itself is
never modified (restored for free between questions of one context).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from harness.attention import LayerMask, Masking
from harness.decode_cache import ContextLayer


@dataclass
class LayerEntries:
    """One layer's kept context entries of one configuration (docs/protocol.md, "What a compressed cache holds").

    Plain (``lengths`` is None): every KV head holds ``L`` entries; keys/values (1, H_kv, L, d), positions and
    scores (1, H_kv, L). Ragged (``lengths`` given: an adaptive budget whose heads keep different counts): the
    heads' entries one after another, head 0 first (Ada-KV's flattened layout), no padding; keys/values (T, d)
    with T = sum(lengths), positions and scores (T,), ``lengths[h]`` the entries of head h."""

    keys: torch.Tensor  # (1, H_kv, L, d) plain; (T, d) ragged
    values: torch.Tensor  # as keys
    positions: torch.Tensor  # (1, H_kv, L) plain; (T,) ragged: int64 RoPE position of each entry
    lengths: tuple[int, ...] | None = None  # ragged only: entries per KV head
    sliding_window: int | None = None
    compressed: bool = True
    scores: torch.Tensor | None = None  # as positions: the method's prefill scores of the entries (decode rules)

    @property
    def ragged(self) -> bool:
        return self.lengths is not None

    @property
    def n_heads(self) -> int:
        return len(self.lengths) if self.lengths is not None else self.keys.shape[1]

    @property
    def length(self) -> int:
        """Entries of the longest head (L)."""
        return max(self.lengths) if self.lengths is not None else self.keys.shape[-2]

    def nbytes(self) -> int:
        """Bytes held: keys and values, plus for ragged storage one int64 offset per head."""
        n = self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()
        return n + (8 * len(self.lengths) if self.lengths is not None else 0)

    def slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The padded layout of ragged entries: (index, valid), each (H_kv, L). ``index[h, j]``: the row of the
        flattened entries at slot j of head h (past a head's entries: its last entry, a finite value that the
        validity masks out); ``valid[h, j]``: j < lengths[h]."""
        assert self.lengths is not None
        device = self.keys.device
        lengths = torch.tensor(self.lengths, dtype=torch.long, device=device)
        offsets = torch.cumsum(lengths, 0) - lengths
        slot = torch.arange(self.length, device=device)
        valid = slot[None, :] < lengths[:, None]
        index = offsets[:, None] + torch.minimum(slot[None, :], (lengths - 1).clamp(min=0)[:, None])
        return index, valid

    def layout(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Positions (1, H_kv, L), validity (1, H_kv, L) or None (plain), scores (1, H_kv, L) or None of the
        padded layout the decode's attention sees; padding slots have position 0 and score 0."""
        if self.lengths is None:
            return self.positions, None, self.scores
        index, valid = self.slots()
        pos = self.positions[index].masked_fill(~valid, 0)[None]
        scores = self.scores[index].masked_fill(~valid, 0.0)[None] if self.scores is not None else None
        return pos, valid[None], scores

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (1, H_kv, L, d) in the padded layout (a copy for ragged entries)."""
        if self.lengths is None:
            return self.keys, self.values
        index = self.slots()[0]
        return self.keys[index][None], self.values[index][None]


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
        if all(n == L for n in lengths):  # uniform: a plain (1, H_kv, L, d) cache
            index = torch.stack([ix.to(device) for ix in heads])  # (H_kv, L)
            gather = index[None, :, :, None].expand(1, h_kv, L, keys.shape[-1])
            k, v, pos = torch.gather(keys, 2, gather), torch.gather(values, 2, gather), index[None]
            kept_scores = torch.gather(scores[idx].to(device), 1, index)[None] if scores is not None else None
            ragged = None
        else:  # ragged: head h's entries at rows offset[h] .. offset[h] + lengths[h] of (T, d)
            head = torch.cat([torch.full((n,), h, dtype=torch.long, device=device) for h, n in enumerate(lengths)])
            index = torch.cat([ix.to(device) for ix in heads])  # (T,)
            k, v, pos = keys[0, head, index], values[0, head, index], index
            kept_scores = scores[idx].to(device)[head, index] if scores is not None else None
            ragged = tuple(lengths)
        if rerotate_to_cache:
            # slot j of each head moves to position j; the question starts after the longest head
            new = torch.arange(L, device=device).expand(1, h_kv, L) if ragged is None else \
                torch.cat([torch.arange(n, device=device) for n in lengths])
            k = rerotate(k, pos, new, rotary_emb) if ragged is None else \
                rerotate(k[None, None], pos[None, None], new[None, None], rotary_emb)[0, 0]
            pos = new.clone()
            next_position = L
        layers.append(LayerEntries(k, v, pos, ragged, sliding.get(idx), True, kept_scores))
    return CompressedContext(layers, n_context, next_position, counts)


def batch_cache(
    contexts: list[CompressedContext], rules=None, device: torch.device | str | None = None, capacity: int = 0
) -> tuple[DynamicCache, Masking, torch.Tensor]:
    """One decode cache holding several configurations' contexts as batch rows (``harness.decode_cache``: one
    dense buffer per layer, or, for one configuration with ragged entries, those entries flattened as they are),
    with room for ``capacity`` appended tokens per row (a hint: a layer that fills up grows).

    Returns the cache, the masking state for ``harness.attention`` (per layer the padded layout's positions and,
    where rows or heads differ in length, validity) and the first question position per row. Each layer's
    entries stay on that layer's device; the question positions (``starts``, the appended positions) live on
    ``device``, where the decode's input ids are (default: layer 0's device).
    """
    cache = DynamicCache()
    cache.layers = []
    masks: dict[int, LayerMask] = {}
    for idx in range(len(contexts[0].layers)):
        entries = [c.layers[idx] for c in contexts]
        L = max(e.length for e in entries)
        need_mask = any(e.ragged or e.length != L for e in entries)
        ps, valids, scores = [], [], []
        for e in entries:
            pos, valid, sc = e.layout()
            pad = L - pos.shape[-1]
            ps.append(torch.nn.functional.pad(pos, (0, pad)))
            if need_mask:
                v = valid if valid is not None else torch.ones_like(pos, dtype=torch.bool)
                valids.append(torch.nn.functional.pad(v, (0, pad), value=False))
            if rules is not None and e.compressed:
                sc = sc if sc is not None else torch.zeros_like(pos, dtype=torch.float32)
                scores.append(torch.nn.functional.pad(sc, (0, pad)))
        # several configurations pad their rows to the longest anyway: their heads too, once, so that no step
        # gathers (docs/protocol.md, "What a compressed cache holds"); one configuration keeps its heads ragged
        cache.layers.append(ContextLayer(entries, capacity, pad_heads=len(contexts) > 1))
        masks[idx] = LayerMask(
            positions=torch.cat(ps) if len(ps) > 1 else ps[0],
            valid=(torch.cat(valids) if len(valids) > 1 else valids[0]) if need_mask else None,
            sliding_window=entries[0].sliding_window,
            scores=torch.cat(scores) if rules is not None and entries[0].compressed else None,
        )
    device = device if device is not None else contexts[0].layers[0].keys.device
    starts = torch.tensor([c.next_position for c in contexts], dtype=torch.long, device=device)
    state = Masking(layers=masks, appended=torch.zeros(len(contexts), 0, dtype=torch.long, device=device), rules=rules)
    return cache, state, starts


def keep_rows(cache: DynamicCache, state: Masking, rows: list[int]) -> None:
    """Drop finished rows from a batched decode, in place: keep batch ``rows`` (in that order) of every layer's
    cache and of the masking state. Not for batches with decode rules (their state is indexed by the original
    rows)."""
    if state.rules is not None:
        raise ValueError("rows of a batch with decode rules cannot be dropped")
    index: dict[torch.device, torch.Tensor] = {}

    def on(device: torch.device) -> torch.Tensor:
        if device not in index:
            index[device] = torch.tensor(rows, dtype=torch.long, device=device)
        return index[device]

    for layer in cache.layers:  # decode caches are built of harness.decode_cache layers, which have keep_rows
        layer.keep_rows(on(layer.device))  # type: ignore[union-attr,arg-type]
    for meta in state.layers.values():
        meta.positions = meta.positions.index_select(0, on(meta.positions.device))
        if meta.valid is not None:
            meta.valid = meta.valid.index_select(0, on(meta.valid.device))
        if meta.scores is not None:
            meta.scores = meta.scores.index_select(0, on(meta.scores.device))
    state.appended = state.appended.index_select(0, on(state.appended.device))
