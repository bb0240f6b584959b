"""Compressors (docs/methods.md): hand-worked cases that break if a formula changes."""

from __future__ import annotations

import dataclasses
import glob
import math

import pytest
import torch
from omegaconf import OmegaConf

from methods import LayerInputs, Method, available, make_method
from methods.attention import attention_column_sums, column_sums, window_attention
from methods.budget import select
from methods.keydiff import keydiff_scores
from methods.nestedkv import (
    NestedKV,
    anomaly,
    blend_weights,
    block_anchor,
    block_size_for,
    contrast,
    minmax,
    rank_normalize,
    surprise_gate,
    unit_keys,
    window_anchor,
)
from methods.snapkv import SnapKV, pool_votes

E1 = [1.0, 0.0]
E2 = [0.0, 1.0]


def layer_of(keys, queries=None, scaling=1.0):
    keys = torch.as_tensor(keys, dtype=torch.float32) if not torch.is_tensor(keys) else keys
    if queries is not None and not torch.is_tensor(queries):
        queries = torch.as_tensor(queries, dtype=torch.float32)
    return LayerInputs(layer_idx=0, keys=keys, values=keys.clone(), queries=queries, scaling=scaling)


def naive_attention(q, k, scaling):
    """(H_q, n, n) causal softmax attention with explicit loops over heads (query head h -> KV head h // G)."""
    h_q, n, _ = q.shape
    g = h_q // k.shape[0]
    out = torch.zeros(h_q, n, n, dtype=torch.float64)
    for h in range(h_q):
        logits = q[h].double() @ k[h // g].double().T * scaling
        for i in range(n):
            out[h, i, : i + 1] = torch.softmax(logits[i, : i + 1], dim=0)
    return out


# ---- registry and configs ---------------------------------------------------------------------------------


def test_registry_and_configs_instantiate():
    assert {"h2o", "snapkv", "nestedkv", "keydiff", "streamingllm", "full"} <= set(available())
    from harness.plan import load_method_config

    names = {}
    for path in sorted(glob.glob("conf/method/*.yaml")):
        with open(path) as fh:
            assert fh.readline().startswith("# "), f"{path}: first line must be a one-line comment"
        cfg = OmegaConf.to_container(load_method_config(path.rsplit("/", 1)[-1].removesuffix(".yaml")))  # defaults: too
        assert cfg["budget_policy"] in ("uniform", "adaptive")
        method = make_method(cfg["method"], **cfg["params"])
        names[cfg["name"]] = (cfg, method)
    assert names["nestedkv"][0]["budget_policy"] == "adaptive" and names["nestedkv"][0]["safeguard"] == 0.2
    assert names["nestedkv_uniform"][0]["budget_policy"] == "uniform"
    assert names["nestedkv_uniform"][1] == names["nestedkv"][1]  # same score, other policy
    assert names["keydiff_adaptive"][0]["budget_policy"] == "adaptive"
    assert names["h2o_online"][1].decode_eviction and not names["h2o"][1].decode_eviction
    assert names["streamingllm_rerotate"][1].rerotate and not names["streamingllm"][1].rerotate
    paper = names["snapkv_paper"][1]
    assert (paper.window_size, paper.kernel_size, paper.pooling) == (32, 7, "max")
    kvp = names["snapkv"][1]
    assert (kvp.window_size, kvp.kernel_size, kvp.pooling) == (64, 5, "avg")


# ---- KeyDiff and StreamingLLM -----------------------------------------------------------------------------


def test_keydiff_outlier_hand():
    # three keys along e1 (different lengths), one along e2: mu = (0.75, 0.25), |mu| = sqrt(10)/4
    keys = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [5.0, 0.0]]])
    s = keydiff_scores(keys)[0]
    mu_norm = math.sqrt(10) / 4
    expected = torch.tensor([-0.75, -0.25, -0.75, -0.75]) / mu_norm
    assert torch.allclose(s, expected, atol=1e-6)
    assert select(s[None], 1, "uniform")[0].tolist() == [1]


def test_streamingllm_keeps_sinks_and_recent():
    m = make_method("streamingllm")
    layer = layer_of(torch.randn(2, 20, 4))
    kept = select(m.score(layer), 8, "uniform", protected=m.protected(20, 8))
    assert [k.tolist() for k in kept] == [[0, 1, 2, 3, 16, 17, 18, 19]] * 2
    kept = select(m.score(layer), 3, "uniform", protected=m.protected(20, 3))
    assert kept[0].tolist() == [0, 1, 2]


