"""Re-scoring every N decode steps (methods/rescore.py ``Rescore``) and the decode budget semantics
(``DecodeRule.limit``: fixed or ratio), by hand on tiny caches and through the engine on a tiny model."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from harness.attention import LayerMask, Masking, Rules
from methods import make_method
from methods.base import DecodeRule
from methods.knorm import KNorm
from methods.rescore import Rescore


def _evict(rule, valid, keys):
    """One engine evict of a one-row batch at layer 0, the row's keys handed to its rule."""
    ev = Rules({0: rule}, valid={0: valid[None]}, kv={0: (keys[None], keys[None])})
    n = valid.shape[-1]
    Masking({0: LayerMask(torch.arange(n)[None, None], None)}, torch.zeros(1, 0, dtype=torch.long), ev).evict()
    assert ev.kv == {}  # the step's keys are not held after it
    return ev.valid[0][0].tolist()


def _keys(norms):
    """(1, T, 2) keys along the first axis with the given norms."""
    return torch.tensor([[[float(x), 0.0] for x in norms]])


def test_keydiff_rescoring_keeps_the_keys_least_like_the_mean_direction():
    # unit keys (1,0), (1,0), (1,0), (0,1): mean direction (0.75, 0.25); cosines 0.949 x 3 and 0.316, so the
    # scores -cos rank (0,1) first, then the three equal ones by position: budget 2 keeps entries 3 and 0
    keys = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    rule = Rescore(make_method("keydiff"), every=1, budget={0: torch.tensor([2])})
    assert _evict(rule, torch.ones(1, 4, dtype=torch.bool), keys) == [[True, False, False, True]]


def test_knorm_rescoring_ranks_the_valid_entries_only():
    # norms 5, 1, 3, 2, 4, 0.5 with entry 5 already evicted: 5 valid, budget 3 keeps the lowest norms 1, 2, 3
    rule = Rescore(make_method("knorm"), every=1, budget={0: torch.tensor([3])})
    valid = torch.tensor([[True, True, True, True, True, False]])
    assert _evict(rule, valid, _keys([5, 1, 3, 2, 4, 0.5])) == [[False, True, True, True, False, False]]
    # at or under the budget nothing changes
    assert _evict(rule, torch.tensor([[True, False, True, False]]), _keys([5, 1, 3, 2])) == \
        [[True, False, True, False]]


def test_protected_spans_are_kept_first():
    class SinkKNorm(KNorm):
        def protected(self, n, n_kept):
            return (1, 0)  # the first entry, whatever its score

    rule = Rescore(SinkKNorm(), every=1, budget={0: torch.tensor([2])})
    assert _evict(rule, torch.ones(1, 4, dtype=torch.bool), _keys([5, 1, 3, 2])) == [[True, True, False, False]]
    # NestedKV protects its 4 sinks: the first 4 valid entries survive a re-scoring down to 6
    nested = Rescore(make_method("nestedkv"), every=1, budget={0: torch.tensor([6])})
    keys = torch.randn(1, 12, 8, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, 1] = False  # the sinks are the first four *valid* entries: 0, 2, 3, 4
    out = _evict(nested, valid, keys)[0]
    assert sum(out) == 6 and out[0] and out[2] and out[3] and out[4] and not out[1]


def test_rescoring_happens_every_n_steps():
    rule = Rescore(make_method("knorm"), every=3, budget={0: torch.tensor([2])})
    keys = _keys([5, 1, 3, 2])
    full = torch.ones(1, 4, dtype=torch.bool)
    assert _evict(rule, full, keys) == [[True] * 4]  # step 1
    assert _evict(rule, full, keys) == [[True] * 4]  # step 2
    assert _evict(rule, full, keys) == [[False, True, False, True]]  # step 3: norms 1 and 2


