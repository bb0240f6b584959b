"""prefill=layerwise and prefill_chunk (harness/prefill_modes.py, docs/protocol.md "Layer-wise and chunked
prefill") on tiny random models: layer-wise compression keeps what the default keeps and predicts the same; one
chunk is the default; a chunked prefill evicts as worked out by hand; the full cache of all layers never exists
in a layer-wise prefill; combinations that make no sense fail before weights load."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from harness.cell import Cell
from harness.configstep import ConfigStep
from harness.errors import UsageError
from harness.plan import make_plan
from harness.prefill_modes import _Evicting, chunk_bounds
from harness.run import compose, prefill_context, run
from methods import make_method
from methods.budget import select
from methods.keydiff import keydiff_scores


class _Tok:
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


@pytest.fixture
def no_eos(monkeypatch):
    import harness.protocol as P

    monkeypatch.setattr(P, "eos_ids", lambda model, tok: set())


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 1000, (1, n), generator=torch.Generator().manual_seed(seed))


def _cell(name: str, r: float, policy: str = "uniform", **params) -> Cell:
    return Cell(name, make_method(name, **params), r, None, policy, 0.2)


def _same_context(a, b) -> None:
    """Two compressed contexts hold the same entries (keys, values, positions, validity, decode-rule scores)."""
    assert a.n_context == b.n_context and a.next_position == b.next_position
    assert a.n_kept_per_head == b.n_kept_per_head
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        assert torch.equal(x.positions, y.positions)
        assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)
        assert x.lengths == y.lengths  # ragged (adaptive) layers: the same entries per head
        assert (x.scores is None) == (y.scores is None)
        if x.scores is not None:
            assert torch.equal(x.scores, y.scores)
        assert x.sliding_window == y.sliding_window and x.compressed == y.compressed


# prefill-only methods and rules of every kind: keys only (uniform, adaptive), queries (snapkv, its pyramid budget,
# tova), rotary (expected attention), column sums with a decode rule (h2o online), re-rotation (streamingllm)
LAYERWISE_CELLS = [
    ("knorm", 0.5, "uniform", {}),
    ("nestedkv", 0.75, "adaptive", {}),
    ("snapkv", 0.5, "uniform", {"window_size": 8}),
    ("snapkv", 0.75, "adaptive", {"window_size": 8}),
    ("pyramidkv", 0.5, "uniform", {"window_size": 8}),
    ("tova", 0.5, "adaptive", {}),
    ("expected_attention", 0.5, "uniform", {"n_future_positions": 16}),
    ("h2o", 0.5, "uniform", {"decode_eviction": True}),
    ("streamingllm", 0.9, "uniform", {"rerotate": True}),
    ("full", 0.0, "uniform", {}),
]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_layerwise_keeps_and_predicts_what_the_default_does(arch, no_eos):
    model = tiny_model(arch)
    step = ConfigStep(model, _Tok())
    ids, q = _ids(96), _ids(5, seed=2)
    for name, r, policy, params in LAYERWISE_CELLS:
        cell = _cell(name, r, policy, **params)
        default = step.compress(cell, step.prefill(ids, [cell]))
        own, cost = step.prefill_compress(ids, cell, layerwise=True)
        _same_context(default, own)
        assert cost.n_chunks == 1 and cost.full_bytes == step.prefill(ids, [cell]).full_bytes
        p_default = step.decode([cell], [default], q, 6)[0]
        p_own = step.decode([cell], [own], q, 6)[0]
        assert p_default == p_own and len(p_own[0].split()) == 6, (name, policy)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_one_chunk_is_the_default(arch, no_eos):
    model = tiny_model(arch)
    step = ConfigStep(model, _Tok())
    ids, q = _ids(80), _ids(4, seed=3)
    for name, r, policy, params in LAYERWISE_CELLS:
        if name in ("h2o", "expected_attention") or policy == "adaptive":
            continue  # refused with prefill_chunk (test_bad_combinations_fail_before_loading)
        cell = _cell(name, r, policy, **params)
        default = step.compress(cell, step.prefill(ids, [cell]))
        for chunk, layerwise in ((80, False), (1000, True)):
            own, cost = step.prefill_compress(ids, cell, layerwise=layerwise, chunk=chunk)
            assert cost.n_chunks == 1
            _same_context(default, own)
            assert step.decode([cell], [own], q, 5)[0] == step.decode([cell], [default], q, 5)[0]


def test_chunk_bounds():
    assert chunk_bounds(100, None) == [(0, 100)]
    assert chunk_bounds(100, 100) == [(0, 100)]
    assert chunk_bounds(100, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    # a method reading the last 8 query rows: the 4-token tail joins the chunk before it
    assert chunk_bounds(100, 32, rows=8) == [(0, 32), (32, 64), (64, 100)]
    assert chunk_bounds(100, 32, rows=4) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert chunk_bounds(40, 32, rows=8) == [(0, 32), (32, 40)]
    assert chunk_bounds(40, 32, rows=9) == [(0, 40)]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_chunked_streamingllm_keeps_sinks_and_the_most_recent(arch):
    """n = 100, r = 0.5: 50 per head. Chunks of 32: after [0, 32) nothing goes (32 <= 50); after [32, 64) the 64
    entries go down to sinks 0..3 + 18..63; after [64, 96) to 0..3 + 50..95; after [96, 100) to 0..3 + 54..99,
    which is what the default keeps."""
    model = tiny_model(arch)
    step = ConfigStep(model)
    cell = _cell("streamingllm", 0.5)
    ctx, cost = step.prefill_compress(_ids(100), cell, chunk=32)
    assert cost.n_chunks == 4
    want = torch.tensor([0, 1, 2, 3, *range(54, 100)])
    for layer in ctx.layers:
        if layer.compressed:
            assert all(torch.equal(p, want) for p in layer.positions[0])
        else:  # gemma3's sliding layers: their last window (32) of positions
            assert all(torch.equal(p, torch.arange(68, 100)) for p in layer.positions[0])
    assert ctx.n_kept_per_head == [[50] * len(row) for row in ctx.n_kept_per_head]
    assert ctx.next_position == 100


def test_chunked_keydiff_first_layer_by_hand():
    """Layer 0's keys do not depend on attention (embedding, norm, projection, RoPE at the token's position), so
    the chunked protocol at layer 0 can be replayed from the default prefill's keys: score the kept keys plus the
    chunk's with KeyDiff, keep the top 50 per head, next chunk. The anchor moves with the kept set, so this is not
    the default's selection."""
    model = tiny_model("llama")
    step = ConfigStep(model)
    ids = _ids(100)
    cell = _cell("keydiff", 0.5)
    pre = step.prefill(ids, [cell])
    keys = pre.cache.layers[0].keys[0]  # (H_kv, 100, d)
    kept = [torch.arange(0, dtype=torch.long)] * keys.shape[0]
    for s, e in [(0, 32), (32, 64), (64, 96), (96, 100)]:
        held = [torch.cat([k, torch.arange(s, e)]) for k in kept]
        kept = []
        for h, pos in enumerate(held):
            score = keydiff_scores(keys[h : h + 1, pos])  # (1, L)
            kept.append(pos[select(score, 50)[0]])
    ctx, _ = step.prefill_compress(ids, cell, chunk=32)
    got = ctx.layers[0].positions[0]
    for h in range(keys.shape[0]):
        assert torch.equal(got[h], kept[h])
    default = step.select(cell, pre)[0]
    assert any(not torch.equal(got[h], default[h]) for h in range(keys.shape[0]))  # the protocols differ here


