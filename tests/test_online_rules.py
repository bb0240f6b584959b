"""Decode-time budgets: StreamingLLM's streaming window (methods/streamingllm.py ``StreamingWindow``)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from harness.attention import LayerMask, Masking, Rules
from harness.cache import compress
from harness.protocol import compressed_layers, decode, prefill, select_positions
from methods import make_method
from methods.streamingllm import StreamingWindow


class _Tok:
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _evict(rule, valid):
    ev = Rules({0: rule}, valid={0: valid[None]})
    n = valid.shape[-1]
    Masking({0: LayerMask(torch.arange(n)[None, None], None)}, torch.zeros(1, 0, dtype=torch.long), ev).evict()
    return ev.valid[0][0].tolist()


def test_window_keeps_the_sinks_and_the_most_recent_entries():
    # budget 5 with 2 sinks: of 8 valid entries keep the first 2 and the last 3
    rule = StreamingWindow(n_sink=2, budget={0: torch.tensor([5])})
    assert _evict(rule, torch.ones(1, 8, dtype=torch.bool)) == [[True, True, False, False, False, True, True, True]]
    # invalid entries (batch padding, entries evicted before) do not count: entries 1 and 4 are already gone
    valid = torch.tensor([[True, False, True, True, False, True, True, True]])
    # 6 valid (0, 2, 3, 5, 6, 7): sinks 0 and 2, recent 5, 6, 7; entry 3 goes
    assert _evict(rule, valid) == [[True, False, True, False, False, True, True, True]]
    # at or under the budget nothing changes
    assert _evict(rule, torch.tensor([[True, True, False, True, True, True]])) == [[True, True, False, True, True, True]]


def test_window_per_head_budgets():
    # two heads with different budgets (an adaptive split): each keeps its own share
    rule = StreamingWindow(n_sink=1, budget={0: torch.tensor([2, 4])})
    out = _evict(rule, torch.ones(2, 6, dtype=torch.bool))
    assert out == [[True, False, False, False, False, True], [True, False, False, True, True, True]]


def test_streamingllm_online_decodes_at_its_budget(monkeypatch):
    """r = 0.5 over 40 tokens: 20 entries per head after compression and after every decode step, and the
    entries held at the end are the 4 sinks and the 16 most recent positions."""
    import harness.attention as A
    import harness.protocol as P

    monkeypatch.setattr(P, "eos_ids", lambda model, tok: set())
    seen = []
    original = A.Masking.evict

    def spy(self):
        original(self)
        seen.append({i: v.sum(-1).tolist() for i, v in self.rules.valid.items()})
        last.update({i: v.clone() for i, v in self.rules.valid.items()})

    last: dict = {}
    monkeypatch.setattr(A.Masking, "evict", spy)
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(3))
    q = torch.randint(3, 1000, (1, 4))
    m = make_method("streamingllm", decode_window=True)
    cache, scores, _, _ = prefill(model, ctx, {"s": m})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["s"], m, 40, 0.5, None, "uniform", 0.2)
    c = compress(cache, kept, 40, sliding, scores=scores["s"])
    rule = m.decode_rule(40, 20)
    assert isinstance(rule, StreamingWindow) and rule.n_sink == 4
    decode(model, _Tok(), [c], q, 5, rules=[rule])
    assert len(seen) == 5 and all(count == [[20, 20]] for step in seen for count in step.values())
    # entries are in position order (20 kept context entries, then the appended ones): the 4 sinks and the
    # 16 most recent entries are the ones left
    for valid in last.values():
        slots = valid.shape[-1]
        want = [True] * 4 + [False] * (slots - 20) + [True] * 16
        assert all(head == want for head in valid[0].tolist())


def test_no_rule_unless_asked_and_no_rerotate():
    assert make_method("streamingllm").decode_rule(40, 20) is None
    with pytest.raises(ValueError, match="rerotate"):
        make_method("streamingllm", decode_window=True, rerotate=True).decode_rule(40, 20)
