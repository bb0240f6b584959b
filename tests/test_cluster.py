"""Cluster runs: ``shard=i/n`` partitions a task's contexts (the shards' union is the unsharded run, run_ids and
resume are shared), and Hydra launchers (joblib on one host, submitit locally = the SLURM code path without
sbatch) write the same rows as sequential runs. Tiny random model, a few tokens per answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.plan import make_plan, parse_shard, shard_of
from harness.results import read_rows, result_files
from harness.run import compose, run

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu"]
# ``++``: set max_new_tokens whether or not conf/config.yaml declares the key
SMALL = ["task=ruler_1k", "task.tasks=[vt]", "++max_new_tokens=6"]
KEY = ["run_id", "sample_id"]


def _cfg(out, *overrides):
    return compose([*TINY, *SMALL, f"output_dir={out}", *overrides])


def _rows(folder) -> dict:
    rows = read_rows(folder)
    return {(r.run_id, r.sample_id): (r.prediction, r.kv_bytes_kept) for r in rows.itertuples()}


def _multirun(out, *overrides, timeout=300):
    done = subprocess.run(
        [sys.executable, "-m", "harness", "-m", *TINY, *SMALL, f"output_dir={out}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


# ------------------------------------------------------------------------------------------- shard=i/n
@pytest.mark.parametrize("value", ["2/2", "0/0", "1", "a/b", "-1/2", "1/2/3", "0.5"])
def test_bad_shard_fails_before_loading(tmp_path, value, monkeypatch):
    import harness.models as M

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before validation"))
    with pytest.raises(UsageError) as err:
        make_plan(_cfg(tmp_path, f"shard='{value}'"))
    assert "shard must be i/n with 0 <= i < n" in str(err.value) and "shard=0/4" in str(err.value)


def test_shard_syntax_and_assignment():
    assert parse_shard(None) is None and parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 4 ") == (3, 4)
    ids = [f"niah_single_1/{i}" for i in range(200)] + [f"vt/{i}" for i in range(200)]
    parts = [{c for c in ids if shard_of(c, 4) == i} for i in range(4)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)  # a partition
    assert all(60 < len(p) < 140 for p in parts)  # roughly balanced
    # a context's shard depends on its id alone: the first 8 bytes of its SHA-1 modulo n, the same in every process
    # (Python's own str hash differs per process: jobs on other hosts would disagree and rows would be lost)
    import hashlib
    import subprocess
    import sys

    assert [shard_of(c, 4) for c in ids] == [int(hashlib.sha1(c.encode()).hexdigest()[:16], 16) % 4 for c in ids]
    code = f"from harness.plan import shard_of; print([shard_of(c, 4) for c in {ids!r}])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env={**__import__("os").environ, "PYTHONHASHSEED": "12345"}, check=True)
    assert other.stdout.strip() == str([shard_of(c, 4) for c in ids])


def test_shards_union_equals_unsharded_and_resume_across_layouts(tmp_path):
    grid = ["methods=[full,keydiff]", "r=0.5", "n_samples=3"]
    whole = run(_cfg(tmp_path / "whole", *grid))
    assert len(whole) == 3 * 2
    shards = [run(_cfg(tmp_path / "sharded", *grid, f"shard={i}/2")) for i in range(2)]
    sharded = _rows(tmp_path / "sharded")
    assert sharded == _rows(tmp_path / "whole")  # same run_ids, same predictions, same bytes
    assert len(shards[-1]) == 6  # the last shard's run returns every row of its run_ids on disk (the union)
    files = result_files(tmp_path / "sharded")
    assert any("shard0of2" in p.name for p in files) and any("shard1of2" in p.name for p in files)
    # resume across layouts: the unsharded run over the shards' rows, and a 3-way layout over it, add nothing
    run(_cfg(tmp_path / "sharded", *grid))
    run(_cfg(tmp_path / "sharded", *grid, "shard=2/3"))
    assert result_files(tmp_path / "sharded") == files


# ---------------------------------------------------------------------------------------------- launchers
def test_joblib_multirun_equals_sequential_runs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    _multirun(tmp_path / "parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=keydiff,streamingllm",
              "r=0.5", "n_samples=2", "job=j${hydra:job.num}")
    names = sorted(p.name for p in result_files(tmp_path / "parallel"))
    assert names == ["part-j0.parquet", "part-j1.parquet"]  # one part file per job, named from hydra.job.num
    for m in ["keydiff", "streamingllm"]:
        run(_cfg(tmp_path / "sequential", f"method={m}", "r=0.5", "n_samples=2"))
    parallel = _rows(tmp_path / "parallel")
    assert len(parallel) == 2 * 2 and parallel == _rows(tmp_path / "sequential")


def test_submitit_local_shards_equal_unsharded_run(tmp_path):
    """hydra/launcher=submitit_local pickles each job and runs it in a fresh process, as on SLURM (minus sbatch)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _multirun(tmp_path / "shards", "hydra/launcher=submitit_local", "method=keydiff", "r=0.5", "n_samples=2",
              "shard=0/2,1/2")
    run(_cfg(tmp_path / "whole", "method=keydiff", "r=0.5", "n_samples=2"))
    assert _rows(tmp_path / "shards") == _rows(tmp_path / "whole")
    assert len(result_files(tmp_path / "shards")) == 2


