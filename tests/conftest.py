"""Shared fixtures: the real SmolLM2 tokenizer (cached after the first load) and tiny random models."""

from __future__ import annotations

import os

import pytest
import torch

# tests never reach a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TINY_ARCHS = {
    "llama": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=49152,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "qwen3": dict(
        model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=49152,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "qwen2": dict(  # Qwen2.5: attention biases on q/k/v, no QK-norm (the qwen2.5-coder models)
        model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "gemma3": dict(
        model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=49152,
        max_position_embeddings=4096, sliding_window=32, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
}


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer from the installed package (no download)."""
    from harness.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


def tiny_model(arch: str, attn_impl: str = "sdpa", seed: int = 0):
    """A tiny random model of one architecture with the harness attention installed."""
    from harness.attention import install
    from harness.models import build_random_model

    model = build_random_model(TINY_ARCHS[arch], torch.float32, seed=seed).eval()
    install(model, attn_impl)
    return model


@pytest.fixture(params=sorted(TINY_ARCHS))
def tiny_arch(request):
    return request.param


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp (``HF_HOME``, hub cache, datasets cache) and an unreachable hub.

    The environment variables are set for subprocesses; the cache paths the libraries computed at import are
    patched too, so in-process loaders look there. Returns ``(hub_cache, datasets_cache)``.
    """
    import datasets
    from huggingface_hub import constants

    import tasks.base

    home = tmp_path / "hf_home"
    hub, ds = home / "hub", home / "datasets"
    hub.mkdir(parents=True)
    ds.mkdir()
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", hub), ("HF_DATASETS_CACHE", ds)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", ds)
    monkeypatch.setattr(tasks.base, "_HUB", False)
    return hub, ds
