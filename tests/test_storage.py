"""Cache storage (docs/protocol.md, "What a compressed cache holds"): adaptive budgets are held ragged (the kept
entries only, no padding to the longest head), uniform budgets as a plain cache, and neither changes a prediction.

``tests/data/storage_golden.json`` holds the greedy tokens that the padded storage (before ragged storage,
commit d76a17c) decoded for a small grid of configurations on tiny random models, each configuration alone and
the prefill-only ones as one batch (the sweep's way); the test decodes the same grid now and compares token for
token. Regenerate only on purpose: ``python tests/test_storage.py`` (then explain the change in the commit).
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
    """Per configuration: its tokens decoded alone (and a digest of their logits), its tokens in the batch of every prefill-only configuration
    (rule configurations: the batch of every rule configuration), and its kept entries per (layer, head)."""
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
            preds, _, _ = step.decode(part, [contexts[c.label] for c in part], q, STEPS)
            for c, p in zip(part, preds):
                out[c.label]["batched"] = p
        return out
    finally:
        P.eos_ids = original


@pytest.mark.parametrize("arch", ARCHS)
def test_predictions_equal_the_padded_storage(arch):
    golden = json.loads(GOLDEN.read_text())[arch]
    now = decode_grid(arch)
    assert sorted(now) == sorted(golden)
    for label, ref in golden.items():
        assert now[label]["kept"] == ref["kept"], f"{arch} {label}: different kept entries"
        assert now[label]["alone"] == ref["alone"], f"{arch} {label}: decoded alone, the tokens changed"
        assert now[label]["batched"] == ref["batched"], f"{arch} {label}: decoded in a batch, the tokens changed"
        assert now[label]["alone"] == now[label]["batched"], f"{arch} {label}: batch and alone differ"
        # every logit of the decode alone, bit for bit: what keeps larger models' predictions identical
        assert now[label]["logits"] == ref["logits"], f"{arch} {label}: decoded alone, the logits changed"


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({arch: decode_grid(arch) for arch in ARCHS}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
