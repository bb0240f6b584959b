"""The harness's attention function: scores methods during the context prefill, masks compressed caches after.

Registered with transformers' ``AttentionInterface`` under ``kvbench_<base>`` (with the base kernel's mask
function registered under the same name in ``AttentionMaskInterface``). It sees the post-RoPE queries and
keys of every architecture, so no method needs per-architecture code.

- Prefill (a ``Scoring`` context is active): each requested method scores the layer's keys (and queries),
  then the base kernel (sdpa / eager / flash) computes attention as usual, then ``Scoring.after`` runs (a
  layer-wise prefill compresses the layer there). A chunk of a chunked prefill has both contexts active: the
  chunk attends over the kept cache with masks, and is scored after.
- Decode over a compressed cache (a ``Masking`` context is active): every layer's keys may be fewer than the
  context, of different lengths per head (padded, with a validity mask) and per batch row (several
  configurations decoded as one batch). The mask is built here from the *positions* of the cached entries:
  a query at position p sees a valid key at position q <= p (and q > p - window on sliding layers). This
  makes the question part see the whole compressed context whatever the cache length.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from methods.base import DecodeRule, LayerInputs, Method

_local = threading.local()


def _current(kind: str):
    return getattr(_local, kind, None)


@contextlib.contextmanager
def _activate(kind: str, value):
    prev = getattr(_local, kind, None)
    setattr(_local, kind, value)
    try:
        yield value
    finally:
        setattr(_local, kind, prev)


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA GPU; nothing to wait for on the CPU), so timings end there."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotary_cos_sin(rotary_emb, x: torch.Tensor, positions: torch.Tensor, layer_type: str | None = None):
    """The model's own RoPE tables at ``positions`` (1, m): (cos, sin), each (1, m, d), as its layers get them
    (``attention_scaling`` included). Hybrid models (Gemma 3) keep one RoPE per layer type and take it as an
    argument; compressed layers are global (``full_attention``) unless told otherwise."""
    try:
        return rotary_emb(x, position_ids=positions)
    except TypeError:
        return rotary_emb(x, position_ids=positions, layer_type=layer_type or "full_attention")


def _layer_type(module) -> str | None:
    cfg = getattr(module, "config", None)
    types = getattr(cfg, "layer_types", None)
    return types[module.layer_idx] if types else None


@dataclass
class Scoring:
    """Collects ``scores[key][layer] = (H_kv, n)`` for each method during one prefill.

    What a layer's ``LayerInputs`` carries follows the methods' declarations (``needs_queries``,
    ``needs_rotary``); ``rotary_emb`` is the model's rotary module (needed only for ``needs_rotary``)."""

    methods: dict[str, Method]  # score key -> method
    layers: set[int] | None = None  # layers to score (None: all)
    rotary_emb: torch.nn.Module | None = None
    scores: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.needs_queries = any(m.needs_queries for m in self.methods.values())
        self.needs_rotary = any(m.needs_rotary for m in self.methods.values())
        if self.needs_rotary and self.rotary_emb is None:
            raise ValueError("a method needs the rotary embedding (needs_rotary) but the model has none")
        for key in self.methods:
            self.scores[key] = {}
            self.seconds[key] = 0.0

    def _rotary(self, module, like: torch.Tensor):
        """positions (m,) -> pure rotation tables (cos, sin), each (m, d) float32, on ``like``'s device."""
        layer_type = _layer_type(module)
        rotary_emb = self.rotary_emb
        assert rotary_emb is not None  # __post_init__ refuses needs_rotary without one
        scale = float(getattr(rotary_emb, "attention_scaling", 1.0) or 1.0)

        def tables(positions: torch.Tensor):
            buf = next(rotary_emb.buffers(), None)  # inv_freq: the tables are computed where it lives
            device = buf.device if buf is not None else like.device
            probe = torch.zeros(1, dtype=torch.float32, device=device)  # gives the tables' dtype and device only
            cos, sin = rotary_cos_sin(rotary_emb, probe, positions.to(device)[None], layer_type)
            return (cos[0].float() / scale).to(like.device), (sin[0].float() / scale).to(like.device)

        return tables, scale

    def observe(self, module, query, key, value, scaling) -> None:
        idx = module.layer_idx
        if self.layers is not None and idx not in self.layers:
            return
        layer = LayerInputs(
            layer_idx=idx,
            keys=key[0],
            values=value[0],
            queries=query[0] if self.needs_queries else None,
            scaling=float(scaling if scaling is not None else query.shape[-1] ** -0.5),
        )
        if self.needs_rotary:  # the prefill runs at positions 0..n-1 (harness.protocol.prefill)
            layer.positions = torch.arange(key.shape[-2], device=key.device)
            layer.rotary, layer.rope_scaling = self._rotary(module, key)
        for name, method in self.methods.items():
            sync(key.device)
            t0 = time.perf_counter()
            s = method.score(layer)
            sync(key.device)
            self.seconds[name] += time.perf_counter() - t0
            self.scores[name][idx] = s.float()

    def after(self, module) -> None:
        """Called once the layer's attention is computed (its cache holds the layer's keys and values): nothing
        here; a layer-wise prefill compresses the layer now (harness/prefill_modes.py)."""


