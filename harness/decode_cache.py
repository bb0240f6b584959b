"""The cache a decode appends to: one ``ContextLayer`` per model layer (docs/protocol.md, "What a compressed cache
holds").

A layer holds the batch rows' kept context entries followed by the tokens appended while decoding (question,
answer). Two layouts:

- dense, when every row's entries are plain (uniform budgets, the full cache, uncompressed layers), or when the
  caller asks for it (``pad_heads``: the sweep's batches of several configurations, which pad their rows to
  the longest anyway): one buffer (B, H_kv, L + capacity, d) holding each row's entries in the padded layout
  (shorter rows and heads padded) and room for the appended tokens. A step writes its keys and values in place
  and attention reads a view of the filled part: no copy per step, whatever the cache length.
- ragged, when a row's entries are ragged (an adaptive budget) and ``pad_heads`` is off (a configuration decoded
  alone): every row's entries flattened into one (T, d) tensor (no padding to the longest head) plus a region
  for the appended tokens, and an index (B, H_kv, L + capacity) of the padded layout. A step writes its keys
  and values into the region and gathers the padded layer (B, H_kv, L + m, d) for this layer's attention only;
  it is freed when the layer's attention is done.

``capacity`` is a hint (question length + ``max_new_tokens``); a layer that fills up grows (doubling).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class ContextLayer(DynamicLayer):
    """One layer of a decode batch: the rows' context entries (``harness.cache.LayerEntries``, one per row; not
    imported here, which would be an import cycle), then the appended tokens."""

    def __init__(self, entries: list, capacity: int = 0, pad_heads: bool = False):
        super().__init__()
        first = entries[0]
        self.n_context = max(e.length for e in entries)  # L: the longest head of the longest row
        self.n_appended = 0  # m
        self.capacity = max(1, int(capacity))
        self.n_heads, self.head_dim = first.n_heads, first.keys.shape[-1]
        self.device, self.dtype = first.keys.device, first.keys.dtype
        self.dense = pad_heads or not any(e.ragged for e in entries)
        self.is_initialized = True
        if self.dense:
            padded = [e.padded() for e in entries]  # ragged rows (pad_heads): their padded layout, copied in once
            self._k = self._dense([k for k, _ in padded])
            self._v = self._dense([v for _, v in padded])
            del padded
            self._expose()
            return
        # ragged: flattened entries of every row, then (B, H, capacity) appended slots per row and head
        self.rows = torch.arange(len(entries), device=self.device)  # original row of each batch row
        flat_k, flat_v, index, base = [], [], [], 0
        for e in entries:
            if e.ragged:
                fk, fv = e.keys, e.values
                slot, _ = e.slots()
            else:  # a plain row in a ragged batch: head h's entries at rows h * L_e ...
                fk, fv = e.keys[0].reshape(-1, self.head_dim), e.values[0].reshape(-1, self.head_dim)
                slot = torch.arange(fk.shape[0], device=self.device).reshape(self.n_heads, e.length)
            pad = self.n_context - slot.shape[-1]  # shorter rows repeat their last slot (masked invalid)
            index.append(torch.cat([slot, slot[:, -1:].expand(-1, pad)], -1) + base if pad else slot + base)
            flat_k.append(fk)
            flat_v.append(fv)
            base += fk.shape[0]
        self.n_flat = base  # T
        self._ctx_index = torch.stack(index)  # (B, H, L)
        self._fk = torch.cat(flat_k + [flat_k[0].new_empty(len(entries) * self.n_heads * self.capacity, self.head_dim)])
        self._fv = torch.cat(flat_v + [flat_v[0].new_empty(len(entries) * self.n_heads * self.capacity, self.head_dim)])
        self._build_index()
        self.keys, self.values = self._fk, self._fv  # what is held (attention gets the gathered layer)

    # --------------------------------------------------------------------------------------------- layout
    def _dense(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """(B, H, L + capacity, d): the rows' plain entries, zero padding up to L, room for the appended."""
        out = parts[0].new_empty(len(parts), self.n_heads, self.n_context + self.capacity, self.head_dim)
        for b, p in enumerate(parts):
            out[b : b + 1, :, : p.shape[-2]] = p
            out[b, :, p.shape[-2] : self.n_context] = 0
        return out

    def _expose(self) -> None:
        end = self.n_context + self.n_appended
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]

    def _build_index(self) -> None:
        """(B, H, L + capacity): the flattened row of each slot of the padded layout (appended slot j of original
        row b, head h: T + (b * H + h) * capacity + j)."""
        h, cap = self.n_heads, self.capacity
        app = self.n_flat + ((self.rows[:, None, None] * h + torch.arange(h, device=self.device)[None, :, None]) * cap
                             + torch.arange(cap, device=self.device)[None, None, :])
        self._index = torch.cat([self._ctx_index, app], -1)

    def _appended(self, flat: torch.Tensor) -> torch.Tensor:
        """The appended region of a flattened tensor as (B_original, H, capacity, d)."""
        return flat[self.n_flat :].view(-1, self.n_heads, self.capacity, self.head_dim)

    def _reserve(self, n: int) -> None:
        """Room for ``n`` appended tokens per row (grows by doubling; entries already there are kept)."""
        if n <= self.capacity:
            return
        cap = max(n, 2 * self.capacity)
        m = self.n_appended
        if self.dense:
            for name in ("_k", "_v"):
                old = getattr(self, name)
                new = old.new_empty(old.shape[0], self.n_heads, self.n_context + cap, self.head_dim)
                new[:, :, : self.n_context + m] = old[:, :, : self.n_context + m]
                setattr(self, name, new)
            self.capacity = cap
            self._expose()
            return
        for name in ("_fk", "_fv"):
            old = getattr(self, name)
            b0 = (old.shape[0] - self.n_flat) // (self.n_heads * self.capacity)
            new = torch.cat([old[: self.n_flat], old.new_empty(b0 * self.n_heads * cap, self.head_dim)])
            new[self.n_flat :].view(b0, self.n_heads, cap, self.head_dim)[:, :, :m] = self._appended(old)[:, :, :m]
            setattr(self, name, new)
        self.capacity = cap
        self._build_index()
        self.keys, self.values = self._fk, self._fv

    # ----------------------------------------------------------------------------------------- cache API
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the step's (B, H, q, d) keys and values; return the layer's keys and values (B, H, L + m, d)
        for attention: a view of the dense buffer, or the padded layer gathered from the ragged storage."""
        q = key_states.shape[-2]
        self._reserve(self.n_appended + q)
        m = self.n_appended
        self.n_appended += q
        if self.dense:
            start = self.n_context + m
            self._k[:, :, start : start + q] = key_states
            self._v[:, :, start : start + q] = value_states
            self._expose()
            assert self.keys is not None and self.values is not None
            return self.keys, self.values
        self._appended(self._fk)[self.rows, :, m : m + q] = key_states
        self._appended(self._fv)[self.rows, :, m : m + q] = value_states
        index = self._index[:, :, : self.n_context + self.n_appended]
        return self._fk[index], self._fv[index]  # transient: this layer's padded keys and values

    def get_seq_length(self) -> int:
        return self.n_context + self.n_appended

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep batch ``rows`` (a long tensor on this layer's device), in that order."""
        if self.dense:
            self._k, self._v = self._k.index_select(0, rows), self._v.index_select(0, rows)
            self._expose()
            return
        # the flattened storage stays; the finished rows are no longer gathered
        self.rows = self.rows.index_select(0, rows)
        self._ctx_index = self._ctx_index.index_select(0, rows)
        self._index = self._index.index_select(0, rows)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, H, L + m, d) attention sees now (for tests and inspection)."""
        if self.dense:
            assert self.keys is not None and self.values is not None
            return self.keys, self.values
        index = self._index[:, :, : self.n_context + self.n_appended]
        return self._fk[index], self._fv[index]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a decode cache (harness.decode_cache.ContextLayer) cannot be cropped")