# ---- shared attention statistics --------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 37, 50, 64])
def test_chunked_column_sums_equal_dense(block_size):
    torch.manual_seed(0)
    n = 37
    q, k = torch.randn(4, n, 8), torch.randn(2, n, 8)  # GQA: 4 query heads, 2 KV heads
    dense = naive_attention(q, k, 0.35).sum(dim=1)  # (H_q, n): sum over query rows
    got = column_sums(q, k, 0.35, block_size)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), dense, rtol=1e-6, atol=1e-6)


def test_column_sums_bf16_inputs_softmax_in_float32():
    torch.manual_seed(1)
    q, k = torch.randn(3, 20, 8).bfloat16(), torch.randn(1, 20, 8).bfloat16()
    got = column_sums(q, k, 0.5, 6)
    assert got.dtype == torch.float32
    dense = naive_attention(q.float(), k.float(), 0.5).sum(dim=1)
    assert torch.allclose(got.double(), dense, rtol=1e-6, atol=1e-6)


def test_column_sums_memoised_and_normalized():
    torch.manual_seed(2)
    layer = layer_of(torch.randn(1, 9, 4), torch.randn(2, 9, 4), 0.5)
    raw = attention_column_sums(layer, block_size=4)
    assert attention_column_sums(layer, block_size=2) is raw  # memoised, block size irrelevant
    norm = attention_column_sums(layer, normalize=True)
    assert torch.allclose(norm, raw / torch.arange(9, 0, -1).float())


@pytest.mark.parametrize("window", [1, 4, 16, 25])
def test_window_attention_equals_dense(window):
    torch.manual_seed(3)
    n = 16
    layer = layer_of(torch.randn(2, n, 8), torch.randn(4, n, 8), 0.3)
    dense = naive_attention(layer.queries, layer.keys, 0.3)
    w = min(window, n)
    got = window_attention(layer, window)
    assert got.shape == (4, w, n) and got.dtype == torch.float32
    assert torch.allclose(got.double(), dense[:, n - w :, :], atol=1e-6)


def test_window_attention_memo_slices_larger_window():
    torch.manual_seed(4)
    layer = layer_of(torch.randn(1, 12, 4), torch.randn(1, 12, 4))
    big = window_attention(layer, 8)
    small = window_attention(layer, 3)
    assert small.data_ptr() == big[:, 5:, :].data_ptr()
    assert torch.allclose(small.double(), naive_attention(layer.queries, layer.keys, 1.0)[:, 9:, :], atol=1e-6)


# ---- H2O --------------------------------------------------------------------------------------------------


def h2o_hand_layer():
    # d=1, scaling 1: q = (0, 1, 1), k = (0, ln 3, 0)
    # row 0: [1]; row 1: logits [0, ln3] -> [1/4, 3/4]; row 2: [0, ln3, 0] -> [1/5, 3/5, 1/5]
    # F = [1 + 1/4 + 1/5, 3/4 + 3/5, 1/5] = [1.45, 1.35, 0.2]
    return layer_of([[[0.0], [math.log(3.0)], [0.0]]], [[[0.0], [1.0], [1.0]]], 1.0)


def test_h2o_heavy_hitters_hand():
    m = make_method("h2o", block_size=2)
    layer = h2o_hand_layer()
    s = m.score(layer)
    assert torch.allclose(s, torch.tensor([[1.45, 1.35, 0.2]]), atol=1e-6)
    # n_kept = 2: recent = floor(0.5 * 2) = 1 (position 2) + the heavy hitter of the rest: position 0
    assert m.protected(3, 2) == (0, 1)
    assert select(s, 2, "uniform", protected=m.protected(3, 2))[0].tolist() == [0, 2]
    # normalize (kvpress ObservedAttention): F / (n - j) = [1.45/3, 1.35/2, 0.2] -> position 1 wins
    mn = make_method("h2o", normalize=True)
    sn = mn.score(h2o_hand_layer())
    assert torch.allclose(sn, torch.tensor([[1.45 / 3, 1.35 / 2, 0.2]]), atol=1e-6)
    assert select(sn, 2, "uniform", protected=mn.protected(3, 2))[0].tolist() == [1, 2]


