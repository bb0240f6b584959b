"""tasks.hub: with the hub unreachable, data already in the local Hugging Face cache (hub cache or datasets cache) is
used, and data that is not fails at once with the suite's message, before any model loads; no request, no retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import DataMissing, make_task
from tasks.data import hub_rows
from tasks.hub import HubUnavailable, hub_dataset, hub_file

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
PASSKEY = {"id": 0, "context": "noise. The pass key is 12345. noise.", "input": "What is the pass key?",
           "answer": ["12345"], "options": []}
RULER_ROW = {"context": "noise. One of the special magic numbers for key-1 is: 1001.", "question": "\nWhat is it?",
             "answer_prefix": " The number is", "answer": ["1001"], "task": "niah_single_1", "max_new_tokens": 128}
RULER_CARD = """---
configs:
- config_name: '4096'
  data_files:
  - split: test
    path: 4096/test-*
- config_name: '8192'
  data_files:
  - split: test
    path: 8192/test-*
---
"""


def snapshot(hub_cache: Path, repo: str, files: dict[str, object]) -> Path:
    """A dataset repo in the hub cache as huggingface_hub leaves it: ``datasets--<owner>--<name>/snapshots/<sha>/``
    with ``refs/main`` naming the snapshot. ``files``: path in the repo -> text, or rows (.parquet / .jsonl)."""
    repo_dir = hub_cache / ("datasets--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / SHA
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(content), path)
        elif name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")
        else:
            path.write_text(str(content), encoding="utf-8")
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(SHA)
    return snap


def datasets_cache(ds_cache: Path, repo: str, config: str, rows: list[dict], tmp_path: Path) -> None:
    """The Arrow cache an online ``load_dataset(repo, config)`` leaves (``<owner>___<name>/<config>/0.0.0/<hash>/``
    with ``<name>-test.arrow`` and ``dataset_info.json``), written by ``datasets``' parquet builder from a local file
    under the repo's name (a download names the folder ``<owner>___<name>``; a local build, ``<name>``)."""
    from datasets.data_files import DataFilesDict, DataFilesList
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    source = tmp_path / f"{config}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    owner, name = repo.split("/")

    class Builder(Parquet):  # one named config, as a hub repo's card declares it
        BUILDER_CONFIGS = [ParquetConfig(name=config,
                                         data_files=DataFilesDict({"test": DataFilesList([str(source)], [None])}))]

    Builder(cache_dir=str(ds_cache), dataset_name=name, config_name=config, hash=SHA[:16]).download_and_prepare()
    (ds_cache / name).rename(ds_cache / f"{owner}___{name}")


# ------------------------------------------------------------------------------------------ the helper
def test_hub_file_from_the_hub_cache(hf_cache):
    hub, _ = hf_cache
    snap = snapshot(hub, "owner/set", {"a.jsonl": [PASSKEY]})
    assert hub_file("owner/set", "a.jsonl") == snap / "a.jsonl"
    with pytest.raises(HubUnavailable, match=r"owner/set \(b.jsonl\) is not in the local Hugging Face cache"):
        hub_file("owner/set", "b.jsonl")


def test_hub_dataset_from_the_hub_cache_snapshot(hf_cache):
    hub, _ = hf_cache
    snapshot(hub, "simonjegou/ruler", {"README.md": RULER_CARD, "4096/test-00000-of-00001.parquet": [RULER_ROW]})
    assert hub_rows("simonjegou/ruler", "4096", "test") == [RULER_ROW]
    with pytest.raises(HubUnavailable, match="config 8192, split test"):  # that config was never downloaded
        hub_dataset("simonjegou/ruler", "8192", split="test")


def test_hub_dataset_from_the_datasets_cache(hf_cache, tmp_path):
    _, ds_cache = hf_cache
    datasets_cache(ds_cache, "simonjegou/ruler", "4096", [RULER_ROW], tmp_path)
    assert hub_rows("simonjegou/ruler", "4096", "test") == [RULER_ROW]
    with pytest.raises(HubUnavailable, match="Couldn't find cache for simonjegou/ruler for config '8192'"):
        hub_rows("simonjegou/ruler", "8192", "test")


def test_nothing_cached_fails_at_once_without_a_request(hf_cache, monkeypatch):
    import datasets
    import huggingface_hub

    seen = []
    real = datasets.load_dataset

    def load_dataset(*a, **k):  # what offline mode was when datasets was called
        seen.append((datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE))
        return real(*a, **k)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("hub request"))
    t0 = time.time()
    with pytest.raises(HubUnavailable, match="hub is not reachable and owner/none"):
        hub_dataset("owner/none", "cfg", split="test")
    with pytest.raises(HubUnavailable):
        hub_file("owner/none", "x.jsonl")
    assert time.time() - t0 < 5
    assert seen and all(flags == (True, True) for flags in seen)  # the cache was read with requests switched off
    assert datasets.config.HF_HUB_OFFLINE == huggingface_hub.constants.HF_HUB_OFFLINE  # restored afterwards


