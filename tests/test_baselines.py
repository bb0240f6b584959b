"""The paper's other baselines (docs/methods.md): PyramidKV, Expected Attention, TOVA, KNorm. Hand-worked cases
that break if a formula or constant changes, plus checks against kvpress's own computation on tiny models."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import harness
from harness.plan import build_method, load_method_config
from harness.protocol import prefill, select_positions
from methods import LayerInputs, make_method
from methods.budget import select
from methods.expected_attention import ExpectedAttention, rotation_matrix, rotate_half, unrotate
from methods.pyramidkv import pyramid_budget
from tests.conftest import tiny_model

ROOT = Path(__file__).resolve().parent.parent


def _layer(keys, queries=None, values=None, scaling=1.0, **extra):
    keys = torch.as_tensor(keys, dtype=torch.float32)
    queries = None if queries is None else torch.as_tensor(queries, dtype=torch.float32)
    values = keys.clone() if values is None else torch.as_tensor(values, dtype=torch.float32)
    return LayerInputs(layer_idx=0, keys=keys, values=values, queries=queries, scaling=scaling, **extra)


def _kept(method, layer, n_kept, policy="uniform"):
    s = method.score(layer)
    return [ix.tolist() for ix in select(s, n_kept, policy, 0.2, method.protected(layer.n, n_kept))]


# ---- configs --------------------------------------------------------------------------------------------


def test_configs_hold_the_kvpress_defaults():
    def cfg(name):
        label, m, policy, guard = build_method(load_method_config(name))
        return m, policy, guard

    p, policy, _ = cfg("pyramidkv")
    assert (p.window_size, p.kernel_size, p.pooling, p.beta, policy) == (64, 5, "avg", 20, "uniform")
    ea, policy, _ = cfg("expected_attention")
    assert (ea.n_future_positions, ea.n_sink, ea.use_covariance, ea.use_vnorm, ea.epsilon) == (512, 4, True, True, 0.0)
    assert policy == "uniform"
    # kvpress's registry "expected_attention" = AdaKVPress(ExpectedAttentionPress(epsilon=1e-2)), safeguard 0.2
    ada, policy, guard = cfg("expected_attention_adaptive")
    assert (ada.epsilon, policy, guard) == (0.01, "adaptive", 0.2)
    assert ada.n_future_positions == 512 and ada.n_sink == 4
    tova, policy, _ = cfg("tova")
    assert tova.per_kv_head is False and policy == "uniform"
    assert cfg("knorm")[1] == "uniform"


# ---- KNorm ----------------------------------------------------------------------------------------------


def test_knorm_keeps_the_lowest_key_norms_hand():
    # norms per position: head 0: 5, 1, 2, 0.5; head 1: 1, 3, 1.5, 4
    keys = [[[3, 4], [1, 0], [0, 2], [0, 0.5]], [[0, 1], [3, 0], [1.5, 0], [0, 4]]]
    m = make_method("knorm")
    layer = _layer(keys)
    torch.testing.assert_close(m.score(layer), -torch.tensor([[5, 1, 2, 0.5], [1, 3, 1.5, 4]]))
    assert _kept(m, layer, 2) == [[1, 3], [0, 2]]
    assert _kept(m, layer, 3) == [[1, 2, 3], [0, 1, 2]]
    assert m.protected(4, 2) == (0, 0)  # no sinks, no window (kvpress's KnormPress)


# ---- TOVA -----------------------------------------------------------------------------------------------

LN = [[math.log(1.0)], [math.log(2.0)], [math.log(3.0)], [math.log(4.0)]]  # d = 1 keys: exp(q k) = 1, 2, 3, 4 for q = 1


def _tova_layer(h_kv):
    # only the last query row matters (window of one): q = +1 sees 1:2:3:4, q = -1 sees 1 : 1/2 : 1/3 : 1/4
    queries = torch.zeros(2, 4, 1)
    queries[0, -1, 0], queries[1, -1, 0] = 1.0, -1.0
    return _layer([LN] * h_kv, queries)


def test_tova_layer_mean_over_all_query_heads_hand():
    # head q=+1: [1, 2, 3] / 10 = [.1, .2, .3]; head q=-1: [1, 1/2, 1/3] / (25/12) = [.48, .24, .16]
    # kvpress's TOVAPress averages over all query heads: [.29, .22, .23]; the last token is always kept
    m = make_method("tova")
    for h_kv in (1, 2):  # GQA (one KV head) and MHA: every KV head gets the same row
        s = m.score(_tova_layer(h_kv))
        torch.testing.assert_close(s[:, :3], torch.tensor([[0.29, 0.22, 0.23]] * h_kv))
        assert _kept(m, _tova_layer(h_kv), 2) == [[0, 3]] * h_kv
        assert _kept(m, _tova_layer(h_kv), 3) == [[0, 2, 3]] * h_kv
    assert m.protected(4, 2) == (0, 1)


def test_tova_per_kv_head_switch_hand():
    m = make_method("tova", per_kv_head=True)
    s = m.score(_tova_layer(2))  # G = 1: each KV head keeps its own query head's preference
    torch.testing.assert_close(s[:, :3], torch.tensor([[0.1, 0.2, 0.3], [0.48, 0.24, 0.16]]))
    assert _kept(m, _tova_layer(2), 2) == [[2, 3], [0, 3]]


def test_tova_uses_the_layer_scaling_and_short_contexts():
    layer = _tova_layer(1)
    layer.scaling = 2.0  # q k scaled by 2: q=+1 sees 1:4:9:16, q=-1 sees 1 : 1/4 : 1/9 : 1/16
    s = make_method("tova").score(layer)
    a = torch.tensor([1, 4, 9.0]) / 30
    b = torch.tensor([1, 1 / 4, 1 / 9]) / (1 + 1 / 4 + 1 / 9 + 1 / 16)
    torch.testing.assert_close(s[0, :3], (a + b) / 2)
    assert make_method("tova").score(_layer([[[1.0]]], [[[1.0]], [[2.0]]])).shape == (1, 1)


# ---- Expected Attention ---------------------------------------------------------------------------------


def _identity_rotary(positions):
    m = positions.shape[0]
    return torch.ones(m, 2), torch.zeros(m, 2)


def _quarter_turn_rotary(positions):
    """d = 2, angle p * pi / 2: R(p) = [[cos, -sin], [sin, cos]]."""
    theta = positions.double() * math.pi / 2
    c, s = torch.cos(theta).float(), torch.sin(theta).float()
    return torch.stack([c, c], -1), torch.stack([s, s], -1)


def test_rotation_helpers_hand():
    c, s = torch.tensor([0.6, 0.6]), torch.tensor([0.8, 0.8])
    r = rotation_matrix(c, s)
    torch.testing.assert_close(r, torch.tensor([[0.6, -0.8], [0.8, 0.6]]))
    x = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(r @ x, x * c + rotate_half(x) * s)  # R x is RoPE's x cos + rotate_half(x) sin
    torch.testing.assert_close(unrotate(r @ x, c, s), x)  # R^T undoes it


def _ea_layer(rotary, rope_scaling=1.0, values=None):
    """n = 4, one head, d = 2; pre-RoPE queries after the sink: [1, 0], [3, 0], [2, 0] (mu = [2, 0],
    Sigma = diag(2/3, 0)); keys after the sink: [1, 0], [0, 1], [-1, 0]."""
    pre = torch.tensor([[9.0, 9.0], [1, 0], [3, 0], [2, 0]])  # row 0 is the sink: left out of the statistics
    pos = torch.arange(4)
    cos, sin = rotary(pos)
    post = (pre * cos + rotate_half(pre) * sin) * rope_scaling  # what the attention kernel sees
    keys = [[[5.0, 5.0], [1, 0], [0, 1], [-1, 0]]]
    return _layer(keys, post[None], values=values, positions=pos, rotary=rotary, rope_scaling=rope_scaling)


def test_expected_attention_statistics_rotate_to_future_positions_hand():
    m = ExpectedAttention(n_future_positions=2, n_sink=1)
    # identity RoPE: the raw statistics
    mu, cov = m.statistics(_ea_layer(_identity_rotary))
    torch.testing.assert_close(mu, torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(cov, torch.tensor([[[2 / 3, 0.0], [0.0, 0.0]]]))
    # quarter turns: the queries are un-rotated first; future positions 4, 5: R(4) = I, R(5) = [[0, -1], [1, 0]],
    # R = [[.5, -.5], [.5, .5]]: mu' = R mu = [1, 1], Sigma' = R Sigma R^T = 1/6 everywhere
    mu, cov = m.statistics(_ea_layer(_quarter_turn_rotary))
    torch.testing.assert_close(mu, torch.tensor([[1.0, 1.0]]), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cov, torch.full((1, 2, 2), 1 / 6), atol=1e-6, rtol=1e-6)
    # attention_scaling s = 2 on the tables (kvpress applies them with s): mu' = s R mu, Sigma' = s^2 R Sigma R^T
    mu, cov = m.statistics(_ea_layer(_quarter_turn_rotary, rope_scaling=2.0))
    torch.testing.assert_close(mu, torch.tensor([[2.0, 2.0]]), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cov, torch.full((1, 2, 2), 4 / 6), atol=1e-6, rtol=1e-6)


def test_expected_attention_scores_hand():
    # z_j = mu.k / sqrt(2) + k^T Sigma k / 4 with mu = [2, 0], Sigma = diag(2/3, 0):
    # k = [1, 0]: sqrt(2) + 1/6; k = [0, 1]: 0; k = [-1, 0]: -sqrt(2) + 1/6; softmax over these three
    z = torch.tensor([math.sqrt(2) + 1 / 6, 0.0, -math.sqrt(2) + 1 / 6])
    a = torch.softmax(z, 0)  # ~ [.791, .163, .047]
    v = [[[1.0, 0.0], [1, 0], [0, 2], [0, 10]]]  # value norms after the sink: 1, 2, 10
    m = ExpectedAttention(n_future_positions=2, n_sink=1, use_vnorm=False)
    layer = _ea_layer(_identity_rotary, values=v)
    s = m.score(layer)
    torch.testing.assert_close(s[0, 1:], a)
    assert s[0, 0] > s[0, 1:].max()  # the sink is padded with max + 1 (and protected)
    assert m.protected(4, 3) == (1, 0) and m.protected(4, 0) == (0, 0)
    assert _kept(m, layer, 3) == [[0, 1, 2]]
    vn = ExpectedAttention(n_future_positions=2, n_sink=1)  # use_vnorm: a * ||v|| = [.791, .325, .467]
    torch.testing.assert_close(vn.score(layer)[0, 1:], a * torch.tensor([1.0, 2.0, 10.0]))
    assert _kept(vn, layer, 3) == [[0, 1, 3]]
    eps = ExpectedAttention(n_future_positions=2, n_sink=1, epsilon=0.5)  # (a + epsilon) * ||v||
    torch.testing.assert_close(eps.score(layer)[0, 1:], (a + 0.5) * torch.tensor([1.0, 2.0, 10.0]))
    nocov = ExpectedAttention(n_future_positions=2, n_sink=1, use_vnorm=False, use_covariance=False)
    zc = torch.tensor([math.sqrt(2), 0.0, -math.sqrt(2)])
    torch.testing.assert_close(nocov.score(layer)[0, 1:], torch.softmax(zc, 0))


def test_expected_attention_gqa_mean_over_the_group():
    layer = _ea_layer(_identity_rotary)
    layer.queries = torch.cat([layer.queries, -layer.queries])  # 2 query heads share the KV head; mu = +-[2, 0]
    m = ExpectedAttention(n_future_positions=2, n_sink=1, use_vnorm=False)
    sigma = 2 / 3 / 4
    z1 = torch.tensor([math.sqrt(2) + sigma, 0.0, -math.sqrt(2) + sigma])
    z2 = torch.tensor([-math.sqrt(2) + sigma, 0.0, math.sqrt(2) + sigma])
    torch.testing.assert_close(m.score(layer)[0, 1:], (torch.softmax(z1, 0) + torch.softmax(z2, 0)) / 2)


def _kvpress_reference(model, arch_layer, ids, n_future=512, n_sink=4, epsilon=0.0):
    """kvpress's ExpectedAttentionPress.score on one layer, from the hidden states: pre-RoPE queries with q_proj
    and q_norm (get_prerope_query_states), statistics over positions n_sink.., the model's rotary tables (with
    attention_scaling) averaged over n..n+F-1 as a matrix, post-RoPE cached keys, 1/sqrt(d), softmax, group mean,
    value norms."""
    base = model.model
    attn = base.layers[arch_layer].self_attn
    seen = {}
    def grab(mod, args, kw):
        seen["h"] = kw["hidden_states"] if "hidden_states" in kw else args[0]

    hook = attn.register_forward_pre_hook(grab, with_kwargs=True)
    cache, _, _, _ = prefill(model, ids, {})
    hook.remove()
    h = seen["h"][:, n_sink:]
    cfg = model.config
    hq = cfg.num_attention_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    q = attn.q_proj(h).view(1, h.shape[1], hq, d)
    q_norm = getattr(attn, "q_norm", None) or (lambda x: x)  # Llama and Qwen2 have no QK-norm
    q = q_norm(q).transpose(1, 2)[0].double()  # (H_q, m, d)
    mu = q.mean(1)
    c = q - mu[:, None]
    cov = c.transpose(1, 2) @ c / h.shape[1]
    n = ids.shape[-1]
    pos = torch.arange(n, n + n_future)[None]
    try:
        cos, sin = base.rotary_emb(h, pos)
    except TypeError:
        cos, sin = base.rotary_emb(h, pos, "full_attention")
    cos, sin = cos[0].double(), sin[0].double()
    P = torch.zeros(d, d, dtype=torch.float64)
    P[d // 2 :, : d // 2], P[: d // 2, d // 2 :] = torch.eye(d // 2), -torch.eye(d // 2)
    R = (cos[:, :, None] * torch.eye(d, dtype=torch.float64) + sin[:, :, None] * P).mean(0)
    mu, cov = mu @ R.T, R @ cov @ R.T
    keys = cache.layers[arch_layer].keys[0, :, n_sink:].double()  # (H_kv, m, d)
    values = cache.layers[arch_layer].values[0, :, n_sink:].double()
    g = hq // keys.shape[0]
    k = keys.repeat_interleave(g, 0)  # (H_q, m, d)
    z = (k @ mu[:, :, None])[..., 0] / math.sqrt(d) + ((k @ cov) * k).sum(-1) / d / 2
    a = torch.softmax(z, -1).reshape(keys.shape[0], g, -1).mean(1)
    return (a + epsilon) * values.norm(dim=-1)


@pytest.mark.parametrize("arch, layer, epsilon", [("qwen3", 1, 0.01), ("gemma3", 5, 0.01), ("llama", 1, 0.0),
                                                  ("qwen2", 0, 0.0)])
def test_expected_attention_equals_kvpress_from_hidden_states(arch, layer, epsilon):
    """Qwen3 and Gemma 3 (post-QK-norm queries; Gemma's global layer with its own RoPE): the harness's un-rotated
    queries give kvpress's scores, computed here the way kvpress does from the hidden states."""
    model = tiny_model(arch)
    ids = torch.randint(3, 1000, (1, 80), generator=torch.Generator().manual_seed(3))
    m = make_method("expected_attention", epsilon=epsilon)
    _, scores, _, _ = prefill(model, ids, {"ea": m})
    ref = _kvpress_reference(model, layer, ids, epsilon=epsilon)
    torch.testing.assert_close(scores["ea"][layer][:, 4:].double(), ref, rtol=2e-4, atol=1e-7)


# ---- PyramidKV -------------------------------------------------------------------------------------------


def _pyramid(n, r, layers=36, w=64, beta=20):
    """The formula by hand (kvpress 0.5.x, PyramidKVPress.get_layer_budget)."""
    kept = n * (1 - r)
    lo = kept / beta
    hi = 2 * kept - lo
    if hi >= n - w:
        hi = n - w
        lo = 2 * kept - hi
    if not (n >= hi >= lo >= w):
        return [round(kept)] * layers
    return [round(hi - i * (hi - lo) / (layers - 1)) for i in range(layers)]


@pytest.mark.parametrize(
    "n, r, top, bottom",
    [
        (4096, 0.5, 3994, 102),  # kept 2048: min 102.4, max 4096 - 102.4 = 3993.6
        (4096, 0.25, 4032, 2112),  # kept 3072: max 6144 - 153.6 >= n - 64, clamped to 4032; min 6144 - 4032
        (4096, 0.75, 1024, 1024),  # kept 1024: min 51.2 < window 64, uniform fallback round(1024)
        (4096, 0.95, 205, 205),  # kept 204.8: fallback, round (not floor: uniform would keep 204)
        (32768, 0.5, 31949, 819),  # kept 16384: min 819.2, max 31948.8
        (32768, 0.75, 15974, 410),  # kept 8192: min 409.6, max 15974.4
        (32768, 0.95, 3195, 82),  # kept 1638.4: min 81.92, max 3194.88
        (32768, 0.975, 819, 819),  # kept 819.2: min 40.96 < 64, fallback
    ],
)
def test_pyramid_budgets_36_layers(n, r, top, bottom):
    budgets = [pyramid_budget(n, n * (1 - r), layer, 36) for layer in range(36)]
    assert budgets == _pyramid(n, r)
    assert (budgets[0], budgets[-1]) == (top, bottom)
    assert budgets == sorted(budgets, reverse=True)  # more entries in the lower layers
    assert abs(sum(budgets) / 36 - n * (1 - r)) <= 0.5  # the uniform total, up to rounding


def test_pyramid_budget_hand_steps():
    # n = 4096, r = 0.5, 36 layers: step (3993.6 - 102.4) / 35 = 111.177...; layer 1: round(3882.42) = 3882
    assert [pyramid_budget(4096, 2048.0, layer, 36) for layer in (0, 1, 2, 17, 34, 35)] == [
        3994, 3882, 3771, 2104, 214, 102]
    assert pyramid_budget(4096, 2048.0, 0, 36, beta=2) == 3072  # min 1024, max 3072: a flatter pyramid
    # one layer (no division by zero): kept 500, max 975 >= n - 64 -> 936, min 1000 - 936 = 64: the top, 936
    assert pyramid_budget(1000, 500.0, 0, 1) == 936


def test_pyramidkv_per_layer_counts_through_kept_positions():
    """tiny llama (2 layers, 2 KV heads), n = 200, r = 0.5: kept 100, max 195 >= n - 64 -> 136, min 64:
    layer 0 keeps 136, layer 1 keeps 64 (the 64-token window only); adaptive: the same layer totals."""
    model = tiny_model("llama")
    ids = torch.randint(3, 1000, (1, 200), generator=torch.Generator().manual_seed(0))
    kept = harness.kept_positions(model, ids, "pyramidkv", r=0.5)
    assert [[len(p) for p in layer] for layer in kept] == [[136, 136], [64, 64]]
    assert all(p.tolist() == list(range(136, 200)) for p in kept[1])  # the window
    ada = harness.kept_positions(model, ids, "pyramidkv", r=0.5, budget_policy="adaptive")
    assert [sum(len(p) for p in layer) for layer in ada] == [272, 128]
    # the same scores as SnapKV. At r = 0.9 the pyramid is infeasible: kvpress's fallback round(200 * 0.1) = 20
    # per head, where the uniform budget floors 19.999... to 19; SnapKV at 20 tokens keeps the same sets
    assert [len(p) for p in harness.kept_positions(model, ids, "snapkv", r=0.9)[0]] == [19, 19]
    snap = harness.kept_positions(model, ids, "snapkv", budget_tokens=20)
    assert [[p.tolist() for p in layer] for layer in harness.kept_positions(model, ids, "pyramidkv", r=0.9)] == [
        [p.tolist() for p in layer] for layer in snap]
    # budget_tokens: the mean budget is min(n, B); B = 150: max 2 * 150 - 7.5 >= 136 -> 136, min 164 < n: 164 > 136
    # is infeasible (max < min), so the uniform fallback round(150)
    assert [[len(p) for p in layer] for layer in harness.kept_positions(model, ids, "pyramidkv",
                                                                          budget_tokens=150)] == [[150, 150]] * 2


def test_select_positions_passes_depth_to_the_layer_budget():
    m = make_method("pyramidkv")
    scores = {i: torch.rand(2, 4096) for i in (0, 35)}
    kept = select_positions(scores, m, 4096, 0.5, None, "uniform", 0.2, n_layers=36)
    assert [len(kept[0][0]), len(kept[35][0])] == [3994, 102]


# ---- every new method on the architectures; the engine knows none of them ---------------------------------

NEW = ["pyramidkv", "expected_attention", "expected_attention_adaptive", "tova", "knorm"]


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_kept_positions_per_layer_and_kv_head(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 1000, (1, 120), generator=torch.Generator().manual_seed(1))
    cfg = model.config
    for name in NEW:
        kept = harness.kept_positions(model, ids, name, r=0.5)
        assert len(kept) == cfg.num_hidden_layers
        for layer in kept:
            assert len(layer) == cfg.num_key_value_heads
            assert all(torch.all(p[1:] > p[:-1]) for p in layer)
        if name.startswith("expected_attention"):
            assert all(p[:4].tolist() == [0, 1, 2, 3] for p in kept[-1])  # the sinks
        if name == "tova":
            assert all(p[-1].item() == 119 for p in kept[-1])  # the last token
            assert all(p.tolist() == kept[-1][0].tolist() for p in kept[-1])  # one row for every KV head


ENGINE = ["attention.py", "cache.py", "protocol.py", "sweep.py", "inspect.py", "plan.py", "run.py"]
METHOD_WORDS = r"\b(h2o|snapkv|nestedkv|keydiff|streamingllm|streaming_llm|pyramidkv|expected_attention|tova|knorm)"


@pytest.mark.parametrize("name", ENGINE)
def test_engine_names_no_method_and_reads_no_method_parameter(name):
    text = (ROOT / "harness" / name).read_text()
    assert not re.search(METHOD_WORDS, text, re.IGNORECASE), re.search(METHOD_WORDS, text, re.IGNORECASE)
    for attr in ("decode_eviction", ".normalize", "n_sink", "window_size", "recent_fraction", "beta"):
        assert attr not in text, attr
