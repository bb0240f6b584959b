"""RULER prebuilt by kvpress (hub simonjegou/ruler): local hub-layout parquet and jsonl, sampling, metrics, errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import tasks.ruler
from harness.models import CONF_DIR
from harness.errors import UsageError
from harness.plan import build_task
from harness.protocol import encode_context, encode_question
from tasks import DataMissing, make_task
from tasks.ruler_kvpress import RulerKvpress

NIAH_PREFIX = " The special magic number for {k} mentioned in the provided text is"


def _rows(n_per_task: int = 4) -> list[dict]:
    """Rows shaped as kvpress's set: one per sample, the task's rows interleaved with other tasks' rows."""
    rows = []
    for i in range(n_per_task):
        rows.append({
            "context": f"A special magic number is hidden within the following text.\nnoise {i}. One of the special "
                       f"magic numbers for key-{i} is: {1000 + i}. noise.",
            "question": f"\nWhat is the special magic number for key-{i} mentioned in the provided text?",
            "answer_prefix": NIAH_PREFIX.format(k=f"key-{i}"),
            "answer": [str(1000 + i)],
            "task": "niah_single_1",
            "max_new_tokens": 128,
        })
        rows.append({
            "context": f"Answer the question based on the given documents.\n\nDocument 1:\nParis is in France {i}.",
            "question": f"\n\nQuestion: where is Paris {i}?",
            "answer_prefix": " Answer:",
            "answer": ["France", "FR"],
            "task": "qa_1",
            "max_new_tokens": 32,
        })
    return rows


def _write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def hub_dir(tmp_path):
    """The hub's layout: <dir>/<config>/test-00000-of-00001.parquet."""
    _write_parquet(tmp_path / "hub" / "4096" / "test-00000-of-00001.parquet", _rows())
    return tmp_path / "hub"


def test_hub_layout_parquet_records(hub_dir):
    task = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir))
    assert task.max_length() == 4096
    data = task.load(None, None, 42)
    assert not data.skipped
    recs = data.records
    assert len(recs) == 8 and {r.task for r in recs} == {"niah_single_1", "qa_1"}
    by_id = {r.sample_id: r for r in recs}
    niah = by_id["niah_single_1/2"]
    src = _rows()[4]  # the third niah row in file order
    assert niah.context == src["context"] and niah.question == src["question"]
    assert niah.answer_prefix == src["answer_prefix"] and niah.answers == ["1002"]
    assert niah.max_new_tokens == 128 and niah.metric == "string_match_all"
    assert niah.chat_template is True and niah.length_bucket == 4096 and niah.suite == "ruler_kvpress"
    qa = by_id["qa_1/0"]
    assert qa.answers == ["France", "FR"] and qa.metric == "string_match_part" and qa.max_new_tokens == 32
    assert len({r.context_id for r in recs}) == 8  # distinct contexts, distinct ids


def test_jsonl_and_single_parquet_file(tmp_path):
    _write_jsonl(tmp_path / "j" / "8192.jsonl", _rows(3))
    _write_parquet(tmp_path / "p" / "16384.parquet", _rows(2))
    a = make_task("ruler_kvpress", length=8192, data_dir=str(tmp_path / "j")).load(None, None, 0).records
    b = make_task("ruler_kvpress", length=16384, data_dir=str(tmp_path / "p")).load(None, None, 0).records
    assert len(a) == 6 and {r.length_bucket for r in a} == {8192}
    assert len(b) == 4 and {r.length_bucket for r in b} == {16384}
    assert sorted(r.answers[0] for r in a if r.task == "niah_single_1") == ["1000", "1001", "1002"]


def test_subsampling_is_seeded_and_prefix_stable(hub_dir):
    task = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir))

    def ids(n, seed):
        return [r.sample_id for r in task.load(None, n, seed).records if r.task == "niah_single_1"]

    assert ids(2, 42) == ids(3, 42)[:2] == ids(4, 42)[:2]
    assert ids(2, 42) == ids(2, 42)
    assert sorted(ids(4, 42)) == sorted(ids(4, 7)) == [f"niah_single_1/{i}" for i in range(4)]
    assert len(task.load(None, 1, 42).records) == 2  # one per task


def test_metrics_are_rulers(hub_dir):
    import tasks.ruler_kvpress as mod

    assert mod.METRICS is tasks.ruler.METRICS  # imported, not copied
    task = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir))
    recs = {r.sample_id: r for r in task.load(None, None, 0).records}
    assert task.score(recs["niah_single_1/1"], " 1001.") == 100.0
    assert task.score(recs["niah_single_1/1"], " 1000") == 0.0
    assert task.score(recs["qa_1/0"], "It is fr") == 100.0  # part: any reference, case-insensitive
    assert task.score(recs["qa_1/0"], "Germany") == 0.0


def test_tasks_subset_and_absent_task(hub_dir):
    data = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir), tasks=["qa_1", "vt"]).load(None, None, 0)
    assert {r.task for r in data.records} == {"qa_1"}
    assert set(data.skipped) == {"vt"} and "no rows of task vt" in data.skipped["vt"]
    with pytest.raises(ValueError, match="unknown task"):
        make_task("ruler_kvpress", length=4096, tasks=["nope"])
    with pytest.raises(ValueError, match="4096, 8192, 16384"):
        make_task("ruler_kvpress", length=2048)


