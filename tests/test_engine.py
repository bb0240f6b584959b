"""The protocol and the sweep engine on tiny random models: r=0 equals generate, shared sweep equals
separate runs, batched decode equals sequential, caches shrink physically, positions are right."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from harness.cache import compress, full_cache_bytes
from harness.protocol import compressed_layers, decode, middle_truncate, prefill, select_positions
from methods import make_method


class _Tok:
    """A minimal tokenizer for decode (ids -> text) on tiny models."""

    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _greedy_reference(model, prompt: torch.Tensor, steps: int) -> list[int]:
    out = model.generate(prompt, max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, prompt.shape[-1]:].tolist()


def _no_eos(monkeypatch):
    import harness.protocol as P

    monkeypatch.setattr(P, "eos_ids", lambda model, tok: set())


def test_r0_reproduces_generate(tiny_arch, monkeypatch):
    _no_eos(monkeypatch)
    model = tiny_model(tiny_arch)
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(3, 1000, (1, 70), generator=g)
    q = torch.randint(3, 1000, (1, 6), generator=g)
    ref = _greedy_reference(model, torch.cat([ctx, q], -1), 10)
    full = make_method("full")
    cache, scores, _, _ = prefill(model, ctx, {"f": full})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["f"], full, 70, 0.0, None, "uniform", 0.2)
    preds, n_gen, _ = decode(model, _Tok(), [compress(cache, kept, 70, sliding)], q, 10)
    assert preds[0] == " ".join(map(str, ref))
    assert n_gen == [10]


def test_batched_decode_equals_sequential(tiny_arch, monkeypatch):
    _no_eos(monkeypatch)
    model = tiny_model(tiny_arch)
    g = torch.Generator().manual_seed(2)
    ctx = torch.randint(3, 1000, (1, 90), generator=g)
    q = torch.randint(3, 1000, (1, 5), generator=g)
    methods = {"kd": make_method("keydiff"), "sl": make_method("streamingllm"), "f": make_method("full")}
    cache, scores, _, _ = prefill(model, ctx, methods)
    _, sliding = compressed_layers(model)
    configs = [("f", 0.0, "uniform"), ("kd", 0.5, "uniform"), ("kd", 0.75, "adaptive"), ("sl", 0.9, "uniform")]
    ctxs = [
        compress(cache, select_positions(scores[k], methods[k], 90, r, None, p, 0.2), 90, sliding)
        for k, r, p in configs
    ]
    batched, _, _ = decode(model, _Tok(), ctxs, q, 8)
    single = [decode(model, _Tok(), [c], q, 8)[0][0] for c in ctxs]
    assert batched == single

    # rows that end early leave the batch; the rows still decoding must not notice
    seqs = [[int(t) for t in s.split()] for s in single]
    eos = {seqs[1][2], seqs[3][5]}  # row 1 ends by step 3, row 3 by step 6
    expected = []
    for s in seqs:
        cut = next((i for i, t in enumerate(s) if t in eos), len(s))
        expected.append((" ".join(map(str, s[:cut])), cut))
    lengths = sorted({n for _, n in expected})
    assert len(lengths) >= 2 and lengths[0] < 8  # the batch really shrinks
    batched, n_gen, _ = decode(model, _Tok(), ctxs, q, 8, eos=eos)
    assert list(zip(batched, n_gen)) == expected
    assert [decode(model, _Tok(), [c], q, 8, eos=eos)[0][0] for c in ctxs] == batched


def test_dropping_finished_rows_keeps_the_others(tiny_arch):
    from harness.cache import batch_cache, keep_rows

    model = tiny_model(tiny_arch)
    ctx = torch.randint(3, 1000, (1, 60), generator=torch.Generator().manual_seed(4))
    kd = make_method("keydiff")
    cache, scores, _, _ = prefill(model, ctx, {"kd": kd})
    _, sliding = compressed_layers(model)
    ctxs = [compress(cache, select_positions(scores["kd"], kd, 60, r, None, "adaptive", 0.2), 60, sliding)
            for r in (0.25, 0.5, 0.75)]
    batch, state, _ = batch_cache(ctxs)
    alone, alone_state, _ = batch_cache([ctxs[2], ctxs[0]])
    keep_rows(batch, state, [2, 0])
    for a, b in zip(batch.layers, alone.layers):
        (ka, va), (kb, vb) = a.materialize(), b.materialize()
        assert torch.equal(ka, kb) and torch.equal(va, vb)
    for idx, meta in state.layers.items():
        assert torch.equal(meta.positions, alone_state.layers[idx].positions)
        va, vb = meta.valid, alone_state.layers[idx].valid
        assert (va is None) == (vb is None) and (va is None or torch.equal(va, vb))
    assert state.appended.shape == (2, 0)


def test_uniform_cache_shrinks_physically():
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 100))
    kd = make_method("keydiff")
    cache, scores, _, _ = prefill(model, ctx, {"kd": kd})
    layers, sliding = compressed_layers(model)
    for r in (0.25, 0.5, 0.9):
        c = compress(cache, select_positions(scores["kd"], kd, 100, r, None, "uniform", 0.2), 100, sliding)
        n_kept = max(1, int(100 * (1 - r)))  # kvpress's budget on floats: r=0.9 keeps 9 of 100
        assert c.kv_bytes == full_cache_bytes(cache, sliding) * n_kept // 100
        assert c.kept_fraction == pytest.approx(n_kept / 100)
        assert not any(layer.ragged for layer in c.layers)
        assert c.kv_bytes / full_cache_bytes(cache, sliding) == pytest.approx(c.kept_fraction, abs=1e-9)


def test_adaptive_cache_is_ragged_not_padded():
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 100))
    kd = make_method("keydiff")
    cache, scores, _, _ = prefill(model, ctx, {"kd": kd})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["kd"], kd, 100, 0.75, None, "adaptive", 0.2)
    c = compress(cache, kept, 100, sliding)
    assert any(layer.ragged for layer in c.layers)  # a random model's heads do split the budget unevenly
    for idx, layer in enumerate(c.layers):
        lengths = [len(ix) for ix in kept[idx]]
        assert sum(lengths) == 2 * 25  # layer budget H_kv * n_kept
        if not layer.ragged:
            continue
        assert layer.lengths == tuple(lengths) and layer.length == max(lengths) < 100
        assert layer.keys.shape == layer.values.shape == (50, 16)  # (T, d): the kept entries, no padding
        # head h's entries are rows offset[h] .. offset[h] + lengths[h], in position order
        full_k = cache.layers[idx].keys[0]  # (H_kv, n, d)
        assert torch.equal(layer.keys[: lengths[0]], full_k[0, kept[idx][0]])
        assert torch.equal(layer.keys[lengths[0] :], full_k[1, kept[idx][1]])
        assert layer.positions.tolist() == torch.cat(kept[idx]).tolist()
        keys, _ = layer.padded()  # the layout the decode's attention sees
        _, valid, _ = layer.layout()
        assert keys.shape == (1, 2, max(lengths), 16) and valid[0].sum(-1).tolist() == lengths
    # bytes held: keys and values of the kept entries plus one int64 offset per head
    full = full_cache_bytes(cache, sliding)
    assert c.kv_bytes == full * 25 // 100 + 8 * 2 * len(c.layers) - 8 * 2 * sum(not x.ragged for x in c.layers)
    assert abs(c.kv_bytes / full - c.kept_fraction) < 0.01


def test_gemma_sliding_layers_keep_their_window():
    model = tiny_model("gemma3")
    layers, sliding = compressed_layers(model)
    assert layers == {5} and sliding[0] == 32 and sliding[5] is None
    ctx = torch.randint(3, 1000, (1, 80))
    kd = make_method("keydiff")
    cache, scores, _, _ = prefill(model, ctx, {"kd": kd})
    assert set(scores["kd"]) == {5}  # only the global layer is scored
    c = compress(cache, select_positions(scores["kd"], kd, 80, 0.5, None, "uniform", 0.2), 80, sliding)
    assert [layer.length for layer in c.layers] == [32] * 5 + [40]
    assert c.layers[0].positions[0, 0].tolist() == list(range(48, 80))


def test_streamingllm_rerotate_matches_a_fresh_prefill_of_the_kept_tokens(monkeypatch):
    """Re-rotated keys equal the keys the model computes when the kept tokens sit at 0..n_kept-1 (layer 0)."""
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 60))
    sl = make_method("streamingllm", rerotate=True)
    cache, scores, _, _ = prefill(model, ctx, {"s": sl})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["s"], sl, 60, 0.5, None, "uniform", 0.2)
    c = compress(cache, kept, 60, sliding, rerotate_to_cache=True, rotary_emb=model.model.rotary_emb)
    assert c.next_position == 30
    idx = kept[0][0]
    fresh, _, _, _ = prefill(model, ctx[:, idx], {})
    torch.testing.assert_close(c.layers[0].keys, fresh.layers[0].keys, rtol=1e-4, atol=1e-5)


def test_middle_truncation_keeps_both_ends():
    ids = torch.arange(10)[None]
    assert middle_truncate(ids, 5).tolist() == [[0, 1, 7, 8, 9]]
    assert middle_truncate(ids, 20).tolist() == [list(range(10))]


def test_eviction_drops_lowest_non_recent_entries():
    """H2O's decode rule (methods/h2o.py), run through the engine's generic ``Rules`` state."""
    from harness.attention import LayerMask, Masking, Rules
    from methods.h2o import H2OEviction

    rule = H2OEviction(recent=1, budget={0: torch.tensor([3])})
    rule.acc[0] = torch.tensor([[5.0, 1.0, 3.0, 0.5, 0.1]])  # (H=1, T=5); last entry is the recent one
    rule.seen[0] = torch.ones(1, 5)
    ev = Rules({0: rule}, valid={0: torch.ones(1, 1, 5, dtype=torch.bool)})
    state = Masking({0: LayerMask(torch.arange(5)[None, None], None)}, torch.zeros(1, 0, dtype=torch.long), ev)
    state.evict()
    # 5 valid, budget 3: evict the two lowest-scoring entries outside the most recent one (1.0 and 0.5)
    assert ev.valid[0][0, 0].tolist() == [True, False, True, False, True]


def _h2o_online_counts(monkeypatch, policy: str, uneven: bool = False):
    """Decode 5 tokens with H2O's online eviction at r = 0.5 over a 40-token context; returns the kept shares
    per (layer, head) after compression and the valid entries per (layer, head) after every step."""
    import harness.attention as A

    _no_eos(monkeypatch)
    seen = []
    original = A.Masking.evict

    def spy(self):
        original(self)
        seen.append({i: v.sum(-1).tolist() for i, v in self.rules.valid.items()})

    monkeypatch.setattr(A.Masking, "evict", spy)
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(5))
    q = torch.randint(3, 1000, (1, 4))
    h2o = make_method("h2o", decode_eviction=True)
    cache, scores, _, _ = prefill(model, ctx, {"h": h2o})
    _, sliding = compressed_layers(model)
    if uneven:  # a random model's heads score alike: make head 0 the one that matters
        for s in scores["h"].values():
            s[0] *= 100.0
    kept = select_positions(scores["h"], h2o, 40, 0.5, None, policy, 0.2)
    c = compress(cache, kept, 40, sliding, scores=scores["h"])
    rule = h2o.decode_rule(40, 20)
    assert (rule.recent, rule.normalize) == (10, False)
    decode(model, _Tok(), [c], q, 5, rules=[rule])
    assert len(seen) == 5
    return {layer: [[len(p) for p in heads]] for layer, heads in kept.items()}, seen  # (B=1, H_kv)


def test_h2o_online_keeps_the_logical_cache_at_budget(monkeypatch):
    _, seen = _h2o_online_counts(monkeypatch, "uniform")
    assert all(count == [[20, 20]] for step in seen for count in step.values())


def test_h2o_online_keeps_each_heads_adaptive_share(monkeypatch):
    """Under an adaptive budget, eviction keeps every head at the share compression gave it (the layer total
    stays at n_kept x heads); it does not trim the larger heads to n_kept."""
    shares, seen = _h2o_online_counts(monkeypatch, "adaptive", uneven=True)
    assert any(len(set(s[0])) > 1 for s in shares.values())  # the split really is uneven
    assert all(step[layer] == shares[layer] for step in seen for layer in step)
    assert all(sum(step[layer][0]) == 20 * 2 for step in seen for layer in step)


def test_eviction_with_normalize_ranks_by_mean_attention():
    from harness.attention import LayerMask, Masking, Rules
    from methods.h2o import H2OEviction

    def evicted(normalize):
        rule = H2OEviction(recent=1, normalize=normalize, budget={0: torch.tensor([3])})
        rule.acc[0] = torch.tensor([[5.0, 1.0, 3.0, 0.5, 0.1]])  # raw accumulated attention F
        rule.seen[0] = torch.tensor([[10.0, 1.0, 3.0, 1.0, 1.0]])  # queries that saw each entry
        ev = Rules({0: rule}, valid={0: torch.ones(1, 1, 5, dtype=torch.bool)})
        Masking({0: LayerMask(torch.arange(5)[None, None], None)}, torch.zeros(1, 0, dtype=torch.long), ev).evict()
        return ev.valid[0][0, 0].tolist()

    # raw F: drop 1.0 and 0.5; F / seen = [0.5, 1, 1, 0.5, 0.1]: drop the two 0.5s (the recent 0.1 stays)
    assert evicted(False) == [True, False, True, False, True]
    assert evicted(True) == [False, True, True, False, True]


def test_online_normalize_accumulates_the_same_raw_sums(monkeypatch):
    """normalize=true starts from F(j) / (n - j); the eviction state turns it back into F(j) and counts the
    queries that saw each entry, so its sums equal those of normalize=false on the same kept entries."""
    import harness.attention as A

    _no_eos(monkeypatch)
    model = tiny_model("llama")
    ctx = torch.randint(3, 1000, (1, 40), generator=torch.Generator().manual_seed(6))
    q = torch.randint(3, 1000, (1, 4))
    raw, norm = make_method("h2o", decode_eviction=True), make_method("h2o", decode_eviction=True, normalize=True)
    cache, scores, _, _ = prefill(model, ctx, {"raw": raw, "norm": norm})
    _, sliding = compressed_layers(model)
    kept = select_positions(scores["raw"], raw, 40, 0.5, None, "uniform", 0.2)
    states = {}
    original = A.Masking.evict

    for name in ("raw", "norm"):
        def spy(self, name=name):
            rule = self.rules.rules[0]
            states.setdefault(name, {i: (a[None].clone(), rule.seen[i][None].clone()) for i, a in rule.acc.items()})
            original(self)

        monkeypatch.setattr(A.Masking, "evict", spy)
        c = compress(cache, kept, 40, sliding, scores=scores[name])
        decode(model, _Tok(), [c], q, 1, rules=[{"raw": raw, "norm": norm}[name].decode_rule(40, 20)])
    for layer, (acc, _seen) in states["raw"].items():
        torch.testing.assert_close(states["norm"][layer][0], acc, rtol=1e-5, atol=1e-6)
        positions = torch.stack(kept[layer])  # (H_kv, 20) original positions of the kept entries
        expected = (40 - positions) + q.shape[-1]  # prefill queries, then every question token sees them
        assert states["norm"][layer][1][0, :, :20].tolist() == expected.float().tolist()
