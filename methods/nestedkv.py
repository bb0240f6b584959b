"""NestedKV (Chen et al., arXiv 2605.26678, "Nested Memory Routing for Long-Context KV Cache Compression").

Key-only, training-free; the NestedKV paper (arXiv 2605.26678), steps 1-7, per layer and per KV head (docs/methods.md):

1. ``k^_j = k_j / ||k_j||``.
2. Anchors: global ``mu_s = mean_j k^_j``; block ``mu_e(i)`` = mean of ``k^`` over the non-overlapping block
   holding ``i`` (``b = clip(floor(n / block_divisor), block_min, block_max)``, blocks start at 0, the last
   may be shorter); window ``mu_c(i)`` = mean of ``k^`` over ``[max(0, i - W + 1), i]`` (0-based; includes i).
3. ``a_x(i) = -cos(k^_i, mu_x(i))``; each normalised over the head's positions: ``a~_s, a~_e, a~_c``.
4. ``Delta_x`` = mean of the top ``contrast_fraction`` of ``a~_x`` minus mean of its bottom fraction (at least
   one element each); ``w = softmax(log(prior) + beta * Delta)``; ``blend = sum_x w_x a~_x``.
5. ``s = std(a~_s, a~_e, a~_c)``, min-max normalised then centred on its head mean: ``s~``;
   ``alpha = sigmoid(kappa * (s~ - tau))``; ``win = max(a~_s, a~_e, a~_c)``.
6. ``score = (1 - alpha) * blend + alpha * win``; the first ``n_sink`` positions are protected.
7. Budget: adaptive, safeguard 0.2 (conf/method/nestedkv.yaml).

Open points of the paper made switches (defaults first):
- ``normalization``: ``minmax`` | ``rank`` (``rank/(n-1)``, ties to the earlier position) for step 3 only;
  the surprise ``s`` of step 5 is always min-max normalised as the spec writes.
- ``local_similarity``: ``cosine`` | ``dot`` for the block and window anchors (``dot`` drops the
  ``1/||mu||``). The global anchor is always a cosine: its norm is one constant per head, which both
  normalisations remove anyway.
- ``sinks_in_stats``: ``true`` computes steps 1-6 over all ``n`` positions, then pins the sinks via
  ``protected``; ``false`` computes steps 1-6 on positions ``n_sink..n-1`` only, as if the context started
  after the sinks (anchors, blocks from ``n_sink`` with ``b`` from ``n - n_sink``, normalisations,
  contrasts and gate all exclude them); the sinks then get the head's max score and are protected.
The std of step 5 is the population std; any constant factor (e.g. Bessel's) cancels in the min-max.

Cost: ``O(n d)`` per head. The window means use one cumulative sum (float64, one head at a time, so the
difference of two large prefix sums stays exact at long contexts); the block means a reshape-sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods import register
from methods.base import LayerInputs, Method
from methods.rescore import RescoreOnDecode

NORMALIZATIONS = ("minmax", "rank")
SIMILARITIES = ("cosine", "dot")


# ---- step 1-2: anchors ----------------------------------------------------------------------------------


def unit_keys(keys: torch.Tensor) -> torch.Tensor:
    """Step 1: ``k^ = k / ||k||`` in float32 (a zero key stays zero)."""
    return F.normalize(keys.float(), dim=-1)


def block_size_for(n: int, divisor: int = 32, lo: int = 128, hi: int = 256) -> int:
    """``b = clip(floor(n / divisor), lo, hi)``."""
    return int(min(hi, max(lo, n // divisor)))


def global_anchor(k_hat: torch.Tensor) -> torch.Tensor:
    """(..., n, d) -> (..., 1, d): ``mu_s``."""
    return k_hat.mean(dim=-2, keepdim=True)


def block_anchor(k_hat: torch.Tensor, block: int) -> torch.Tensor:
    """(..., n, d) -> (..., n, d): ``mu_e(i)``, mean of the contiguous block of size ``block`` holding ``i``."""
    *lead, n, d = k_hat.shape
    n_blocks = -(-n // block)
    padded = F.pad(k_hat, (0, 0, 0, n_blocks * block - n))  # zero rows at the end
    sums = padded.reshape(*lead, n_blocks, block, d).sum(dim=-2)
    counts = torch.full((n_blocks,), float(block), dtype=k_hat.dtype, device=k_hat.device)
    counts[-1] = n - (n_blocks - 1) * block
    means = sums / counts[:, None]
    return means.repeat_interleave(block, dim=-2)[..., :n, :]


def window_anchor(k_hat: torch.Tensor, window: int) -> torch.Tensor:
    """(..., n, d) -> (..., n, d): ``mu_c(i)``, mean over ``[max(0, i - window + 1), i]`` (causal, incl. i).

    Prefix sums in float64: ``(P[i + 1] - P[lo(i)]) / (i + 1 - lo(i))``.
    """
    n = k_hat.shape[-2]
    prefix = F.pad(torch.cumsum(k_hat.double(), dim=-2), (0, 0, 1, 0))  # (..., n + 1, d), P[0] = 0
    idx = torch.arange(n, device=k_hat.device)
    lo = (idx - window + 1).clamp_min(0)
    sums = prefix[..., idx + 1, :] - prefix[..., lo, :]
    counts = (idx + 1 - lo).to(torch.float64)
    return (sums / counts[:, None]).to(k_hat.dtype)


# ---- step 3: anomalies and normalisation ---------------------------------------------------------------


def anomaly(k_hat: torch.Tensor, mu: torch.Tensor, cosine: bool = True) -> torch.Tensor:
    """``-cos(k^_i, mu(i))`` (``-<k^_i, mu(i)>`` if not ``cosine``); (..., n, d), (..., n|1, d) -> (..., n)."""
    dot = (k_hat * mu).sum(dim=-1)
    if cosine:
        dot = dot / (k_hat.norm(dim=-1) * mu.norm(dim=-1)).clamp_min(1e-12)
    return -dot


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max over the last dim to [0, 1]; a constant row maps to 0."""
    lo = x.amin(dim=-1, keepdim=True)
    span = x.amax(dim=-1, keepdim=True) - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def rank_normalize(x: torch.Tensor) -> torch.Tensor:
    """Ranks over the last dim scaled to [0, 1] (``rank / (n - 1)``; ties: earlier position ranks lower)."""
    n = x.shape[-1]
    order = torch.sort(x, dim=-1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(n, device=x.device).expand_as(order))
    return ranks.to(x.dtype) / max(n - 1, 1)