# ------------------------------------------------------------------------------------------ the suites
def test_infinitebench_uses_the_hub_cache(hf_cache):
    hub, _ = hf_cache
    snapshot(hub, "xinrongzhang2022/InfiniteBench", {"passkey.jsonl": [PASSKEY]})
    task = make_task("infinitebench", tasks=["passkey", "kv_retrieval"])
    task.check_data()  # one task readable: the run goes on, the other is reported as skipped
    data = task.load(None, None, 0)
    assert [r.sample_id for r in data.records] == ["passkey/0"] and data.records[0].answers == ["12345"]
    assert set(data.skipped) == {"kv_retrieval"}
    assert "kv_retrieval.jsonl) is not in the local Hugging Face cache" in data.skipped["kv_retrieval"]


def test_infinitebench_nothing_cached_is_one_message(hf_cache):
    task = make_task("infinitebench")
    with pytest.raises(DataMissing) as e:
        task.check_data()
    msg = str(e.value)
    assert msg.startswith("InfiniteBench: none of the selected tasks (passkey, number_string,")
    assert "hub is not reachable" in msg and "the same for 9 more" in msg
    assert "hf download xinrongzhang2022/InfiniteBench --repo-type dataset" in msg and "data/<task>.jsonl" in msg


def test_ruler_kvpress_uses_both_caches(hf_cache, tmp_path):
    hub, ds_cache = hf_cache
    snapshot(hub, "simonjegou/ruler", {"README.md": RULER_CARD, "8192/test-00000-of-00001.parquet": [RULER_ROW]})
    datasets_cache(ds_cache, "simonjegou/ruler", "4096", [RULER_ROW], tmp_path)
    for length in (4096, 8192):
        task = make_task("ruler_kvpress", length=length)
        task.check_data()
        recs = task.load(None, None, 0).records
        assert len(recs) == 1 and recs[0].answers == ["1001"] and recs[0].length_bucket == length
    with pytest.raises(DataMissing, match="not in the local Hugging Face cache"):
        make_task("ruler_kvpress", length=16384).check_data()


def test_ruler_hub_fallbacks_use_the_cache(hf_cache):
    from tasks import ruler_data

    hub, _ = hf_cache
    snapshot(hub, ruler_data.ESSAY_HUB_ID, {"data/train-00000-of-00001.parquet": [{"text": "An essay. It ends."}]})
    text, source = ruler_data.load_essays(None, [], use_hub=True)
    assert text == "An essay. It ends." and source == f"hub:{ruler_data.ESSAY_HUB_ID}"
    with pytest.raises(DataMissing, match="HubUnavailable"):
        ruler_data.load_qa("squad", None, [], use_hub=True)


def test_offline_cluster_run_reads_the_cache(tmp_path):
    """As on a compute node: only HF_HOME and HF_HUB_OFFLINE=1 set, the cache filled beforehand."""
    home = tmp_path / "hf"
    snapshot(home / "hub", "xinrongzhang2022/InfiniteBench", {"passkey.jsonl": [PASSKEY]})
    datasets_cache(home / "datasets", "simonjegou/ruler", "4096", [RULER_ROW], tmp_path)
    code = (
        "from tasks import make_task\n"
        "ib = make_task('infinitebench', tasks=['passkey']); ib.check_data()\n"
        "rk = make_task('ruler_kvpress', length=4096); rk.check_data()\n"
        "print(len(ib.load(None, None, 0).records), len(rk.load(None, None, 0).records))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]


def test_cli_offline_fails_fast_before_the_model(tmp_path):
    """The hub unreachable (a closed local port, HF_HUB_OFFLINE unset): the CLI ends with InfiniteBench's message
    in seconds, without a request or a retry line, before the model loads (the old loader retried every file)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "harness", "task=infinitebench", "method=full", "n_samples=1",
           "model=tiny-llama-random", "device=cpu", f"output_dir={tmp_path / 'runs'}"]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "error: InfiniteBench: none of the selected tasks" in out.stderr
    assert "Retry" not in out.stderr and "loaded in" not in out.stderr  # no retry, no model
    assert time.time() - t0 < 60


def test_mmlu_pro_uses_the_hub_cache(hf_cache):
    hub, _ = hf_cache

    def q(qid, cot=""):
        return {"question_id": qid, "question": f"Q{qid}?", "options": ["a", "b", "c", "d"], "answer": "B",
                "answer_index": 1, "cot_content": cot, "category": "math", "src": "s"}

    snapshot(hub, "TIGER-Lab/MMLU-Pro", {
        "data/test-00000-of-00001.parquet": [q(i) for i in range(3)],
        "data/validation-00000-of-00001.parquet": [q(100 + i, "A: Let's think step by step. (B).") for i in range(5)],
    })
    recs = make_task("mmlu_pro").load(None, None, 0).records
    assert sorted(r.sample_id for r in recs) == ["math/0", "math/1", "math/2"]


@pytest.mark.parametrize("suite", ["longbench", "loogle", "mmlu_pro"])
def test_other_suites_fail_fast_when_nothing_is_cached(hf_cache, suite):
    t0 = time.time()
    with pytest.raises(DataMissing, match="HubUnavailable"):
        make_task(suite).load(None, 1, 0)
    assert time.time() - t0 < 10