@pytest.mark.parametrize("layerwise, most", [(True, 1), (False, 2)])
def test_layerwise_never_holds_every_layers_full_cache(layerwise, most, monkeypatch):
    """At each layer's compression, count the layers whose cache still holds all 64 tokens: one at most
    layer-wise (the layer being compressed), both of the tiny llama's layers with the default."""
    model = tiny_model("llama")
    step = ConfigStep(model)
    seen = []
    finish = _Evicting.finish

    def spy(self, idx):
        seen.append(sum(layer.keys.shape[-2] == 64 for layer in self.cache.layers))
        finish(self, idx)

    monkeypatch.setattr(_Evicting, "finish", spy)
    step.prefill_compress(_ids(64), _cell("knorm", 0.5), layerwise=layerwise)
    assert max(seen) == most and len(seen) >= 2


# ------------------------------------------------------------------------------------ configuration
TINY = ["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu", "task=ruler_1k",
        "task.tasks=[niah_single_1]"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=h2o", "prefill_chunk=256"], "scores with every query of the prefill"),
        (["method=expected_attention", "prefill_chunk=256"], "scores with every query of the prefill"),
        (["method=snapkv", "prefill_chunk=32"], "reads the last 64 query rows of the prefill; prefill_chunk=32"),
        (["method=nestedkv", "prefill_chunk=256"], "prefill_chunk needs budget_policy=uniform (nestedkv runs adaptive)"),
        (["method=keydiff", "prefill_chunk=0"], "prefill_chunk must be an integer >= 1"),
        (["method=keydiff", "prefill=fast"], "prefill='fast' is unknown; choose one of default, layerwise"),
        (["method=keydiff", "prefill=layerwise", "query_aware=true"], "query_aware=true runs on the shared prefill"),
    ],
)
def test_bad_combinations_fail_before_loading(tmp_path, overrides, message, monkeypatch):
    import harness.models as M

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError) as err:
        make_plan(compose([*TINY, f"output_dir={tmp_path}", *overrides]))
    assert message in str(err.value)