@dataclass
class LayerMask:
    """Positions and validity of the compressed context entries of one layer, for a batch."""

    positions: torch.Tensor  # (B, H_kv, L) int64: RoPE position of each cached context entry
    valid: torch.Tensor | None  # (B, H_kv, L) bool, None when every entry is valid
    sliding_window: int | None = None
    scores: torch.Tensor | None = None  # (B, H_kv, L) prefill scores of the entries (for decode rules)


@dataclass
class Rules:
    """The decode rules of a batch (``methods.base.DecodeRule``, declared by the methods, e.g. an online
    eviction) and the validity of every cached entry they maintain. The engine feeds each rule its row's
    attention and applies the validity it returns; what a rule does is its method's business."""

    rules: dict[int, DecodeRule]  # batch row -> its configuration's rule
    valid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H_kv, L + m) entry validity
    # layer -> the step's cached (keys, values), each (B, H_kv, L + m, d), kept only while a rule needs them
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def entries(self, idx: int, b: int) -> dict:
        """The keyword arguments of ``rule.evict`` for row ``b`` at layer ``idx``: its cached keys and values when
        its rule declares ``needs_kv`` (``DecodeRule``), nothing otherwise."""
        if not self.rules[b].needs_kv or idx not in self.kv:
            return {}
        keys, values = self.kv[idx]
        return {"keys": keys[b], "values": values[b]}


@dataclass
class Masking:
    """Decode-time state: per-layer context entries and the positions of tokens appended after them."""

    layers: dict[int, LayerMask]
    appended: torch.Tensor  # (B, m) int64 positions of question/generated tokens in the cache so far
    rules: Rules | None = None

    def extend(self, positions: torch.Tensor) -> None:
        self.appended = torch.cat([self.appended, positions], dim=1)

    def evict(self) -> None:
        """After a forward step: each row's decode rule updates the validity of its entries."""
        if self.rules is None:
            return
        for idx, valid in self.rules.valid.items():
            for b, rule in self.rules.rules.items():
                valid[b] = rule.evict(idx, valid[b], **self.rules.entries(idx, b))
        self.rules.kv.clear()


def scoring(methods: dict[str, Method], layers: set[int] | None = None, rotary_emb=None):
    return _activate("scoring", Scoring(methods, layers, rotary_emb))


def masking(state: Masking):
    return _activate("masking", state)


def scoring_with(state: Scoring):
    """Score with a prepared ``Scoring`` state (a subclass that also evicts: harness/prefill_modes.py)."""
    return _activate("scoring", state)


def _sees_everything(meta: LayerMask, state: Masking) -> bool:
    """Whether a one-token step sees every cached entry of the layer, so attention needs no mask: every entry is
    valid (no padding, no decode rule on the layer) and there is no sliding window. Context entries sit before the
    question (positions < the first appended one) and appended tokens at or before the step's own position."""
    ruled = state.rules is not None and meta.scores is not None
    return meta.valid is None and not meta.sliding_window and not ruled


def _unmasked(query, key, value, scaling) -> torch.Tensor:
    """Plain attention of (B, H_q, q, d) queries over (B, H_kv, kv, d) keys and values; (B, q, H_q, d) out."""
    bsz, h_kv = key.shape[:2]
    q_len, d = query.shape[2], query.shape[-1]
    packed = query.reshape(bsz, h_kv, -1, d)  # GQA without copying the cache: G query heads per KV head
    out = F.scaled_dot_product_attention(packed, key, value, scale=scaling)
    return out.reshape(bsz, query.shape[1], q_len, -1).transpose(1, 2).contiguous()