def test_slurm_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.models import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config", return_hydra_config=True,
            overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=a100", "shard=0/4"],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "a100" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240
    assert cfg.shard == "0/4"


# ------------------------------------------------------------------------------ device=auto on several GPUs
def test_device_auto_spreads_only_over_several_gpus(monkeypatch):
    import torch

    import harness.models as M

    assert not M.spreads_over_gpus("auto") or torch.cuda.device_count() > 1
    real_gpu = torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert M.spreads_over_gpus("auto") and not M.spreads_over_gpus("cuda") and not M.spreads_over_gpus("cuda:1")
    calls = []
    monkeypatch.setattr(M, "spread_model", lambda model, *a, **k: calls.append(model) or model)
    model, _ = M.load_model("tiny-llama-random", dtype="float32", device="auto")  # random weights: dispatched after
    assert calls == [model] and next(model.parameters()).device.type == "cpu"  # never .to("cuda") as a whole
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    calls.clear()
    if not real_gpu:  # one GPU: the plain path, model.to("cuda"), which fails here for want of one
        with pytest.raises((AssertionError, RuntimeError)):
            M.load_model("tiny-llama-random", dtype="float32", device="auto")
        assert calls == []


def test_dispatched_model_gives_the_same_rows(tmp_path, monkeypatch):
    """accelerate's per-layer hooks (what device_map="auto" installs) around the harness's prefill, compressed
    caches, rerotation, H2O eviction and batched decode: here every layer stays on the CPU, so this checks the
    hooks and the per-layer device handling run, not a real split over GPUs."""
    import harness.models as M

    grid = ["methods=[full,keydiff_adaptive,streamingllm_rerotate,h2o_online]", "r=0.5", "n_samples=1"]
    plain = run(_cfg(tmp_path / "plain", *grid))
    original = M.load_model

    def dispatched(*a, **k):
        model, tok = original(*a, **k)
        n = model.config.num_hidden_layers
        device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
                      **{f"model.layers.{i}": "cpu" for i in range(n)}}
        model = M.spread_model(model, device_map, main_device="cpu", force_hooks=True)
        assert hasattr(model.model.layers[0], "_hf_hook") and hasattr(model.model.rotary_emb, "_hf_hook")
        return model, tok

    monkeypatch.setattr(M, "load_model", dispatched)
    run(_cfg(tmp_path / "hooked", *grid))
    assert _rows(tmp_path / "hooked") == _rows(tmp_path / "plain") and len(plain) == 1 + 3
