"""A run's bookkeeping on tiny random models: per-context claims between identical runs on one folder,
leftovers of a killed run cleaned at the next start, progress inside a context, clear errors for an output
folder that is a file or holds a Parquet file of someone else; the console entry point from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness.run as run_mod
from harness.results import ContextClaims, Lock, NotAResultFile, ResultsError, ResultWriter, result_files
from harness.errors import UsageError
from harness.run import compose, run
from harness.sweep import SweepRunner

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny-llama-random", "progress=false", "dtype=float32", "device=cpu"]
NIAH3 = ["method=keydiff", "task=ruler_1k", "task.tasks=[niah_single_1]", "n_samples=3", "r=0.5", "max_new_tokens=4"]


def _cfg(folder, *overrides):
    return compose([*TINY, f"output_dir={folder}", *overrides])


@pytest.mark.parametrize("owner", ["dies", "finishes"])
def test_a_context_another_run_computes_is_skipped_then_completed(tmp_path, monkeypatch, capsys, owner):
    """Another live run holds the first context when this run reaches it: this run computes the other contexts
    first, then comes back. When the other run dies without writing it, this run computes it; when the other
    run finishes it, this run computes nothing more: every row once on disk."""
    monkeypatch.setattr(run_mod, "CLAIM_POLL_S", 0.05)
    groups, other, calls = {}, {}, []
    real_group_by, real_run_group = run_mod.group_by_context, SweepRunner.run_group

    def group_by(records):
        groups.update(real_group_by(records))
        return real_group_by(records)

    class Claims(ContextClaims):
        def take(self, cid):
            if not other:  # another run takes the first context just before this one
                other["cid"] = cid
                other["lock"] = Lock.take(self.path(cid), {"pid": 999999, "host": "elsewhere"})
            return super().take(cid)

    def run_group(self, group, done):
        calls.append(group[0].context_id)
        rows = real_run_group(self, group, done)
        if len(calls) == 2 and "lock" in other:  # the other run ends while this one computes its last context
            if owner == "finishes":
                w = ResultWriter(tmp_path, "other")
                w.add(real_run_group(self, groups[other["cid"]], set()))
                w.close()
            other.pop("lock").release(remove=False)
        return rows

    monkeypatch.setattr(run_mod, "group_by_context", group_by)
    monkeypatch.setattr(run_mod, "ContextClaims", Claims)
    monkeypatch.setattr(SweepRunner, "run_group", run_group)
    rows = run(_cfg(tmp_path, *NIAH3))
    assert f"context {other['cid']} is being computed by another run of these configurations (pid 999999 on " \
           "elsewhere): skipped for now" in capsys.readouterr().err
    assert calls[0] != other["cid"] and other["cid"] not in calls[:2]  # skipped first
    assert calls.count(other["cid"]) == (1 if owner == "dies" else 0)
    assert len(rows) == 3
    on_disk = pd.concat([pd.read_parquet(p) for p in result_files(tmp_path)])
    assert len(on_disk) == 3  # nothing computed twice
    assert not (tmp_path / ".kvbench").exists()  # claims and the writer's registry entry are gone


def test_a_rerun_cleans_what_a_killed_run_left(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, *NIAH3)
    real = SweepRunner.run_group
    calls = {"n": 0}

    def killed_on_third(self, group, done):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, group, done)

    monkeypatch.setattr(SweepRunner, "run_group", killed_on_third)
    closed = ResultWriter.close
    monkeypatch.setattr(ResultWriter, "close", lambda self: self.lock.release(remove=False))  # killed: no merge
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    parts = [p.name for p in result_files(tmp_path)]
    assert len(parts) == 2  # one part per finished context, never merged
    (tmp_path / f".{parts[0]}.0badcafe.tmp").write_bytes(b"half a file")
    monkeypatch.setattr(ResultWriter, "close", closed)
    monkeypatch.setattr(SweepRunner, "run_group", real)
    rows = run(cfg)
    assert len(rows) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith("part-") and n.endswith(".parquet") for n in left), left


def test_progress_moves_inside_a_context_with_rows_and_time_left(tmp_path, monkeypatch):
    """4 configurations decoded one at a time: the bar counts rows (sample x configuration) after every decode
    batch, so it moves inside a context, its total gives a time left, and its count never lags a context."""
    seen = []

    class Bar:
        def __init__(self, iterable=None, total=None, **kw):
            self.total, self.n = total, 0
            seen.append(self)
            self.events = []

        def update(self, n=1):
            self.n += n
            self.events.append(("update", n))

        def set_postfix_str(self, s="", refresh=True):
            self.events.append(("note", s))

        def refresh(self):
            pass

        def close(self):
            pass

        def __iter__(self):  # the old loop iterated the bar over contexts
            return iter([])

    monkeypatch.setattr(run_mod, "tqdm", Bar)
    run(_cfg(tmp_path, "methods=[keydiff,streamingllm]", "r=[0.5,0.9]", "task=ruler_1k", "task.tasks=[niah_single_1]",
             "n_samples=2", "max_new_tokens=4", "decode_batch_size=1"))
    bar = seen[0]
    assert bar.total == 8 and bar.n == 8  # 2 contexts x 4 configurations
    updates = [n for kind, n in bar.events if kind == "update" and n]
    assert updates == [1] * 8  # one step per decode batch, four per context
    notes = [s for kind, s in bar.events if kind == "note"]
    assert any(s.startswith("context 1/2: prefill") for s in notes)
    assert "context 1/2: decoded 2/4 configurations" in notes and "context 2/2: decoded 4/4 configurations" in notes


def test_output_dir_errors_name_the_file_before_weights_load(tmp_path, monkeypatch):
    import harness.models as M

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    a_file = tmp_path / "scores.csv"
    a_file.write_text("x")
    with pytest.raises((ResultsError, UsageError)) as err:  # the run's output_dir check comes first
        run(_cfg(a_file, *NIAH3))
    assert "is a file, not a folder" in str(err.value) and "corrupt" not in str(err.value)
    folder = tmp_path / "runs"
    folder.mkdir()
    pd.DataFrame({"id": [1], "text": ["mine"]}).to_parquet(folder / "my_table.parquet")
    with pytest.raises(NotAResultFile) as err:
        run(_cfg(folder, *NIAH3))
    msg = str(err.value)
    assert "my_table.parquet is a Parquet file but not a kvbench result file" in msg and "run_id" in msg
    assert "delete" not in msg.lower()
    assert (folder / "my_table.parquet").exists()  # untouched


def _entry(args, cwd, **env):
    """The ``kvbench`` console script's code (``harness.__main__:entry``), started from another folder."""
    code = "import sys; from harness.__main__ import entry; sys.argv[0] = 'kvbench'; sys.exit(entry())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_console_script_finds_its_configs_from_any_folder(tmp_path):
    out = _entry(["method=keydiff", "task=ruler_1k", "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "name: keydiff" in out.stdout and "length: 1024" in out.stdout
    out = _entry(["method=keydiff", "r=1.5", f"output_dir={tmp_path / 'o'}"], tmp_path)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: r=1.5 is outside [0, 1)")
    line = "kvbench method=keyd"  # Hydra's bash completion, as `eval "$(kvbench -sc install=bash)"` sets it up
    out = _entry(["-sc", "query=bash"], tmp_path, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert out.returncode == 0 and "method=keydiff" in out.stdout and "method=keydiff_adaptive" in out.stdout
