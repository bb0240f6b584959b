"""What a compressor is: a function from one layer's prefill tensors to per-position keep scores.

A method never sees ``r``: scores depend only on the prefill, so one prefill serves every ratio of a sweep
(protocol.md). The ratio enters only through the shared budget policy (``methods.budget``), plus, for methods
that always keep a head or tail span whose size depends on the budget (H2O's recent window, SnapKV's
observation window, sinks), through ``protected``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch


@dataclass
class LayerInputs:
    """One layer's prefill tensors for one sequence (batch of one), as the attention kernel sees them.

    keys, values: (H_kv, n, d), post-RoPE, exactly as cached. queries: (H_q, n, d), post-RoPE, or None when
    no method of the run needs them. ``scaling`` is the softmax scale the model uses (1/sqrt(d) usually).
    Heavier shared statistics (attention column sums, window attention) are computed on first use by helpers
    in ``methods.attention`` and memoised in ``cache`` so two methods of one sweep pay for them once.
    """

    layer_idx: int
    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor | None
    scaling: float
    cache: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.keys.shape[-2]

    @property
    def n_kv_heads(self) -> int:
        return self.keys.shape[0]

    @property
    def group_size(self) -> int:
        """G = H_q / H_kv, query heads per KV head."""
        assert self.queries is not None, "this method needs queries: set needs_queries = True"
        return self.queries.shape[0] // self.keys.shape[0]

    def group_mean(self, per_query_head: torch.Tensor) -> torch.Tensor:
        """(H_q, ...) -> (H_kv, ...): mean over each KV head's G query heads (GQA)."""
        h_kv = self.n_kv_heads
        return per_query_head.reshape(h_kv, -1, *per_query_head.shape[1:]).mean(dim=1)


class Method:
    """Base class: subclasses are small dataclasses of their parameters, registered with ``@register``."""

    name: ClassVar[str] = ""
    needs_queries: ClassVar[bool] = False  # queries are passed to ``score`` only when some method needs them
    compresses: ClassVar[bool] = True  # False only for the uncompressed reference

    def score(self, layer: LayerInputs) -> torch.Tensor:
        """Keep scores of shape (H_kv, n), float32; higher means keep. Must not depend on the budget."""
        raise NotImplementedError

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        """(first, last): how many leading and trailing context positions are always kept at this budget.

        They count against the budget. Default: none.
        """
        return (0, 0)

    # Decoding-time behaviour (read by the engine); defaults are the prefill-only protocol.
    rerotate: ClassVar[bool] = False  # StreamingLLM: re-rotate kept keys to positions 0..n_kept-1
    decode_eviction: ClassVar[bool] = False  # H2O online: evict while decoding to stay at the budget

    def params(self) -> dict:
        """The method's parameters as recorded in result rows (``method_params``)."""
        from dataclasses import asdict, is_dataclass

        return asdict(self) if is_dataclass(self) else {}
