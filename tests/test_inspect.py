"""harness.inspect: needle token spans on a real RULER record; kept_positions for every method config."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

import harness
from harness.inspect import char_spans_to_tokens, needle_token_spans
from harness.plan import build_method, load_method_config, method_config_names
from harness.protocol import encode_context
from tasks import make_task


def test_char_spans_to_tokens():
    offsets = [(0, 0), (0, 3), (3, 4), (4, 9), (9, 10), (10, 15)]  # a special token, then words
    assert char_spans_to_tokens(offsets, [(4, 9)]) == [(3, 4)]
    assert char_spans_to_tokens(offsets, [(2, 5)]) == [(1, 4)]  # partial overlaps count
    assert char_spans_to_tokens(offsets, [(0, 2)], shift=4) == [(3, 4)]
    assert char_spans_to_tokens(offsets, [(3, 4), (10, 15)]) == [(2, 3), (5, 6)]
    with pytest.raises(ValueError):
        char_spans_to_tokens(offsets, [(20, 30)])


def test_needle_token_spans_real_ruler_record(smollm_tokenizer):
    tok = smollm_tokenizer
    rec = make_task("ruler", length=1024, tasks=["niah_single_1"]).load(tok, 1, 42).records[0]
    spans = needle_token_spans(tok, rec)
    assert harness.needle_token_spans(tok, rec) == spans
    assert len(spans) == len(rec.extra["needle_spans"]) == 1
    ids = encode_context(tok, rec).context_ids[0]
    (a, b), = spans
    assert 0 < a < b <= len(ids)
    text = tok.decode(ids[a:b])
    assert rec.answers[0] in text
    # the span is tight: the needle sentence, not the noise around it
    c0, c1 = rec.extra["needle_spans"][0]
    needle = rec.context[c0:c1]
    assert text.strip() == needle.strip()
    assert rec.answers[0] not in tok.decode(ids[:a]) and rec.answers[0] not in tok.decode(ids[b:])
    # it sits at the record's depth (fraction of the context characters)
    assert abs(a / len(ids) - rec.extra["depth"]) < 0.1


def _tiny_ids(n: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 49152, (1, n), generator=g)


@pytest.mark.parametrize("name", method_config_names())
def test_kept_positions_every_method_config(name):
    model = tiny_model("llama")
    cfg = model.config
    n, r = 96, 0.75
    ids = _tiny_ids(n)
    _, method, policy, _ = build_method(load_method_config(name))
    kept = harness.kept_positions(model, ids, name, r=r)
    assert len(kept) == cfg.num_hidden_layers
    n_kept = max(1, int(n * (1 - r)))
    for layer in kept:
        assert len(layer) == cfg.num_key_value_heads
        for pos in layer:
            assert pos.dtype == torch.int64 and pos.dim() == 1
            assert torch.all(pos[1:] > pos[:-1]), "sorted, no repeats"
            assert pos.numel() == 0 or (pos.min() >= 0 and pos.max() < n)
        sizes = [p.numel() for p in layer]
        if not method.compresses:
            assert sizes == [n] * cfg.num_key_value_heads
        elif policy == "uniform":
            assert sizes == [n_kept] * cfg.num_key_value_heads
        else:  # adaptive: heads differ, the layer total is the uniform total
            assert sum(sizes) == cfg.num_key_value_heads * n_kept
