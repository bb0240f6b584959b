"""Expected Attention (Devoto et al., arXiv 2510.00636; docs/methods.md "Expected Attention"), as kvpress 0.5.x's
ExpectedAttentionPress.

Future queries are unknown at compression time; model them as Gaussian. Per query head, over the prefill's
queries at positions ``n_sink..n-1`` (the sinks' outliers left out), **post-norm, pre-RoPE** (Qwen3/Gemma 3:
after ``q_norm``):

    mu = mean_i q_i                         Sigma = (1 / m) sum_i (q_i - mu)(q_i - mu)^T,  m = n - n_sink

Rotate both to the next ``n_future_positions`` positions with the layer's own RoPE, averaged:
``R = mean_{p = n .. n + F - 1} R(p)`` (``R(p) x = x cos_p + rotate_half(x) sin_p``, with the rotary module's
``attention_scaling`` ``s`` included as kvpress does: ``mu' = s R mu``, ``Sigma' = s^2 R Sigma R^T``). For the
non-sink cached (post-RoPE) keys ``k_j``, ``d`` the head dimension:

    z_j = mu' . k_j / sqrt(d) + k_j^T Sigma' k_j / (2 d)       (log of E[exp(q.k / sqrt(d))], q ~ N(mu', Sigma'))
    a_j = softmax_j(z)  over the non-sink keys, per query head; mean over each KV head's G query heads
    score_j = (a_j + epsilon) * ||v_j||     (use_vnorm; a_j alone otherwise)

The first ``n_sink`` positions are always kept (``protected``; kvpress pads them with ``max + 1``).

How the harness gets the pre-RoPE queries: it sees every architecture's post-RoPE queries at positions
``0..n-1``; undoing the rotation (``q = R(p)^T q_rot / s``) gives exactly the queries kvpress recomputes from the
hidden states with ``q_proj`` (+ ``q_norm``), so no per-architecture code is needed and Qwen3 / Gemma 3 work.
The query scale is ``1 / sqrt(d)`` as in kvpress (not the model's ``scaling``). RoPE layout: rotate-half (every
architecture transformers ships with ``rotate_half``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from methods import register
from methods.base import LayerInputs, Method


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d): ``(x1, x2) -> (-x2, x1)``; ``rotate_half(x) = P x``."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def unrotate(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``R(p)^T q`` for rotated vectors q (..., m, d) with tables (m, d): ``q cos - rotate_half(q) sin``."""
    return q * cos - rotate_half(q) * sin


def rotation_matrix(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(d,) tables -> (d, d) ``diag(cos) + diag(sin) P`` with ``P x = rotate_half(x)``."""
    d = cos.shape[-1]
    half = d // 2
    p = torch.zeros(d, d, dtype=cos.dtype, device=cos.device)
    p[half:, :half] = torch.eye(half, dtype=cos.dtype, device=cos.device)
    p[:half, half:] = -torch.eye(half, dtype=cos.dtype, device=cos.device)
    return torch.diag(cos) + sin[:, None] * p


def query_statistics(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, m, d) queries -> mean (H, d) and population covariance (H, d, d)."""
    mu = q.mean(dim=1)
    centered = q - mu[:, None]
    return mu, centered.transpose(1, 2) @ centered / q.shape[1]


def expected_logits(keys: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor | None) -> torch.Tensor:
    """keys (m, d), mu (G, d), cov (G, d, d) or None -> (G, m) ``mu.k / sqrt(d) + k^T Sigma k / (2 d)``."""
    d = keys.shape[-1]
    z = mu @ keys.T / math.sqrt(d)
    if cov is not None:
        z = z + ((keys @ cov) * keys).sum(dim=-1) / d / 2  # (G, m, d) * (m, d) summed over d
    return z


@register("expected_attention")
@dataclass
class ExpectedAttention(Method):
    needs_queries: ClassVar[bool] = True
    needs_rotary: ClassVar[bool] = True

    n_future_positions: int = 512
    n_sink: int = 4
    use_covariance: bool = True
    use_vnorm: bool = True
    epsilon: float = 0.0

    def __post_init__(self) -> None:
        if self.n_future_positions < 1:
            raise ValueError(f"n_future_positions must be >= 1, got {self.n_future_positions}")
        if self.n_sink < 0:
            raise ValueError(f"n_sink must be >= 0, got {self.n_sink}")

    def statistics(self, layer: LayerInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per query head: ``mu'`` (H_q, d) and ``Sigma'`` (H_q, d, d) (None without covariance), i.e. the
        pre-RoPE query statistics over positions ``n_sink..n-1`` rotated by the average future rotation."""
        # set by the engine for a method that declares needs_queries and needs_rotary
        assert layer.queries is not None and layer.positions is not None and layer.rotary is not None
        n, s = layer.n, self.n_sink
        scale = layer.rope_scaling
        q_rot = layer.queries[:, s:].float()  # (H_q, m, d) post-RoPE
        cos, sin = layer.rotary(layer.positions[s:])  # (m, d) pure rotations
        q = unrotate(q_rot, cos, sin) / scale  # pre-RoPE, post-norm queries
        mu, cov = query_statistics(q)
        future = torch.arange(n, n + self.n_future_positions, device=layer.positions.device)
        f_cos, f_sin = layer.rotary(future)
        rot = rotation_matrix(f_cos.mean(dim=0), f_sin.mean(dim=0)) * scale  # (d, d), the tables' scale included
        mu = mu @ rot.T
        sigma = rot @ cov @ rot.T if self.use_covariance else None
        return mu, sigma

    def score(self, layer: LayerInputs) -> torch.Tensor:
        n, s, h_kv = layer.n, self.n_sink, layer.n_kv_heads
        if n <= s:  # nothing but sinks: all protected
            return torch.zeros(h_kv, n, dtype=torch.float32, device=layer.keys.device)
        mu, cov = self.statistics(layer)
        g = layer.group_size
        rows = []
        for h in range(h_kv):  # one KV head at a time: the (G, m, d) temporary of k^T Sigma k stays small
            keys = layer.keys[h, s:].float()  # (m, d)
            z = expected_logits(keys, mu[h * g : (h + 1) * g], cov[h * g : (h + 1) * g] if cov is not None else None)
            rows.append(torch.softmax(z, dim=-1).mean(dim=0))  # (m,)
        scores = torch.stack(rows)  # (H_kv, m)
        if self.use_vnorm:
            scores = (scores + self.epsilon) * layer.values[:, s:].float().norm(dim=-1)
        sinks = (scores.amax() + 1).expand(h_kv, s)  # protected anyway; kvpress's pad value
        return torch.cat([sinks, scores], dim=-1)

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (min(self.n_sink, n_kept, n), 0)