def test_h2o_uniform_prefix_attention_hand():
    # q = 0: uniform attention over the visible prefix, F = [1 + 1/2 + 1/3, 1/2 + 1/3, 1/3]
    layer = layer_of(torch.randn(1, 3, 2), torch.zeros(1, 3, 2))
    s = make_method("h2o").score(layer)
    assert torch.allclose(s, torch.tensor([[11 / 6, 5 / 6, 1 / 3]]), atol=1e-6)


def test_h2o_gqa_group_mean():
    torch.manual_seed(5)
    layer = layer_of(torch.randn(2, 11, 4), torch.randn(4, 11, 4), 0.5)
    f = naive_attention(layer.queries, layer.keys, 0.5).sum(dim=1)  # (4, n)
    expected = torch.stack([(f[0] + f[1]) / 2, (f[2] + f[3]) / 2])
    assert torch.allclose(make_method("h2o", block_size=4).score(layer).double(), expected, atol=1e-6)


def test_h2o_recent_and_decode_eviction_field():
    m = make_method("h2o")
    assert m.protected(100, 25) == (0, 12) and m.protected(100, 1) == (0, 0)
    assert make_method("h2o", recent_fraction=0.7).protected(100, 10) == (0, 7)
    assert m.needs_queries and not make_method("keydiff").needs_queries
    assert "decode_eviction" in {f.name for f in dataclasses.fields(m)}
    assert m.decode_eviction is False and m.params()["decode_eviction"] is False
    on = make_method("h2o", decode_eviction=True)
    assert on.decode_eviction is True and on.params()["decode_eviction"] is True
    assert Method().decode_rule(100, 10) is None  # prefill-only unless a method declares a rule
    assert m.decode_rule(100, 10) is None
    rule = on.decode_rule(100, 10)  # H2O online declares its rule: recent half of the budget, raw sums
    assert (rule.recent, rule.normalize) == (5, False)
    assert make_method("h2o", decode_eviction=True, normalize=True).decode_rule(100, 10).normalize is True


# ---- SnapKV -----------------------------------------------------------------------------------------------


def test_snapkv_pooling_hand():
    votes = torch.tensor([3.0, 0.0, 0.0, 0.0, 6.0, 0.0])
    # avg, kernel 3, padding 1, count_include_pad (kvpress): edges divided by 3, not by 2
    assert torch.allclose(pool_votes(votes, 3, "avg"), torch.tensor([1.0, 1.0, 0.0, 2.0, 2.0, 2.0]))
    assert torch.allclose(pool_votes(votes, 3, "max"), torch.tensor([3.0, 3.0, 0.0, 6.0, 6.0, 6.0]))
    # kernel 5, padding 2
    assert torch.allclose(pool_votes(votes, 5, "avg"), torch.tensor([3, 3, 9, 6, 6, 6]) / 5.0)
    assert torch.allclose(pool_votes(votes, 5, "max"), torch.tensor([3.0, 3.0, 6.0, 6.0, 6.0, 6.0]))
    # even kernel: the extra output is dropped, length is kept
    assert pool_votes(votes, 4, "avg").shape == votes.shape


def snapkv_hand_layer():
    # n=6, window 2, d=1: window queries 1, key 2 has logit ln 7, the others 0.
    # row 4 sees 5 keys: [1,1,7,1,1]/11; row 5 sees 6: [1,1,7,1,1,1]/12.
    # votes for j < 4: a = (1/11 + 1/12) / 2 = 23/264 at j != 2 and 7a at j = 2.
    keys = [[[0.0], [0.0], [math.log(7.0)], [0.0], [0.0], [0.0]]]
    queries = [[[0.0], [0.0], [0.0], [0.0], [1.0], [1.0]]]
    return layer_of(keys, queries, 1.0)