def test_missing_local_data_names_files(tmp_path):
    task = make_task("ruler_kvpress", length=8192, data_dir=str(tmp_path))
    data = task.load(None, 5, 42)
    assert not data.records and list(data.skipped) == ["all"]
    with pytest.raises(DataMissing) as e:
        task.rows()
    msg = str(e.value)
    assert data.skipped["all"] == msg
    assert f"{tmp_path}/8192/test-00000-of-00001.parquet" in msg and "8192.jsonl" in msg
    assert "simonjegou/ruler" in msg and f"task.data_dir={tmp_path}" in msg


def test_missing_columns(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "answer_prefix"} for r in _rows(1)]
    _write_jsonl(tmp_path / "4096.jsonl", rows)
    with pytest.raises(DataMissing, match="lacks the column"):
        make_task("ruler_kvpress", length=4096, data_dir=str(tmp_path)).rows()


def test_offline_hub_fails_fast(hf_cache, monkeypatch):
    import datasets

    real, offline = datasets.load_dataset, []

    def load_dataset(*a, **k):
        offline.append(datasets.config.HF_HUB_OFFLINE)
        return real(*a, **k)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataMissing) as e:
        make_task("ruler_kvpress", length=4096).check_data()  # before any model loads
    assert "not reachable" in str(e.value) and "simonjegou/ruler" in str(e.value)
    data = make_task("ruler_kvpress", length=4096).load(None, 5, 42)
    assert not data.records and "not reachable" in data.skipped["all"]
    assert offline and all(offline)  # only the local cache was looked at, never the hub
    with pytest.raises(DataMissing, match="hub disabled"):
        make_task("ruler_kvpress", length=4096, hub=None).rows()


def test_check_data_reports_missing_local_data(tmp_path):
    with pytest.raises(DataMissing, match=f"task.data_dir={tmp_path}"):
        make_task("ruler_kvpress", length=4096, data_dir=str(tmp_path)).check_data()


def test_config_folder_itself_as_data_dir(hub_dir):
    """data_dir pointing at the downloaded config folder (<dir>/4096 holding test-*.parquet) reads it, not
    <dir>/4096/4096/."""
    task = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir / "4096"))
    task.check_data()
    assert len(task.load(None, None, 0).records) == 8
    with pytest.raises(DataMissing):  # the 4096 folder is not the 8192 config
        make_task("ruler_kvpress", length=8192, data_dir=str(hub_dir / "4096")).check_data()


def test_save_to_disk_copies(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_rows(2))
    ds.save_to_disk(str(tmp_path / "a" / "4096"))  # a Dataset saved under the config's name
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "b" / "8192"))  # a DatasetDict, same
    for sub, length in (("a", 4096), ("a/4096", 4096), ("b", 8192), ("b/8192", 8192)):
        recs = make_task("ruler_kvpress", length=length, data_dir=str(tmp_path / sub)).load(None, None, 0).records
        assert len(recs) == 4 and {r.length_bucket for r in recs} == {length}, sub


def test_save_to_disk_copy_says_its_config(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_rows(1), info=datasets.DatasetInfo(config_name="8192"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    task = make_task("ruler_kvpress", length=8192, data_dir=str(tmp_path / "saved"))
    assert len(task.load(None, None, 0).records) == 2
    with pytest.raises(DataMissing, match="save_to_disk copy of config 4096"):  # a copy of 8192 is not 4096
        make_task("ruler_kvpress", length=4096, data_dir=str(tmp_path / "saved")).rows()


def test_unknown_layout_is_refused(tmp_path):
    _write_parquet(tmp_path / "ruler" / "test-00000-of-00001.parquet", _rows(1))  # which length? unknown
    with pytest.raises(DataMissing, match="no 4096/test-"):
        make_task("ruler_kvpress", length=4096, data_dir=str(tmp_path / "ruler")).rows()


def test_configs_and_plan_check():
    for name, length in (("ruler_kvpress_4k", 4096), ("ruler_kvpress_8k", 8192), ("ruler_kvpress_16k", 16384)):
        cfg = OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml")
        tname, task, _ = build_task(cfg)
        assert tname == name and isinstance(task, RulerKvpress) and task.max_length() == length
        assert task.chat_template is True and task.hub == "simonjegou/ruler" and task.data_dir is None


def test_plan_rejects_16k_on_8k_model():
    from harness.plan import make_plan
    from harness.run import compose

    with pytest.raises(UsageError, match="needs 16384 tokens"):
        make_plan(compose(["task=ruler_kvpress_16k", "model=smollm2-135m", "method=keydiff", "r=0.5"]))


def test_records_encode_with_the_protocol(hub_dir, smollm_tokenizer):
    rec = make_task("ruler_kvpress", length=4096, data_dir=str(hub_dir)).load(None, 1, 0).records[0]
    ctx = encode_context(smollm_tokenizer, rec).context_ids
    q = encode_question(smollm_tokenizer, rec)
    text_ctx = smollm_tokenizer.decode(ctx[0])
    text_q = smollm_tokenizer.decode(q[0])
    assert rec.context in text_ctx and "<|im_start|>user" in text_ctx  # chat template: context opens the user turn
    assert text_q.startswith(rec.question) and text_q.endswith(rec.answer_prefix)
    assert "<|im_start|>assistant" in text_q
