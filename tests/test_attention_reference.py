"""The attention statistics the methods score with are the model's own attention.

H2O and SnapKV rebuild attention from the post-RoPE queries and keys the harness kernel hands them (their own
softmax, their own scale, chunked). Here the reference is transformers' stock ``eager`` attention of the same
weights, asked for its probabilities (``output_attentions=True``): H2O's scores must be the column sums of
those matrices averaged over each KV head's query group, and SnapKV's votes the mean of their last
``window_size`` rows. A wrong scale (Gemma 3 uses ``query_pre_attn_scalar``, not the head dimension), a
pre-RoPE query, a missed QK-norm or a GQA head mix-up fails this test on at least one architecture.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_ARCHS, tiny_model
from harness.models import build_random_model
from harness.protocol import compressed_layers, prefill
from methods.h2o import H2O
from methods.snapkv import SnapKV, pool_votes

N = 150


def reference_attentions(arch: str, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per layer (1, H_q, n, n) probabilities from transformers' stock eager kernel (no harness code)."""
    model = build_random_model(TINY_ARCHS[arch], torch.float32, seed=0).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    return out.attentions


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 1000, (1, N), generator=torch.Generator().manual_seed(11))


def group_mean(a: torch.Tensor, h_kv: int) -> torch.Tensor:
    """(H_q, n) -> (H_kv, n): mean over each KV head's G consecutive query heads."""
    h_q, n = a.shape
    return a.reshape(h_kv, h_q // h_kv, n).mean(dim=1)


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_h2o_scores_are_column_sums_of_the_models_attention(arch, ids):
    attn = reference_attentions(arch, ids)
    h_kv = TINY_ARCHS[arch]["num_key_value_heads"]
    # block_size 16 < N: several query blocks, so the chunking is exercised against the dense reference
    _, scores, _, _ = prefill(tiny_model(arch), ids, {"h2o": H2O(block_size=16)})
    layers = compressed_layers(tiny_model(arch))[0]
    assert set(scores["h2o"]) == set(layers) and layers
    for i in layers:
        expected = group_mean(attn[i][0].sum(dim=1), h_kv)  # column sums: sum over query rows
        torch.testing.assert_close(scores["h2o"][i], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_snapkv_votes_are_the_windows_attention(arch, ids):
    w = 20
    attn = reference_attentions(arch, ids)
    h_kv = TINY_ARCHS[arch]["num_key_value_heads"]
    method = SnapKV(window_size=w, kernel_size=5, pooling="avg")
    _, scores, _, _ = prefill(tiny_model(arch), ids, {"snapkv": method})
    for i in compressed_layers(tiny_model(arch))[0]:
        votes = attn[i][0][:, N - w :, : N - w].mean(dim=1)  # (H_q, N - w)
        expected = pool_votes(group_mean(votes, h_kv), 5, "avg")
        torch.testing.assert_close(scores["snapkv"][i][:, : N - w], expected, rtol=1e-4, atol=1e-6)