def masked_attention(module, query, key, value, state: Masking, scaling, dropout=0.0):
    """Attention of ``query`` over a compressed cache (keys = context entries + appended tokens)."""
    idx = module.layer_idx
    meta = state.layers[idx]
    bsz, h_kv, kv_len, _ = key.shape
    q_len = query.shape[2]
    if q_len == 1 and _sees_everything(meta, state):
        return _unmasked(query, key, value, scaling), None
    n_ctx = meta.positions.shape[-1]
    n_app = kv_len - n_ctx
    appended = state.appended[:, :n_app].to(key.device)  # no-op unless the model is spread over devices
    key_pos = torch.cat([meta.positions, appended[:, None, :].expand(bsz, h_kv, n_app)], dim=-1)
    q_pos = appended[:, n_app - q_len :]  # the queries are the last appended tokens
    allowed = key_pos[:, :, None, :] <= q_pos[:, None, :, None]  # (B, H_kv, q, kv)
    if meta.sliding_window:
        allowed &= key_pos[:, :, None, :] > (q_pos[:, None, :, None] - meta.sliding_window)
    rs = state.rules if (state.rules is not None and meta.scores is not None) else None
    valid = None
    if meta.valid is not None or rs is not None:
        ctx_valid = meta.valid if meta.valid is not None else torch.ones_like(meta.positions, dtype=torch.bool)
        valid = torch.cat([ctx_valid, ctx_valid.new_ones(bsz, h_kv, n_app)], dim=-1)
    if rs is not None:
        assert valid is not None and meta.scores is not None  # rs needs meta.scores; valid is built above then
        if idx not in rs.valid:  # first step: the rules start from the compressed context
            rs.valid[idx] = valid[..., :n_ctx].clone()
            for b, rule in rs.rules.items():
                rule.start(idx, meta.scores[b], meta.positions[b], rs.valid[idx][b], int(appended[b, 0]))
        grow = kv_len - rs.valid[idx].shape[-1]
        rs.valid[idx] = torch.cat([rs.valid[idx], rs.valid[idx].new_ones(bsz, h_kv, grow)], dim=-1)
        valid = rs.valid[idx]
        if any(rule.needs_kv for rule in rs.rules.values()):  # for the rules' evict after this step
            rs.kv[idx] = (key, value)
    if valid is not None:
        allowed &= valid[:, :, None, :]
    groups = query.shape[1] // h_kv
    if rs is None:
        # GQA without copying the cache: fold each KV head's G query heads into the query axis
        d = query.shape[-1]
        packed = query.reshape(bsz, h_kv, groups * q_len, d)
        # one query token: its (B, H_kv, 1, kv) mask broadcasts over the G packed query heads without a copy
        mask = allowed if q_len == 1 else \
            allowed[:, :, None].expand(bsz, h_kv, groups, q_len, kv_len).reshape(bsz, h_kv, groups * q_len, kv_len)
        out = F.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
        return out.reshape(bsz, h_kv * groups, q_len, -1).transpose(1, 2).contiguous(), None
    seen = allowed.sum(dim=2)  # (B, H_kv, kv) queries of this step that saw each entry
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
        allowed = allowed.repeat_interleave(groups, dim=1)
    # explicit softmax: the new tokens' attention rows feed the decode rules
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    logits = (query.float() @ key.float().transpose(2, 3)) * scale
    probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    received = probs.sum(dim=2).reshape(bsz, h_kv, groups, kv_len).mean(dim=2)  # (B, H_kv, kv)
    for b, rule in rs.rules.items():
        rule.observe(idx, received[b], seen[b])
    out = (probs.to(value.dtype) @ value).transpose(1, 2).contiguous()
    return out, None


def _make_forward(base: str):
    def kvbench_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        mask_state = _current("masking")
        score_state = _current("scoring")
        if mask_state is not None and module.layer_idx in mask_state.layers:
            out = masked_attention(module, query, key, value, mask_state, scaling, dropout)
            if score_state is not None:  # a chunk of a chunked prefill (harness/prefill_modes.py): kept cache + chunk
                score_state.observe(module, query, key, value, scaling)
                score_state.after(module)
            return out
        if score_state is not None:
            score_state.observe(module, query, key, value, scaling)
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        if base == "eager":
            out = _eager(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        else:
            out = ALL_ATTENTION_FUNCTIONS[base](
                module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
            )
        if score_state is not None:
            score_state.after(module)
        return out

    kvbench_attention.__name__ = f"kvbench_{base}"
    return kvbench_attention


def _eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain softmax attention (debugging reference; the models' own eager functions differ per file)."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    logits = torch.matmul(query, key.transpose(2, 3)) * scale
    softcap = kwargs.get("softcap")
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask, float("-inf"))
        else:
            logits = logits + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(logits.float(), dim=-1).to(query.dtype)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), probs


BASES = ("sdpa", "eager", "flash_attention_2")
_registered: set[str] = set()


def register(base: str) -> str:
    """Register ``kvbench_<base>`` (attention and mask functions); returns the implementation name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    if base not in BASES:
        raise ValueError(f"unknown attn_impl {base!r}; choose one of {', '.join(BASES)}")
    name = f"kvbench_{base}"
    if name not in _registered:
        AttentionInterface.register(name, _make_forward(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
        _registered.add(name)
    return name


def install(model, attn_impl: str = "sdpa") -> None:
    """Switch a loaded model to the harness attention over ``attn_impl`` (sdpa, eager, flash_attention_2)."""
    name = register(attn_impl)
    model.set_attn_implementation(name)
    model.kvbench_attn_impl = attn_impl