def test_only_key_only_methods_and_positive_intervals():
    with pytest.raises(ValueError, match="key-only method.*queries"):
        Rescore(make_method("snapkv"), every=1)
    with pytest.raises(ValueError, match="key-only method.*queries and the rotary embedding"):
        Rescore(make_method("expected_attention"), every=1)
    with pytest.raises(ValueError, match="positive integer"):
        Rescore(make_method("keydiff"), every=0)
    with pytest.raises(ValueError, match="integer >= 0"):
        make_method("keydiff", decode_rescore_every=-1)
    with pytest.raises(TypeError):  # a method that needs queries has no such parameter
        make_method("snapkv", decode_rescore_every=1)
    assert make_method("keydiff").decode_rule(10, 5) is None
    rule = make_method("nestedkv", decode_rescore_every=10).decode_rule(10, 5)
    assert isinstance(rule, Rescore) and rule.every == 10 and rule.needs_kv


def test_configs_declare_the_rule():
    from harness.plan import build_method, load_method_config

    for name, cls in (("keydiff_online", "keydiff"), ("nestedkv_online", "nestedkv")):
        label, method, _, _ = build_method(load_method_config(name))
        assert (label, method.name, method.decode_rescore_every) == (name, cls, 10)
        assert isinstance(method.decode_rule(100, 50), Rescore)


def test_ratio_budget_grows_with_the_tokens_seen():
    budget = torch.tensor([5, 3])  # two heads given 5 and 3 of n = 10 context tokens
    fixed = DecodeRule().configure("fixed", 10)
    ratio = DecodeRule().configure("ratio", 10)
    assert fixed.limit(budget, 4).tolist() == [5, 3]
    # floor(b (10 + m) / 10): m = 0 -> 5, 3; m = 2 -> 6, 3 (3.6); m = 4 -> 7, 4 (4.2); m = 10 -> 10, 6
    assert [ratio.limit(budget, m).tolist() for m in (0, 2, 4, 10)] == [[5, 3], [6, 3], [7, 4], [10, 6]]
    with pytest.raises(ValueError, match="decode_budget must be one of fixed, ratio"):
        DecodeRule().configure("grow", 10)


def _counts(monkeypatch, every: int, decode_budget: str = "fixed", name: str = "keydiff"):
    """Valid entries per (layer, head) after each of 5 decode steps of a 4-token question at r = 0.5 over a
    40-token context (20 kept per head), with the method re-scoring every ``every`` steps."""
    import harness.attention as A
    import harness.protocol as P
    from harness.cache import compress
    from harness.protocol import compressed_layers, decode, decode_rule, prefill, select_positions

    monkeypatch.setattr(P, "eos_ids", lambda model, tok: set())
    seen = []
    original = A.Masking.evict

    def spy(self):
        original(self)
        seen.append(sorted({tuple(v[0].sum(-1).tolist()) for v in self.rules.valid.values()}))

    monkeypatch.setattr(A.Masking, "evict", spy)
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(3))
    q = torch.randint(3, 1000, (1, 4), generator=torch.Generator().manual_seed(4))
    m = make_method(name, decode_rescore_every=every)
    cache, scores, _, _ = prefill(model, ctx, {"m": m})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["m"], m, 40, 0.5, None, "uniform", 0.2)
    rule = decode_rule(m, 40, 0.5, None, decode_budget)

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    decode(model, Tok(), [compress(cache, kept, 40, sliding, scores=scores["m"])], q, 5, rules=[rule])
    return seen


def test_the_cache_stays_at_its_budget_while_decoding(monkeypatch):
    # every step: 20 entries in every head of every layer after each step (4 question tokens, then 1 a step)
    assert _counts(monkeypatch, 1) == [[(20, 20)]] * 5
    # every 2 steps: 24 after step 1 (no re-scoring), 20 after step 2, 21, 20, 21
    assert _counts(monkeypatch, 2) == [[(24, 24)], [(20, 20)], [(21, 21)], [(20, 20)], [(21, 21)]]
    assert _counts(monkeypatch, 1, name="nestedkv") == [[(20, 20)]] * 5


def test_ratio_budget_through_the_engine(monkeypatch):
    # floor(20 (40 + m) / 40) with m = 4, 5, 6, 7, 8 tokens appended after each step: 22, 22, 23, 23, 24
    assert _counts(monkeypatch, 1, "ratio") == [[(22, 22)], [(22, 22)], [(23, 23)], [(23, 23)], [(24, 24)]]