def test_snapkv_votes_and_scores_hand():
    a = 23 / 264
    m = SnapKV(window_size=2, kernel_size=3, pooling="avg")
    layer = snapkv_hand_layer()
    assert torch.allclose(m.votes(layer), torch.tensor([[a, a, 7 * a, a]]), atol=1e-7)
    s = m.score(layer)
    assert s.shape == (1, 6)
    assert torch.allclose(s[:, :4], torch.tensor([[2 * a / 3, 3 * a, 3 * a, 8 * a / 3]]), atol=1e-7)
    mx = SnapKV(window_size=2, kernel_size=3, pooling="max").score(snapkv_hand_layer())
    assert torch.allclose(mx[:, :4], torch.tensor([[a, 7 * a, 7 * a, 7 * a]]), atol=1e-7)
    # n_kept = 3: the 2 window positions + the best smoothed vote (position 1, ties to the earlier)
    assert m.protected(6, 3) == (0, 2)
    assert select(s, 3, "uniform", protected=m.protected(6, 3))[0].tolist() in ([1, 4, 5], [2, 4, 5])
    # n_kept <= window: keep the last n_kept
    assert m.protected(6, 1) == (0, 1)
    assert select(s, 1, "uniform", protected=m.protected(6, 1))[0].tolist() == [5]


def test_snapkv_pool_order_switch(monkeypatch):
    # one KV head, two query heads: votes [1,0,0] and [0,0,1], max pool kernel 3
    layer = layer_of(torch.zeros(1, 5, 2), torch.zeros(2, 5, 2))
    votes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    monkeypatch.setattr(SnapKV, "votes", lambda self, layer: votes)
    spec_order = SnapKV(window_size=2, kernel_size=3, pooling="max").score(layer)
    kvpress_order = SnapKV(window_size=2, kernel_size=3, pooling="max", pool_per_query_head=True).score(layer)
    assert torch.allclose(spec_order[0, :3], torch.tensor([0.5, 0.5, 0.5]))  # mean [.5,0,.5], then max
    assert torch.allclose(kvpress_order[0, :3], torch.tensor([0.5, 1.0, 0.5]))  # max per head, then mean
    for pooling in ("avg",):  # avg is linear: the order does not matter
        a = SnapKV(window_size=2, kernel_size=3, pooling=pooling).score(layer)
        b = SnapKV(window_size=2, kernel_size=3, pooling=pooling, pool_per_query_head=True).score(layer)
        assert torch.allclose(a, b)


def test_snapkv_gqa_and_short_context():
    torch.manual_seed(6)
    n, w = 20, 5
    layer = layer_of(torch.randn(2, n, 4), torch.randn(4, n, 4), 0.5)
    dense = naive_attention(layer.queries, layer.keys, 0.5)[:, n - w :, : n - w].mean(dim=1)  # (4, n - w)
    grouped = torch.stack([(dense[0] + dense[1]) / 2, (dense[2] + dense[3]) / 2]).float()
    s = SnapKV(window_size=w, kernel_size=3).score(layer)
    assert torch.allclose(s[:, : n - w], pool_votes(grouped, 3, "avg"), atol=1e-6)
    # n <= window: everything is window, scores are defined and the last n_kept are kept
    short = layer_of(torch.randn(2, 4, 4), torch.randn(4, 4, 4))
    m = SnapKV(window_size=8)
    s = m.score(short)
    assert s.shape == (2, 4) and torch.isfinite(s).all()
    assert [k.tolist() for k in select(s, 2, "uniform", protected=m.protected(4, 2))] == [[2, 3]] * 2


# ---- NestedKV ---------------------------------------------------------------------------------------------


def test_nestedkv_block_size_clip():
    assert block_size_for(1000) == 128 and block_size_for(6400) == 200 and block_size_for(100_000) == 256


def test_nestedkv_anchor_helpers_hand():
    k_hat = torch.tensor([[E1, E2, E1, E1, E2]])
    # blocks of 2 from position 0; the last block is shorter
    mu_e = block_anchor(k_hat, 2)
    assert torch.allclose(mu_e, torch.tensor([[[0.5, 0.5]] * 2 + [E1] * 2 + [E2]]))
    # causal window of 2, including i itself; the first window is truncated
    mu_c = window_anchor(k_hat, 2)
    assert torch.allclose(mu_c, torch.tensor([[E1, [0.5, 0.5], [0.5, 0.5], E1, [0.5, 0.5]]]))
    # true cosine vs dot product
    assert torch.allclose(anomaly(k_hat, mu_c, cosine=True), -torch.tensor([[1, 0.5**0.5, 0.5**0.5, 1, 0.5**0.5]]))
    assert torch.allclose(anomaly(k_hat, mu_c, cosine=False), -torch.tensor([[1, 0.5, 0.5, 1, 0.5]]))


