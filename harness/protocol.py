"""The evaluation protocol for one context (docs/protocol.md): split, prefill with scoring, compress, decode.

1. ``encode_context`` / ``encode_question``: render the chat template with the context at the start of the user turn; tokenise the context
   part and the question part separately, so the context boundary is exact; middle-truncate the context.
2. ``prefill``: forward the context tokens (positions 0..n-1) with full attention through the base model (no
   logits for every position), recording each method's scores in the harness attention function.
3. ``select_positions`` + ``cache.compress``: keep each configuration's positions per layer and KV head.
4. ``decode``: feed the question part at positions n, n+1, ... (a method that declares ``rerotate``: n_kept, ...) and
   decode greedily until EOS, a stop string or ``max_new_tokens``; several configurations decode as one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from harness import attention
from harness.cache import CompressedContext, batch_cache, keep_rows
from harness.memory import model_devices
from methods.base import DecodeRule, Method
from methods.budget import n_kept_for, select
from tasks.prompts import render_parts, templated
from tasks.records import Record


@dataclass
class Encoded:
    context_ids: torch.Tensor  # (1, n) after truncation
    n_context_original: int
    truncated: bool


def middle_truncate(ids: torch.Tensor, budget: int) -> torch.Tensor:
    """Keep the first and last halves of ``budget`` tokens (LongBench / InfiniteBench / LooGLE)."""
    n = ids.shape[-1]
    if n <= budget:
        return ids
    head = budget // 2
    return torch.cat([ids[..., :head], ids[..., n - (budget - head) :]], dim=-1)


def encode_question(tokenizer, record: Record) -> torch.Tensor:
    """(1, q) token ids of the question part."""
    return tokenizer(render_parts(tokenizer, record)[1], add_special_tokens=False, return_tensors="pt").input_ids


def encode_context(tokenizer, record: Record, max_context: int | None = None) -> Encoded:
    """(1, n) token ids of the context part, middle-truncated to ``max_context`` tokens."""
    text = render_parts(tokenizer, record)[0]
    ctx = tokenizer(text, add_special_tokens=not templated(tokenizer, record), return_tensors="pt").input_ids
    n = ctx.shape[-1]
    if max_context is not None and n > max_context:
        if max_context < 1:
            raise ValueError(f"no room for the context of {record.sample_id}: the question part alone is too long")
        ctx = middle_truncate(ctx, max_context)
    return Encoded(ctx, n, ctx.shape[-1] < n)


def compressed_layers(model) -> tuple[set[int], dict[int, int | None]]:
    """Layers that compression applies to (global attention) and each layer's sliding window (or None)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_layers = cfg.num_hidden_layers
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * n_layers
    window = getattr(cfg, "sliding_window", None)
    sliding = {i: (window if t == "sliding_attention" else None) for i, t in enumerate(types)}
    return {i for i, t in enumerate(types) if t != "sliding_attention"}, sliding


def base_model(model):
    return getattr(model, "model", model)


def _sync_all(model) -> None:
    """Wait for every GPU holding part of the model (one, or several with ``device=auto`` on a multi-GPU host)."""
    for device in model_devices(model):
        attention.sync(device)


def with_cache(module, cache) -> dict:
    """The keyword that hands a cache to ``module.forward``: ``cache`` from transformers 5.24 on (where
    ``past_key_values`` is deprecated, with a warning on every forward, and goes away in 5.40),
    ``past_key_values`` before it."""
    import inspect

    fwd = type(module).forward
    key = getattr(fwd, "_kvbench_cache_kw", None)
    if key is None:
        params = inspect.signature(fwd).parameters
        key = "cache" if "cache" in params else "past_key_values"
        try:
            fwd._kvbench_cache_kw = key
        except AttributeError:  # a builtin or bound method: look it up each time
            pass
    return {key: cache}


@torch.no_grad()
def prefill(model, ids: torch.Tensor, methods: dict[str, Method]) -> tuple[DynamicCache, dict, dict, float]:
    """Full-attention prefill of ``ids`` recording each method's scores. Returns (cache, scores, seconds, prefill_s)."""
    layers, _ = compressed_layers(model)
    cache = DynamicCache()
    device = next(model.parameters()).device
    ids = ids.to(device)
    positions = torch.arange(ids.shape[-1], device=device)[None]
    _sync_all(model)
    t0 = time.perf_counter()
    base = base_model(model)
    rotary = rotary_module(model) if any(m.needs_rotary for m in methods.values()) else None
    with attention.scoring(methods, layers, rotary) as state:  # scores stay on each layer's device
        base(input_ids=ids, position_ids=positions, use_cache=True, **with_cache(base, cache))
    _sync_all(model)
    total = time.perf_counter() - t0
    return cache, state.scores, state.seconds, total - sum(state.seconds.values())


