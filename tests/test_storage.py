"""Cache storage (docs/protocol.md, "What a compressed cache holds"): adaptive budgets are held ragged (the kept
entries only, no padding to the longest head), uniform budgets as a plain cache, and neither changes a prediction.

``tests/data/storage_golden.json`` holds what the padded storage (before ragged storage; generated at commit
d76a17c) decoded for a small grid of configurations on tiny random models: the greedy tokens of each configuration
alone and in a batch (the prefill-only configurations as one batch, the sweep's way; the rule configurations as
another), and digests of every logit of both. The test decodes the same grid now and compares them bit for bit
(the logits only on the torch version and CPU instruction sets the golden was made with: other SIMD kernels
round differently; ``platform``). The committed golden was made by running this file's ``__main__`` with the
code of d76a17c, on an AMX-capable Xeon (its ``_platform``); elsewhere the tokens and kept entries are compared.
Regenerate only on purpose, from the padded-storage code: ``git worktree add /tmp/d76 d76a17c``, copy this file
into its ``tests/``, run ``python tests/test_storage.py`` there, copy the golden back, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import TINY_ARCHS, tiny_model  # noqa: E402
from harness.cell import Cell  # noqa: E402
from harness.configstep import ConfigStep  # noqa: E402
from harness.plan import build_method, load_method_config  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "storage_golden.json"
ARCHS = ("llama4kv", "gemma3")  # gemma3: sliding-window layers next to the compressed one
N_CONTEXT = 200  # past NestedKV's first block (128) and SnapKV's window (64)
STEPS = 10
# (method config, policy override or None, r)
GRID = [
    ("full", None, 0.0),
    ("nestedkv", None, 0.5),
    ("nestedkv", None, 0.75),
    ("nestedkv", None, 0.9),
    ("keydiff_adaptive", None, 0.75),
    ("snapkv", "adaptive", 0.75),
    ("keydiff", None, 0.75),
    ("snapkv", None, 0.5),
    ("streamingllm", None, 0.75),
    ("streamingllm_rerotate", None, 0.75),
    ("pyramidkv", None, 0.75),
    ("h2o_online", None, 0.5),
    ("h2o_online", "adaptive", 0.5),
    ("h2o_online", "adaptive", 0.75),
    ("streamingllm_online", None, 0.75),
]


def _model(arch: str):
    """A tiny random model; ``llama4kv``: the tiny llama with 4 KV heads (so adaptive budgets really split)."""
    if arch != "llama4kv":
        return tiny_model(arch)
    from harness.attention import install
    from harness.models import build_random_model

    cfg = {**TINY_ARCHS["llama"], "num_attention_heads": 8, "num_key_value_heads": 4, "hidden_size": 128}
    model = build_random_model(cfg, torch.float32, seed=3).eval()
    install(model, "sdpa")
    return model


class _Logits:
    """Digest of every logit the model returns (bit for bit), from a forward hook."""

    def __init__(self, model):
        self.digest = hashlib.sha256()
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.digest.update(output.logits.detach().float().contiguous().numpy().tobytes())

    def take(self) -> str:
        out, self.digest = self.digest.hexdigest()[:16], hashlib.sha256()
        return out


class _Tok:
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _cells() -> list[Cell]:
    cells = []
    for name, policy, r in GRID:
        label, method, default, safeguard = build_method(load_method_config(name))
        cells.append(Cell(f"{label}/{policy or default}/{r}", method, r, None, policy or default, safeguard))
    return cells


def decode_grid(arch: str, monkeypatch=None) -> dict[str, dict]:
    """Per configuration: its tokens decoded alone and a digest of their logits, its tokens in the batch of every
    prefill-only configuration (rule configurations: of every rule configuration) and that batch's logit digest,
    and its kept entries per (layer, head)."""
    import harness.protocol as P

    original = P.eos_ids
    P.eos_ids = lambda model, tok: set()  # every row decodes exactly STEPS tokens
    try:
        model = _model(arch)
        logits = _Logits(model)
        step = ConfigStep(model, _Tok())
        g = torch.Generator().manual_seed(11)
        ctx = torch.randint(3, 1000, (1, N_CONTEXT), generator=g)
        q = torch.randint(3, 1000, (1, 5), generator=g)
        cells = _cells()
        pre = step.prefill(ctx, cells)
        out: dict[str, dict] = {}
        contexts = {}
        for c in cells:
            contexts[c.label] = step.compress(c, pre)
            logits.take()
            alone, _, _ = step.decode([c], [contexts[c.label]], q, STEPS)
            out[c.label] = {"alone": alone[0], "logits": logits.take(), "kept": contexts[c.label].n_kept_per_head}
        for ruled in (False, True):
            part = [c for c in cells if (step.rule(c, N_CONTEXT) is not None) == ruled]
            logits.take()
            preds, _, _ = step.decode(part, [contexts[c.label] for c in part], q, STEPS)
            digest = logits.take()  # of the whole batch's logits
            for c, p in zip(part, preds):
                out[c.label]["batched"] = p
                out[c.label]["batch_logits"] = digest
        return out
    finally:
        P.eos_ids = original


def cpu_isa() -> str:
    """The vector instruction sets of this CPU (Linux ``/proc/cpuinfo`` flags: avx*, amx*, fma), sorted; "" where
    unknown. torch's ``cpu_capability`` says AVX512 on CPUs whose oneDNN/MKL float32 kernels still round differently
    (an AMX-capable Xeon gave other logit digests than the golden's machine, with the same tokens)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))))


def platform() -> dict:
    """What float rounding depends on: the logit digests are compared only where this matches the golden's
    ``_platform`` (kept entries and tokens are compared everywhere)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_isa": cpu_isa()}


@pytest.fixture
def one_thread():
    """The golden logits were computed with one torch thread: the reduction order (and so the last bits) of a
    CPU matmul depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("arch", ARCHS)
def test_predictions_equal_the_padded_storage(arch, one_thread):
    data = json.loads(GOLDEN.read_text())
    golden, bitwise = data[arch], data["_platform"] == platform()
    now = decode_grid(arch)
    assert sorted(now) == sorted(golden)
    for label, ref in golden.items():
        assert now[label]["kept"] == ref["kept"], f"{arch} {label}: different kept entries"
        assert now[label]["alone"] == ref["alone"], f"{arch} {label}: decoded alone, the tokens changed"
        assert now[label]["batched"] == ref["batched"], f"{arch} {label}: decoded in a batch, the tokens changed"
        assert now[label]["alone"] == now[label]["batched"], f"{arch} {label}: batch and alone differ"
        if bitwise:  # every logit, bit for bit: what keeps larger models' predictions identical
            assert now[label]["logits"] == ref["logits"], f"{arch} {label}: decoded alone, the logits changed"
            assert now[label]["batch_logits"] == ref["batch_logits"], f"{arch} {label}: its batch's logits changed"


if __name__ == "__main__":
    golden = {"_platform": platform(), **{arch: decode_grid(arch) for arch in ARCHS}}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


def test_bytes_held_follow_the_kept_fraction():
    """kv_bytes_kept / kv_bytes_full is the logical kept fraction (within 0.01) for every method and policy of the
    grid: adaptive budgets hold their kept entries only (plus one int64 offset per head), not a cache padded to
    the longest head."""
    model = _model("llama4kv")
    step = ConfigStep(model, _Tok())
    ctx = torch.randint(3, 1000, (1, N_CONTEXT), generator=torch.Generator().manual_seed(12))
    cells = _cells()
    pre = step.prefill(ctx, cells)
    ragged = 0
    for c in cells:
        compressed = step.compress(c, pre)
        ragged += any(layer.ragged for layer in compressed.layers)
        assert abs(compressed.kv_bytes / pre.full_bytes - compressed.kept_fraction) < 0.01, c.label
    assert ragged >= 3  # the adaptive configurations really are ragged


def _entries(lengths, d=4, plain_len=None):
    """A ragged (or plain, ``plain_len``) LayerEntries whose key/value entries are numbered 1, 2, ..."""
    from harness.cache import LayerEntries

    if plain_len is not None:
        h = len(lengths)
        k = torch.arange(1, h * plain_len * d + 1, dtype=torch.float32).reshape(1, h, plain_len, d)
        return LayerEntries(k, -k, torch.arange(plain_len).expand(1, h, -1))
    t = sum(lengths)
    k = torch.arange(1, t * d + 1, dtype=torch.float32).reshape(t, d)
    return LayerEntries(k, -k, torch.arange(t), tuple(lengths))


def test_decode_layer_gathers_the_padded_layout_and_grows():
    """A ragged batch row and a plain one: the keys attention sees are each head's entries, then padding (the
    padding slots are masked, any finite value), then the appended tokens; appending past the capacity grows."""
    from harness.decode_cache import ContextLayer

    ragged, plain = _entries([3, 1]), _entries([2, 2], plain_len=2)
    layer = ContextLayer([ragged, plain], capacity=1)
    assert not layer.dense and layer.n_context == 3
    assert layer.keys.shape == (4 + 4 + 2 * 2 * 1, 4)  # held: the 8 entries (no padding) + 4 appended slots
    steps = [torch.full((2, 2, q, 4), 100.0 * (i + 1)) for i, q in enumerate((2, 1, 3))]  # grows twice
    for s in steps:
        keys, values = layer.update(s, -s)
    assert keys.shape == (2, 2, 3 + 6, 4) and torch.equal(values, -keys)
    appended = torch.cat(steps, dim=-2)  # (2, 2, 6, 4)
    assert torch.equal(keys[:, :, 3:], appended)
    rk = ragged.keys
    assert torch.equal(keys[0, 0, :3], rk[0:3])  # head 0: its three entries
    assert torch.equal(keys[0, 1, :1], rk[3:4])  # head 1: one entry, then two padding slots
    assert torch.equal(keys[1, :, :2], plain.keys[0])  # the plain row, then one padding slot per head
    assert layer.get_seq_length() == 9
    layer.keep_rows(torch.tensor([1]))  # the ragged row finished: only the plain row is gathered
    assert torch.equal(layer.materialize()[0], keys[1:])


def test_dense_decode_layer_appends_in_place():
    """Plain rows: one buffer; attention reads views of it (no copy per step); rows shorter than the longest are
    zero-padded, as the batch's mask expects."""
    from harness.decode_cache import ContextLayer

    a, b = _entries([3, 3], plain_len=3), _entries([2, 2], plain_len=2)
    layer = ContextLayer([a, b], capacity=2)
    assert layer.dense
    k1, _ = layer.update(torch.ones(2, 2, 2, 4), torch.ones(2, 2, 2, 4))
    k2, _ = layer.update(torch.full((2, 2, 1, 4), 2.0), torch.ones(2, 2, 1, 4))  # past the capacity: grows
    assert k2.shape == (2, 2, 6, 4)
    assert torch.equal(k2[0, :, :3], a.keys[0]) and torch.equal(k2[1, :, :2], b.keys[0])
    assert k2[1, :, 2].abs().sum() == 0  # the shorter row's padding
    assert torch.equal(k2[:, :, 3:5], torch.ones(2, 2, 2, 4)) and torch.equal(k2[:, :, 5], torch.full((2, 2, 4), 2.0))
    k3, _ = layer.update(torch.full((2, 2, 1, 4), 3.0), torch.ones(2, 2, 1, 4))
    assert k3.data_ptr() == k2.data_ptr()  # within the capacity: the same buffer, no copy


def test_uniform_steps_attend_without_a_mask(monkeypatch):
    """A uniform configuration decoded alone: after the question step (which needs its causal mask) every
    one-token step attends over the plain cache without a mask, as the full cache does; an adaptive one keeps
    the validity mask of its padded layout on every step."""
    import harness.attention as A

    calls = []
    sdpa = A.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append(attn_mask is None)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(A.F, "scaled_dot_product_attention", spy)
    model = _model("llama4kv")
    step = ConfigStep(model, _Tok())
    ctx = torch.randint(3, 1000, (1, N_CONTEXT), generator=torch.Generator().manual_seed(13))
    q = torch.randint(3, 1000, (1, 5), generator=torch.Generator().manual_seed(14))
    cells = {c.label: c for c in _cells()}
    pre = step.prefill(ctx, list(cells.values()))
    for label, masked_steps in (("keydiff/uniform/0.75", 1), ("nestedkv/adaptive/0.75", 4)):
        calls.clear()
        step.decode([cells[label]], [step.compress(cells[label], pre)], q, 4, eos=set())
        per_step = [calls[i : i + 2] for i in range(0, len(calls), 2)]  # 2 layers
        assert len(per_step) == 4
        assert [not any(s) for s in per_step] == [True] * masked_steps + [False] * (4 - masked_steps), label
        assert all(all(s) or not any(s) for s in per_step)  # both layers alike