def test_allowed_combinations_plan(tmp_path):
    for overrides in (["methods=[nestedkv,h2o,expected_attention]", "prefill=layerwise"],
                      ["methods=[knorm,snapkv,tova,streamingllm,full]", "prefill_chunk=64"],
                      ["method=nestedkv", "budget_policy=uniform", "prefill_chunk=512", "prefill=layerwise"]):
        assert make_plan(compose([*TINY, f"output_dir={tmp_path}", *overrides])).cells


def test_run_ids_change_only_off_the_default(tmp_path):
    cfg = compose([*TINY, f"output_dir={tmp_path}"])
    assert prefill_context(cfg) == {}
    assert prefill_context(compose([*TINY, "prefill=layerwise", "prefill_chunk=512"])) == {
        "prefill": "layerwise", "prefill_chunk": 512}


def test_cli_layerwise_rows_equal_the_default(tmp_path):
    common = [*TINY, "methods=[knorm,snapkv,nestedkv]", "r=[0.5,0.9]", "n_samples=1", "max_new_tokens=4"]
    base = run(compose([*common, f"output_dir={tmp_path / 'default'}"]))
    own = run(compose([*common, f"output_dir={tmp_path / 'layerwise'}", "prefill=layerwise"]))
    chunked = run(compose([*common, f"output_dir={tmp_path / 'chunked'}", "budget_policy=uniform",
                           "prefill_chunk=512"]))
    key = ["method", "r", "sample_id"]
    base, own = base.sort_values(key).reset_index(drop=True), own.sort_values(key).reset_index(drop=True)
    assert len(base) == len(own) == 6
    assert (base["prediction"] == own["prediction"]).all()
    assert (base["kv_bytes_kept"] == own["kv_bytes_kept"]).all() and (base["kept_fraction"] == own["kept_fraction"]).all()
    assert set(base["prefill"]) == {"default"} and base["prefill_chunk"].isna().all()
    assert set(own["prefill"]) == {"layerwise"} and (own["decode_batch_size"] == 1).all()
    assert not set(own["run_id"]) & set(base["run_id"])
    assert set(chunked["prefill_chunk"]) == {512} and len(chunked) == 6
    assert (chunked["n_context_tokens"] > 512).all()  # more than one chunk


def test_cli_refuses_with_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "harness", *TINY, f"output_dir={tmp_path}", "methods=[keydiff,h2o]",
                          "prefill_chunk=256"], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("error: method 'h2o' scores with every query of the prefill"), lines
