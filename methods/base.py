"""What a compressor is: a function from one layer's prefill tensors to per-position keep scores.

A method never sees ``r``: scores depend only on the prefill, so one prefill serves every ratio of a sweep
(docs/protocol.md). The ratio enters only through the shared budget policy (``methods.budget``), plus, for methods
that always keep a head or tail span whose size depends on the budget (H2O's recent window, SnapKV's
observation window, sinks), through ``protected``.

The method surface (docs/methods.md, "How to add a method"): the engine (``harness/``) reads only these
declarations and never a method's name or its own parameters.

- ``score(layer)``: (H_kv, n) keep scores (required).
- ``needs_queries`` / ``needs_rotary``: what ``LayerInputs`` must carry beyond keys and values (the prefill's
  post-RoPE queries; the prefill's position ids and the layer's rotary embedding, e.g. to undo RoPE on the
  queries or rotate them to future positions).
- ``protected(n, n_kept)``: leading/trailing spans always kept at a budget.
- ``layer_budget(n, n_kept, kept, layer, n_layers)``: entries each KV head of layer ``layer`` keeps (default: the
  uniform ``n_kept`` of docs/methods.md); the uniform and adaptive policies then apply within the layer.
- ``decode_rule(n, n_kept)``: a ``DecodeRule`` the engine runs while decoding one configuration (default none:
  prefill-only; a rule declaring ``needs_kv`` gets the cached keys and values at ``evict``, and every rule keeps
  the cache within ``DecodeRule.limit``, the protocol's ``decode_budget``). ``rerotate``: kept keys are
  re-rotated to cache positions.
- ``prefill_query_rows(n)``: how many of the last query rows ``score`` reads (0: keys only; None: every row), so
  the engine knows whether the method can score a chunked prefill (``prefill_chunk``, docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

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
    # set only when a method of the run declares ``needs_rotary``:
    positions: torch.Tensor | None = None  # (n,) int64 RoPE position of each prefill token (0..n-1)
    # positions (m,) -> (cos, sin), each (m, d) float32: the layer's own rotation R(p) with the rotary module's
    # ``attention_scaling`` divided out, so ``x * cos + rotate_half(x) * sin`` is a pure rotation
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    rope_scaling: float = 1.0  # the rotary module's attention_scaling (post-RoPE q and k carry it once each)

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


DECODE_BUDGETS = ("fixed", "ratio")  # the protocol's decode_budget settings (docs/protocol.md)


class DecodeRule:
    """Decode-time behaviour of one configuration (one batch row), declared by its method (``decode_rule``)
    and run by the engine (``harness.attention``) while the question and answer are decoded.

    Per compressed layer the engine calls ``start`` once (before the first decode step), then after each
    forward of that layer ``observe`` with the attention the step's queries paid to every cached entry, and
    after each full step ``evict``. Entries are in position order: the kept context entries (padding of the
    batch at the end of the context part is invalid), then the appended question/answer tokens. While a
    batch holds a row with a rule, the engine computes that batch's attention with an explicit softmax.

    A rule that declares ``needs_kv`` also gets the cached keys and values of its row at ``evict`` (a rule that
    re-scores the cache from its keys, ``methods.rescore``). In a multi-turn conversation (docs/protocol.md) one
    rule instance runs through every turn: ``start`` is called once, and the later turns' tokens are appended
    entries like the first turn's.

    How many entries a head may hold while decoding is the protocol's ``decode_budget`` (``configure``, set by
    the engine; ``limit`` computes it): ``fixed`` (default) keeps each head at the budget compression gave it,
    ``ratio`` lets it grow with the tokens seen, ``floor(b * (n + m) / n)`` for a head given ``b`` of the ``n``
    context tokens once ``m`` tokens were appended (the fraction kept at compression, about ``1 - r``, of every
    token seen).
    """

    needs_kv: ClassVar[bool] = False  # evict also gets the row's cached keys and values
    decode_budget: str = "fixed"  # "fixed" | "ratio" (``configure``)
    n_context: int = 0  # context tokens prefilled (n), the base of the ratio budget

    def configure(self, decode_budget: str = "fixed", n_context: int = 0) -> "DecodeRule":
        """Set the budget semantics (``DECODE_BUDGETS``) over an ``n_context``-token context; returns the rule."""
        if decode_budget not in DECODE_BUDGETS:
            raise ValueError(f"decode_budget must be one of {', '.join(DECODE_BUDGETS)}, got {decode_budget!r}")
        if decode_budget == "ratio" and n_context < 1:
            raise ValueError("decode_budget=ratio needs the context length (n_context >= 1)")
        self.decode_budget, self.n_context = decode_budget, int(n_context)
        return self

    def limit(self, budget: torch.Tensor, appended: int) -> torch.Tensor:
        """(H_kv,) entries each head may hold now: its compression ``budget`` (fixed), or
        ``floor(budget * (n + appended) / n)`` (ratio), ``appended`` the tokens fed after the context so far."""
        if self.decode_budget != "ratio":
            return budget
        return torch.div(budget * (self.n_context + appended), self.n_context, rounding_mode="floor")

    def start(self, layer: int, scores: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
              first_position: int) -> None:
        """scores, positions, valid: (H_kv, L) prefill scores, RoPE positions and validity of the context
        entries; ``first_position``: position of the first appended token (the context length n)."""

    def observe(self, layer: int, attention: torch.Tensor, seen: torch.Tensor) -> None:
        """attention: (H_kv, T) attention each entry got in this step, summed over the step's queries and
        averaged over each KV head's query heads; seen: (H_kv, T) how many of the step's queries saw it."""

    def evict(self, layer: int, valid: torch.Tensor, keys: torch.Tensor | None = None,
              values: torch.Tensor | None = None) -> torch.Tensor:
        """(H_kv, T) validity after this step -> the new validity (entries set False are dropped). ``keys``,
        ``values``: (H_kv, T, d) the row's cached entries (post-RoPE keys), given only to a rule that declares
        ``needs_kv``."""
        return valid


class Method:
    """Base class: subclasses are small dataclasses of their parameters, registered with ``@register``."""

    name: ClassVar[str] = ""
    needs_queries: ClassVar[bool] = False  # queries are passed to ``score`` only when some method needs them
    needs_rotary: ClassVar[bool] = False  # LayerInputs.positions / rotary / rope_scaling are set
    compresses: ClassVar[bool] = True  # False only for the uncompressed reference

    def score(self, layer: LayerInputs) -> torch.Tensor:
        """Keep scores of shape (H_kv, n), float32; higher means keep. Must not depend on the budget."""
        raise NotImplementedError

    def protected(self, n: int, n_kept: int) -> tuple[int, int]:
        """(first, last): how many leading and trailing context positions are always kept at this budget.

        They count against the budget. Default: none.
        """
        return (0, 0)

    def layer_budget(self, n: int, n_kept: int, kept: float, layer: int, n_layers: int) -> int:
        """Entries each KV head of ``layer`` (of ``n_layers``) keeps. ``n_kept`` is the uniform per-head budget
        of docs/methods.md (``max(1, floor(n * (1 - r)))`` or ``min(n, budget_tokens)``), ``kept`` the same before
        rounding (``n * (1 - r)`` or ``min(n, budget_tokens)``). Default: ``n_kept`` in every layer; PyramidKV
        overrides it."""
        return n_kept

    # Decoding-time behaviour (read by the engine); defaults are the prefill-only protocol.
    # StreamingLLM: re-rotate kept keys to positions 0..n_kept-1 (a class default here, not a ClassVar: StreamingLLM
    # makes it a parameter; Method is no dataclass, so its subclasses do not inherit it as a field)
    rerotate: bool = False

    def decode_rule(self, n: int, n_kept: int) -> DecodeRule | None:
        """A fresh ``DecodeRule`` for one configuration decoded over a context of ``n`` tokens compressed to
        ``n_kept`` per head, or None (prefill-only, the default)."""
        return None

    def prefill_query_rows(self, n: int) -> int | None:
        """How many of the last query rows of an ``n``-entry layer ``score`` reads: 0 for a keys-only score, None
        when it reads every row (the attention of the whole prefill). A chunked prefill (``prefill_chunk``,
        docs/protocol.md) scores the kept cache plus the new chunk, of whose queries only the chunk's exist: a
        method that needs every row cannot run there. Default: 0 without ``needs_queries``, None with it."""
        return None if self.needs_queries else 0

    def params(self) -> dict:
        """The method's parameters as recorded in result rows (``method_params``)."""
        from dataclasses import asdict, is_dataclass

        return asdict(self) if is_dataclass(self) else {}
