"""Shared attention statistics of one layer's prefill, computed from the post-RoPE queries and keys.

Used by H2O (column sums of the causal attention, docs/methods.md) and SnapKV (attention of the observation
window, docs/methods.md). Both are memoised in ``LayerInputs.cache`` so that several methods of one sweep
pay for them once. Softmax is always taken in float32 (logits too), whatever the dtype of the inputs.

GQA: query head ``h`` attends with KV head ``h // G``, ``G = H_q / H_kv``.
"""

from __future__ import annotations

import torch

from methods.base import LayerInputs

COLSUM_KEY = "attention_column_sums"
WINDOW_KEY = "window_attention"
DEFAULT_BLOCK_SIZE = 256


def _queries(layer: LayerInputs) -> torch.Tensor:
    if layer.queries is None:
        raise ValueError("attention statistics need the layer's queries (set needs_queries = True)")
    h_q, h_kv = layer.queries.shape[0], layer.keys.shape[0]
    if h_q % h_kv:
        raise ValueError(f"H_q={h_q} is not a multiple of H_kv={h_kv}")
    return layer.queries


def column_sums(
    queries: torch.Tensor, keys: torch.Tensor, scaling: float, block_size: int = DEFAULT_BLOCK_SIZE
) -> torch.Tensor:
    """``F(j) = sum_{i >= j} A[i, j]`` per query head, (H_q, n) float32, without the n x n matrix.

    Loops over KV heads and blocks of ``block_size`` query rows; a block of rows ``[s, e)`` only needs keys
    ``[0, e)`` (causal), so the live temporary is ``G * block_size * e`` float32 logits (G query heads of one
    KV head). The normalised probabilities are never formed: the column sum of a block is
    ``(1 / Z)^T exp(logits - max)``, one batched mat-vec.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    h_q, n, _ = queries.shape
    h_kv = keys.shape[0]
    g = h_q // h_kv
    out = torch.zeros(h_q, n, dtype=torch.float32, device=keys.device)
    causal = torch.ones(block_size, block_size, dtype=torch.bool, device=keys.device).triu_(1)
    for kv in range(h_kv):
        k = keys[kv].float()  # (n, d)
        q_group = queries[kv * g : (kv + 1) * g]  # (G, n, d)
        for s in range(0, n, block_size):
            e = min(n, s + block_size)
            b = e - s
            q_block = q_group[:, s:e].float() * scaling  # scale the (G, b, d) block, not the logits
            logits = torch.matmul(q_block, k[:e].transpose(0, 1))  # (G, b, e)
            logits[:, :, s:e].masked_fill_(causal[:b, :b], float("-inf"))
            logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
            inv_z = logits.sum(dim=-1, keepdim=True).reciprocal_()  # (G, b, 1)
            out[kv * g : (kv + 1) * g, :e] += torch.bmm(inv_z.transpose(1, 2), logits).squeeze(1)
            del logits, inv_z
    return out


def attention_column_sums(
    layer: LayerInputs, block_size: int = DEFAULT_BLOCK_SIZE, normalize: bool = False
) -> torch.Tensor:
    """(H_q, n) float32 accumulated attention each context position receives in the causal prefill (H2O).

    ``normalize=True`` divides ``F(j)`` by ``n - j``, the number of query rows that see ``j`` (kvpress's
    ObservedAttentionPress). The raw sums are memoised (they do not depend on ``block_size``).
    """
    raw = layer.cache.get(COLSUM_KEY)
    if raw is None:
        raw = column_sums(_queries(layer), layer.keys, layer.scaling, block_size)
        layer.cache[COLSUM_KEY] = raw
    if not normalize:
        return raw
    n = raw.shape[-1]
    return raw / torch.arange(n, 0, -1, dtype=raw.dtype, device=raw.device)


def window_attention(layer: LayerInputs, window: int) -> torch.Tensor:
    """(H_q, w, n) float32 softmax attention of the last ``w = min(window, n)`` queries over all keys.

    Causal inside the window: window row ``r`` (absolute position ``n - w + r``) sees keys ``<= n - w + r``.
    A row's softmax does not depend on the window size, so a memoised larger window is sliced.
    """
    n = layer.n
    w = min(int(window), n)
    if w < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    for key, value in layer.cache.items():
        if isinstance(key, tuple) and key[0] == WINDOW_KEY and key[1] >= w:
            return value[:, value.shape[1] - w :, :]
    queries = _queries(layer)
    h_q, h_kv, d = queries.shape[0], layer.keys.shape[0], queries.shape[-1]
    g = h_q // h_kv
    q = queries[:, n - w :].float().reshape(h_kv, g * w, d)  # query heads of one KV head stacked
    logits = torch.matmul(q, layer.keys.float().transpose(1, 2)).mul_(layer.scaling)  # (H_kv, G*w, n)
    logits = logits.reshape(h_q, w, n)
    mask = torch.ones(w, n, dtype=torch.bool, device=logits.device).triu_(n - w + 1)
    logits.masked_fill_(mask, float("-inf"))
    attn = torch.softmax(logits, dim=-1)
    layer.cache[(WINDOW_KEY, w)] = attn
    return attn