def normalize_scores(x: torch.Tensor, how: str = "minmax") -> torch.Tensor:
    if how == "minmax":
        return minmax(x)
    if how == "rank":
        return rank_normalize(x)
    raise ValueError(f"unknown normalization {how!r}; choose one of {NORMALIZATIONS}")


# ---- step 4-6: blend, gate, score ----------------------------------------------------------------------


def contrast(a: torch.Tensor, fraction: float = 0.10) -> torch.Tensor:
    """``Delta = mean(top k of a) - mean(bottom k of a)`` over the last dim, ``k = max(1, floor(fraction n))``."""
    n = a.shape[-1]
    k = min(n, max(1, math.floor(fraction * n + 1e-9)))
    top = torch.topk(a, k, dim=-1).values.mean(dim=-1)
    bottom = torch.topk(a, k, dim=-1, largest=False).values.mean(dim=-1)
    return top - bottom


def blend_weights(deltas: torch.Tensor, prior=(0.4, 0.4, 0.2), beta: float = 3.0) -> torch.Tensor:
    """(..., 3) contrasts -> (..., 3) weights ``softmax(log(prior) + beta * Delta)``."""
    log_prior = torch.log(torch.as_tensor(prior, dtype=deltas.dtype, device=deltas.device))
    return torch.softmax(log_prior + beta * deltas, dim=-1)


def surprise_gate(a_tilde: torch.Tensor, kappa: float = 10.0, tau: float = 0.60) -> torch.Tensor:
    """(..., 3, n) -> (..., n): ``alpha = sigmoid(kappa * (s~ - tau))``, ``s~ = minmax(std_x a~_x) - mean``."""
    s = minmax(a_tilde.std(dim=-2, unbiased=False))
    s = s - s.mean(dim=-1, keepdim=True)
    return torch.sigmoid(kappa * (s - tau))