def test_nestedkv_vectorised_anchors_equal_loops():
    torch.manual_seed(7)
    n, d = 300, 8
    k_hat = unit_keys(torch.randn(2, n, d))
    b, w = 128, 64
    loop_e = torch.stack([k_hat[:, (i // b) * b : min(n, (i // b + 1) * b)].mean(dim=1) for i in range(n)], dim=1)
    loop_c = torch.stack([k_hat[:, max(0, i - w + 1) : i + 1].mean(dim=1) for i in range(n)], dim=1)
    assert torch.allclose(block_anchor(k_hat, b), loop_e, atol=1e-6)
    assert torch.allclose(window_anchor(k_hat, w), loop_c, atol=1e-6)


def test_nestedkv_block_anchor_singles_out_position():
    # blocks of 4: block 0 all e1; block 1 = e2, e1, e2, e2 -> position 5 is the block's outlier
    keys = torch.tensor([[E1, E1, E1, E1, E2, E1, E2, E2]]) * 3.0
    m = NestedKV(block_min=4, block_max=4, window=8, n_sink=0)
    c = m.components(keys)
    assert int(c["b"]) == 4
    # block 1 mean (1/4, 3/4): cos(e1, .) = 1/sqrt(10), cos(e2, .) = 3/sqrt(10); block 0: cos = 1
    r10 = math.sqrt(10)
    assert torch.allclose(c["a_e"], -torch.tensor([[1, 1, 1, 1, 3 / r10, 1 / r10, 3 / r10, 3 / r10]]), atol=1e-6)
    lo, hi = -1.0, -1 / r10
    expected_e = (torch.tensor([[-1, -1, -1, -1, -3 / r10, -1 / r10, -3 / r10, -3 / r10]]) - lo) / (hi - lo)
    assert torch.allclose(c["at_e"], expected_e, atol=1e-6)
    assert c["at_e"][0].argmax().item() == 5 and c["at_e"][0, 5] == 1.0


def test_nestedkv_window_anchor_singles_out_position():
    # W = 3 over e1 e1 e1 e2 e2 e2 e2 e2: the first e2 (position 3) is the local surprise
    keys = torch.tensor([[E1, E1, E1, E2, E2, E2, E2, E2]])
    m = NestedKV(window=3, block_min=8, block_max=8, n_sink=0)
    c = m.components(keys)
    r5 = math.sqrt(5)
    # window means: pos 3 (2/3, 1/3) -> cos = 1/sqrt5; pos 4 (1/3, 2/3) -> 2/sqrt5; all others cos = 1
    a_c = -torch.tensor([[1, 1, 1, 1 / r5, 2 / r5, 1, 1, 1]])
    assert torch.allclose(c["a_c"], a_c, atol=1e-6)
    at_c = torch.zeros(1, 8)
    at_c[0, 3] = 1.0
    at_c[0, 4] = (1 - 2 / r5) / (1 - 1 / r5)
    assert torch.allclose(c["at_c"], at_c, atol=1e-6)
    # dot product for the local anchors: pos 3 -> -1/3, pos 4 -> -2/3
    cd = NestedKV(window=3, block_min=8, block_max=8, n_sink=0, local_similarity="dot").components(keys)
    assert torch.allclose(cd["a_c"], -torch.tensor([[1, 1, 1, 1 / 3, 2 / 3, 1, 1, 1]]), atol=1e-6)
    # the global anchor is a cosine either way: mu_s = (3/8, 5/8)
    r34 = math.sqrt(34)
    a_s = -torch.tensor([[3 / r34] * 3 + [5 / r34] * 5])
    assert torch.allclose(c["a_s"], a_s, atol=1e-6) and torch.allclose(cd["a_s"], a_s, atol=1e-6)


def test_nestedkv_normalisations_hand():
    x = torch.tensor([[3.0, 1.0, 2.0, 5.0]])
    assert torch.allclose(minmax(x), torch.tensor([[0.5, 0.0, 0.25, 1.0]]))
    assert torch.allclose(rank_normalize(x), torch.tensor([[2 / 3, 0.0, 1 / 3, 1.0]]))
    assert torch.equal(minmax(torch.ones(1, 4)), torch.zeros(1, 4))


def test_nestedkv_contrast_and_weights_hand():
    a = torch.arange(20.0) / 19  # k = floor(0.1 * 20) = 2: top (19 + 18)/2/19, bottom (0 + 1)/2/19
    assert torch.allclose(contrast(a, 0.10), torch.tensor(18 / 19))
    assert torch.allclose(contrast(torch.tensor([0.0, 1.0, 0.5]), 0.10), torch.tensor(1.0))  # at least one each
    assert torch.allclose(contrast(torch.arange(15.0) / 14, 0.10), torch.tensor(1.0))  # floor(1.5) = 1 each
    w = blend_weights(torch.tensor([1.0, 0.5, 0.0]), (0.4, 0.4, 0.2), 3.0)
    raw = [0.4 * math.exp(3.0), 0.4 * math.exp(1.5), 0.2 * math.exp(0.0)]
    assert torch.allclose(w, torch.tensor(raw) / sum(raw), atol=1e-6)
    # all-equal contrasts leave the prior
    assert torch.allclose(blend_weights(torch.zeros(3)), torch.tensor([0.4, 0.4, 0.2]))


def test_nestedkv_surprise_gate_hand():
    # columns (a~_s, a~_e, a~_c): (0,0,0), (1,0,0), (0.5,0,0): population std 0, sqrt(2)/3, sqrt(2)/6
    # min-max -> [0, 1, 0.5]; minus its mean 0.5 -> [-0.5, 0.5, 0]; alpha = sigmoid(10 (s~ - 0.6))
    a_tilde = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    alpha = surprise_gate(a_tilde, kappa=10.0, tau=0.6)
    assert torch.allclose(alpha, torch.sigmoid(torch.tensor([-11.0, -1.0, -6.0])), atol=1e-6)


def test_nestedkv_score_assembly():
    torch.manual_seed(8)
    m = NestedKV(block_min=16, block_max=16, window=8)
    c = m.components(torch.randn(2, 70, 8))
    at = torch.stack([c["at_s"], c["at_e"], c["at_c"]], dim=-2)
    assert torch.allclose(c["weights"], blend_weights(contrast(at, 0.1)))
    assert torch.allclose(c["blend"], (c["weights"][..., None] * at).sum(-2))
    assert torch.allclose(c["win"], at.amax(-2))
    assert torch.allclose(c["score"], (1 - c["alpha"]) * c["blend"] + c["alpha"] * c["win"])
    for name in ("at_s", "at_e", "at_c"):
        assert c[name].min() == 0.0 and c[name].max() == 1.0


def test_nestedkv_layer_score_and_sinks():
    torch.manual_seed(9)
    keys = torch.randn(2, 300, 16)
    m = NestedKV()
    s = m.score(layer_of(keys))
    assert s.shape == (2, 300) and s.dtype == torch.float32
    assert torch.allclose(s, m.components(keys)["score"], atol=1e-6)  # per-head loop == batched
    assert m.protected(300, 50) == (4, 0) and m.protected(300, 2) == (2, 0)
    kept = select(s, 20, "adaptive", 0.2, protected=m.protected(300, 20))
    assert all({0, 1, 2, 3} <= set(k.tolist()) for k in kept)
    # sinks in the statistics (default): changing a sink key changes other positions' scores
    keys2 = keys.clone()
    keys2[:, 0] = 50.0
    assert not torch.allclose(m.score(layer_of(keys2))[:, 4:], s[:, 4:])
    # sinks excluded: the rest is scored as if the context started at n_sink
    ex = NestedKV(sinks_in_stats=False)
    s_ex = ex.score(layer_of(keys))
    assert torch.allclose(s_ex[:, 4:], ex.score(layer_of(keys2))[:, 4:])
    assert torch.allclose(s_ex[:, 4:], NestedKV(n_sink=0).score(layer_of(keys[:, 4:])), atol=1e-6)


def test_nestedkv_rank_switch_and_bf16():
    torch.manual_seed(10)
    keys = torch.randn(1, 200, 8)
    c = NestedKV(normalization="rank").components(keys)
    assert torch.allclose(c["at_s"].sort().values, torch.arange(200.0)[None] / 199)
    s16 = NestedKV().score(layer_of(keys.bfloat16()))
    assert s16.dtype == torch.float32 and torch.isfinite(s16).all()
    with pytest.raises(ValueError):
        NestedKV(normalization="zscore")