def kept_budget(method: Method, n: int, r: float | None, budget_tokens: int | None) -> int:
    """Context entries one configuration keeps per KV head (all ``n`` for the uncompressed reference)."""
    return n if not method.compresses else n_kept_for(n, r=r, budget_tokens=budget_tokens)


def decode_rule(method: Method, n: int, r: float | None, budget_tokens: int | None,
                decode_budget: str = "fixed") -> DecodeRule | None:
    """A fresh decode rule for one configuration (``decode``'s ``rules`` entries), as its method declares it
    (``Method.decode_rule``), keeping the cache within ``decode_budget`` (``DecodeRule.configure``: fixed or
    ratio); None for prefill-only methods."""
    if not method.compresses:
        return None
    rule = method.decode_rule(n, kept_budget(method, n, r, budget_tokens))
    return rule.configure(decode_budget, n) if rule is not None else None


def has_decode_rule(method: Method, n: int = 2) -> bool:
    """Whether a configuration of ``method`` runs a decode rule (it decodes in batches of its own)."""
    return decode_rule(method, n, 0.5, None) is not None


def num_layers(model) -> int:
    """Decoder layers of the model (what a per-layer budget counts depth over)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(cfg.num_hidden_layers)


def rotary_module(model):
    """The model's rotary embedding module (``model.model.rotary_emb``; multimodal wrappers hold it in their
    language model), or None."""
    base = base_model(model)
    for holder in (base, getattr(base, "language_model", None), getattr(model, "language_model", None)):
        rot = getattr(holder, "rotary_emb", None) if holder is not None else None
        if rot is not None:
            return rot
    return None


def select_positions(
    scores: dict[int, torch.Tensor],
    method: Method,
    n: int,
    r: float | None,
    budget_tokens: int | None,
    policy: str,
    safeguard: float,
    n_layers: int | None = None,
) -> dict[int, list[torch.Tensor]]:
    """Kept positions per compressed layer and KV head for one configuration. Each layer's budget is the
    method's ``layer_budget`` (uniform ``n_kept`` unless the method declares otherwise) over ``n_layers``
    decoder layers (default: the highest scored layer + 1; give the model's count, ``num_layers``)."""
    if not method.compresses:
        return {i: [torch.arange(n, device=s.device)] * s.shape[0] for i, s in scores.items()}
    n_layers = n_layers if n_layers is not None else max(scores, default=-1) + 1
    out = {}
    for i, s in scores.items():
        budget = layer_kept(method, n, r, budget_tokens, i, n_layers)
        out[i] = select(s, budget, policy, safeguard, method.protected(n, budget))
    return out


def layer_kept(method: Method, n: int, r: float | None, budget_tokens: int | None, layer: int, n_layers: int) -> int:
    """Entries each KV head of ``layer`` keeps of an ``n``-token context: the method's ``layer_budget`` around the
    uniform ``n_kept`` (all ``n`` for the uncompressed reference)."""
    if not method.compresses:
        return n
    n_kept = n_kept_for(n, r=r, budget_tokens=budget_tokens)
    if budget_tokens is not None:
        kept = float(min(n, budget_tokens))
    else:
        assert r is not None  # n_kept_for raised if neither was given
        kept = n * (1.0 - r)
    return min(n, max(1, int(method.layer_budget(n, n_kept, kept, layer, n_layers))))


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


def generation_stats(timing: dict, b: int) -> dict:
    """A row's generation columns from ``decode``'s ``timing`` (docs/protocol.md, "Result rows"): ``ttft_s`` (the
    batch's first step: question part + first token, over the compressed cache), ``decode_tokens_per_s`` (the
    row's steps after the first per second of them; NaN with fewer than two steps), ``hit_limit`` (it stopped at
    ``max_new_tokens``, not on EOS or a stop string)."""
    first, steps, row_s = float(timing["first_token_s"]), int(timing["steps"][b]), float(timing["row_s"][b])
    rate = (steps - 1) / (row_s - first) if steps >= 2 and row_s > first else float("nan")
    return {"ttft_s": first, "decode_tokens_per_s": float(rate), "hit_limit": not bool(timing["ended"][b])}


@torch.no_grad()
def decode(
    model,
    tokenizer,
    contexts: list[CompressedContext],
    question_ids: torch.Tensor,
    max_new_tokens: int,
    stop_strings: list[str] | None = None,
    rules: list[DecodeRule | None] | None = None,
    eos: set[int] | None = None,
    timing: dict | None = None,
    session: dict | None = None,
) -> tuple[list[str], list[int], float]:
    """Greedy decoding of one question over several compressed contexts at once (one batch row each).

    ``rules[b]``: the decode rule of row b's configuration (``decode_rule``, e.g. an online eviction), or
    None (keep rows with rules in batches of their own: they use an explicit softmax). ``eos``: the token ids
    that end a row (None: the model's and tokenizer's EOS; an empty set decodes exactly ``max_new_tokens``, for
    timing). Returns (predictions,
    generated token counts, seconds). ``timing``, when given, is filled with ``first_token_s`` (the first step:
    the question part and the first generated token), per row ``row_s`` (seconds until the row ended), ``steps``
    (its forward steps, the ending EOS included) and ``ended`` (True: EOS or a stop string; False: it ran to
    ``max_new_tokens``); ``generation_stats`` turns them into a row's columns. ``session`` (a batch of one row,
    harness/turns.py): an empty dict starts a conversation, which ``decode`` leaves in it (``cache``, ``state``
    with the rule's validity, ``generated`` ids); a later call with that dict continues from that cache, its
    ``question_ids`` fed after every token already there (``contexts`` and ``rules`` are then unused)."""
    device = next(model.parameters()).device
    ev = None
    if rules and any(rule is not None for rule in rules):
        ev = attention.Rules({b: rule for b, rule in enumerate(rules) if rule is not None})
    if session:  # a conversation's next turn: the cache as its last turn left it
        cache, state = session["cache"], session["state"]
        starts = state.appended[:, -1] + 1
    else:  # positions where the input ids are (first device); room for the question and the answer
        cache, state, starts = batch_cache(contexts, ev, device, capacity=question_ids.shape[-1] + max_new_tokens)
    bsz = len(contexts)
    eos = eos_ids(model, tokenizer) if eos is None else set(eos)
    stops = [s for s in (stop_strings or []) if s]
    q = question_ids.to(device).expand(bsz, -1)
    positions = starts[:, None] + torch.arange(q.shape[-1], device=device)[None]
    generated: list[list[int]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    texts = [""] * bsz
    _sync_all(model)
    t0 = time.perf_counter()
    alive = list(range(bsz))  # the original row of each batch row still decoding
    first_s: float | None = None
    row_s: list[float | None] = [None] * bsz
    steps = [0] * bsz
    with attention.masking(state):
        inputs = q
        for _ in range(max_new_tokens):
            state.extend(positions)
            out = model(input_ids=inputs, position_ids=positions, use_cache=True, logits_to_keep=1,
                        **with_cache(model, cache))
            state.evict()
            nxt = out.logits[:, -1].argmax(dim=-1)
            for j, tok in enumerate(nxt.tolist()):
                b = alive[j]
                if done[b]:
                    continue
                steps[b] += 1
                if tok in eos:
                    done[b] = True
                    continue
                generated[b].append(tok)
                if stops:
                    texts[b] = tokenizer.decode(generated[b], skip_special_tokens=True)
                    if any(s in texts[b] for s in stops):
                        done[b] = True
            now = time.perf_counter() - t0  # nxt.tolist() waited for the step
            first_s = now if first_s is None else first_s
            row_s = [now if d and t is None else t for d, t in zip(done, row_s)]
            if all(done):
                break
            inputs = nxt[:, None]
            positions = positions[:, -1:] + 1
            keep = [j for j, b in enumerate(alive) if not done[b]]
            if len(keep) < len(alive) and ev is None:  # finished rows leave the batch (no compute on them)
                keep_rows(cache, state, keep)
                rows = torch.tensor(keep, dtype=torch.long, device=device)
                inputs, positions = inputs.index_select(0, rows), positions.index_select(0, rows)
                alive = [alive[j] for j in keep]
    _sync_all(model)
    seconds = time.perf_counter() - t0
    if session is not None:
        session.update(cache=cache, state=state, generated=generated)
    if timing is not None:
        timing.update(first_token_s=first_s if first_s is not None else seconds, steps=steps, ended=list(done),
                      row_s=[seconds if t is None else t for t in row_s])
    preds = []
    for b in range(bsz):
        text = tokenizer.decode(generated[b], skip_special_tokens=True)
        for s in stops:
            if s in text:
                text = text[: text.index(s)]
        preds.append(text)
    return preds, [len(g) for g in generated], seconds