@register("nestedkv")
@dataclass
class NestedKV(RescoreOnDecode, Method):
    window: int = 64
    block_min: int = 128
    block_max: int = 256
    block_divisor: int = 32
    prior: tuple = (0.4, 0.4, 0.2)  # (global, block, window)
    beta: float = 3.0
    contrast_fraction: float = 0.10
    kappa: float = 10.0
    tau: float = 0.60
    n_sink: int = 4
    normalization: str = "minmax"
    local_similarity: str = "cosine"
    sinks_in_stats: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # decode_rescore_every (methods.rescore)
        self.prior = tuple(float(p) for p in self.prior)
        if len(self.prior) != 3 or min(self.prior) <= 0:
            raise ValueError(f"prior must be three positive weights, got {self.prior}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {NORMALIZATIONS}")
        if self.local_similarity not in SIMILARITIES:
            raise ValueError(f"unknown local_similarity {self.local_similarity!r}; choose one of {SIMILARITIES}")
        if self.window < 1 or self.block_min < 1 or self.block_max < self.block_min or self.block_divisor < 1:
            raise ValueError("window, block_min, block_divisor must be >= 1 and block_max >= block_min")
        if not 0.0 < self.contrast_fraction <= 1.0:
            raise ValueError(f"contrast_fraction must be in (0, 1], got {self.contrast_fraction}")
        if self.n_sink < 0:
            raise ValueError(f"n_sink must be >= 0, got {self.n_sink}")

    def components(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of steps 1-6 for keys (H, n, d) (all positions given are in the statistics).

        Returns (H, n) ``a_s, a_e, a_c`` (raw), ``at_s, at_e, at_c`` (normalised), ``blend``, ``alpha``,
        ``win``, ``score``; (H, 3) ``delta`` and ``weights``; and the block size ``b`` (0-d tensor).
        """
        n = keys.shape[-2]
        k_hat = unit_keys(keys)
        b = block_size_for(n, self.block_divisor, self.block_min, self.block_max)
        local_cos = self.local_similarity == "cosine"
        a_s = anomaly(k_hat, global_anchor(k_hat), cosine=True)
        a_e = anomaly(k_hat, block_anchor(k_hat, b), cosine=local_cos)
        a_c = anomaly(k_hat, window_anchor(k_hat, self.window), cosine=local_cos)
        a_tilde = normalize_scores(torch.stack([a_s, a_e, a_c], dim=-2), self.normalization)  # (H, 3, n)
        delta = contrast(a_tilde, self.contrast_fraction)  # (H, 3)
        weights = blend_weights(delta, self.prior, self.beta)
        blend = (weights.unsqueeze(-1) * a_tilde).sum(dim=-2)
        alpha = surprise_gate(a_tilde, self.kappa, self.tau)
        win = a_tilde.amax(dim=-2)
        score = (1.0 - alpha) * blend + alpha * win
        return dict(
            a_s=a_s, a_e=a_e, a_c=a_c, at_s=a_tilde[..., 0, :], at_e=a_tilde[..., 1, :],
            at_c=a_tilde[..., 2, :], delta=delta, weights=weights, blend=blend, alpha=alpha, win=win,
            score=score, b=torch.tensor(b),
        )

    def _head_score(self, keys: torch.Tensor) -> torch.Tensor:
        n = keys.shape[-2]
        sinks = min(self.n_sink, n) if not self.sinks_in_stats else 0
        if n - sinks <= 0:
            return torch.zeros(n, dtype=torch.float32, device=keys.device)
        rest = self.components(keys[None, sinks:])["score"][0]
        if sinks == 0:
            return rest
        return torch.cat([rest.amax().expand(sinks), rest])

    def score(self, layer: LayerInputs) -> torch.Tensor:
        # one KV head at a time: the float64 prefix sums stay O(n d) for a single head
        return torch.stack([self._head_score(layer.keys[h]) for h in range(layer.n_kv_heads)]).float()

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        return (min(self.n_sink, n_kept, n), 0)
