"""Result files on disk: reading while another job of the same folder merges its part files."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from harness import report, results
from harness.results import ContextClaims, CorruptResultFile, ResultWriter, done_keys, read_rows


def _rows(run_id: str, n: int) -> list[dict]:
    return [{"run_id": run_id, "sample_id": f"s{i}", "score": float(i)} for i in range(n)]


def _other_job_merges_while_listed(monkeypatch, folder):
    """Job ``b`` has two part files on disk; the first listing a reader makes still shows them, and job ``b``
    merges them (new file, parts deleted) right after that listing, as in a parallel multirun."""
    other = ResultWriter(folder, "b")
    for i in range(2):
        other.add(_rows(f"b{i}", 3))
        other.flush()
    real = results.result_files
    calls = {"n": 0}

    def listing(paths, must_exist=False):
        found = real(paths, must_exist)
        calls["n"] += 1
        if calls["n"] == 1:
            other.close()  # the parts listed above are gone before they are opened
        return found

    monkeypatch.setattr(results, "result_files", listing)
    return calls


def test_readers_relist_when_a_part_file_vanishes(tmp_path, monkeypatch):
    mine = ResultWriter(tmp_path, "a")
    mine.add(_rows("a", 2))
    mine.close()
    calls = _other_job_merges_while_listed(monkeypatch, tmp_path)
    rows = read_rows(tmp_path)
    assert calls["n"] == 2  # listed again after the vanished part
    assert sorted(zip(rows["run_id"], rows["sample_id"])) == sorted(
        [("a", "s0"), ("a", "s1")] + [(f"b{i}", f"s{j}") for i in range(2) for j in range(3)])


def test_done_keys_and_tables_read_through_a_merge(tmp_path, monkeypatch):
    _other_job_merges_while_listed(monkeypatch, tmp_path)
    assert len(done_keys(tmp_path)) == 6
    monkeypatch.undo()
    _other_job_merges_while_listed(monkeypatch, tmp_path / "t")
    assert len(report.load_results(tmp_path / "t")) == 6


def test_a_file_that_stays_missing_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "result_files", lambda paths, must_exist=False: [tmp_path / "part-gone.parquet"])
    with pytest.raises(CorruptResultFile, match="kept disappearing"):
        read_rows(tmp_path)


def test_corrupt_file_is_not_retried(tmp_path, monkeypatch):
    (tmp_path / "part-bad.parquet").write_bytes(b"PAR1 not parquet")
    calls = []
    real = results.result_files
    monkeypatch.setattr(results, "result_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(CorruptResultFile, match="part-bad.parquet cannot be read"):
        read_rows(tmp_path)
    assert len(calls) == 1


def test_missing_folder_reads_as_empty_for_runs_and_errors_for_tables(tmp_path):
    assert read_rows(tmp_path / "none").empty and done_keys(tmp_path / "none") == set()
    with pytest.raises(results.ResultsError, match="does not exist"):
        report.load_results(tmp_path / "none")


def test_two_runs_of_one_job_ending_together_keep_both(tmp_path):
    first, second = ResultWriter(tmp_path, "same"), ResultWriter(tmp_path, "same")
    for w, name in ((first, "x"), (second, "y")):
        for i in range(2):  # two parts each: the merged file is written, then claimed
            w.add(_rows(f"{name}{i}", 2))
            w.flush()
    a, b = first.close(), second.close()
    assert a.name == "part-same.parquet" and b.name == f"part-same-{second.writer}.parquet"
    assert len(read_rows(tmp_path)) == 8
    assert sorted(p.name for p in results.result_files(tmp_path)) == sorted([a.name, b.name])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no merged temporary left behind


def test_a_taken_name_keeps_the_rows_in_the_part_files(tmp_path):
    w = ResultWriter(tmp_path, "j")
    w.add(_rows("z", 3))
    w.flush()
    for name in ("part-j.parquet", f"part-j-{w.writer}.parquet"):
        other = ResultWriter(tmp_path / "o", "k")
        other.add(_rows(name, 1))
        (tmp_path / name).write_bytes(other.close().read_bytes())
    with pytest.raises(results.ResultsError, match="rows stay in this run's part files"):
        w.close()
    assert len(read_rows(tmp_path)) == 5  # 3 of ours (still in their part file) + the 2 files that held the names


# ------------------------------------------------------------------------------- leftovers of killed runs
def _killed_writer(folder, job, n_parts=2, merged_too=False):
    """A run killed mid-way: its part files are on disk, plus the temporary files a kill leaves; its registry
    lock is released as the kernel does when the process dies."""
    w = ResultWriter(folder, job)
    for i in range(n_parts):
        w.add(_rows(f"{job}{i}", 2))
        w.flush()
    if merged_too:  # killed between linking the merged file and deleting its parts
        pd.concat([pd.read_parquet(p) for p in w.parts]).to_parquet(folder / f"part-{job}.parquet", index=False)
    (folder / f".part-{job}-{w.writer}-{n_parts:05d}.parquet.0badcafe.tmp").write_bytes(b"half a file")
    (folder / f".part-{job}-{w.writer}.merged.tmp").write_bytes(b"half a merge")
    w.lock.release(remove=False)
    return w


def test_leftovers_of_a_killed_run_are_cleaned_and_its_rows_kept(tmp_path):
    dead = _killed_writer(tmp_path, "dead")
    live = ResultWriter(tmp_path, "live")  # another run, still writing: nothing of it is touched
    live.add(_rows("live", 2))
    live.flush()
    live_tmp = tmp_path / f".part-live-{live.writer}-00001.parquet.12345678.tmp"
    live_tmp.write_bytes(b"in flight")
    foreign = [tmp_path / "notes.txt", tmp_path / ".mine.tmp", tmp_path / ".part-x-old.tmp"]
    for f in foreign:
        f.write_text("not ours, or too recent to judge")
    old = tmp_path / ".part-y-0000beef-00003.parquet.deadbeef.tmp"  # an older version's run: no registry entry
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * results.STALE_TMP_S,) * 2)
    before = read_rows(tmp_path)

    lines = results.clean_leftovers(tmp_path)

    names = {p.name for p in tmp_path.iterdir()}
    assert not any(dead.writer in n for n in names)  # temporaries gone, parts merged under the job's name
    assert "part-dead.parquet" in names and len(pd.read_parquet(tmp_path / "part-dead.parquet")) == 4
    assert {p.name for p in live.parts} <= names and live_tmp.exists() and live.lock.path.exists()
    assert all(f.exists() for f in foreign) and not old.exists()
    after = read_rows(tmp_path)
    assert sorted(zip(after["run_id"], after["sample_id"])) == sorted(zip(before["run_id"], before["sample_id"]))
    assert any("merged 2 part file(s) of a killed run" in ln for ln in lines)
    assert results.clean_leftovers(tmp_path) == []  # nothing left to do
    live.close()
    assert not (tmp_path / results.BOOK).exists()  # the registry goes with the last run


def test_parts_already_merged_are_removed(tmp_path):
    dead = _killed_writer(tmp_path, "j", merged_too=True)
    lines = results.clean_leftovers(tmp_path)
    assert sorted(p.name for p in results.result_files(tmp_path)) == ["part-j.parquet"]
    assert sum("its rows are in another result file" in ln for ln in lines) == 2
    assert len(read_rows(tmp_path)) == 4 and not any(dead.writer in p.name for p in tmp_path.iterdir())


def test_context_claims_exclude_live_runs_and_pass_to_the_next_when_the_owner_dies(tmp_path):
    mine, other = ContextClaims(tmp_path, ["a", "b"]), ContextClaims(tmp_path, ["b", "a"])
    held = mine.take("ctx/0")
    assert held is not None and other.take("ctx/0") is None  # same configurations: the same claim
    assert other.holder("ctx/0")["pid"] == os.getpid()
    assert ContextClaims(tmp_path, ["a"]).take("ctx/0") is not None  # other configurations: another claim
    held.release(remove=False)  # the owner dies: the kernel drops its lock, the file stays
    again = other.take("ctx/0")
    assert again is not None
    again.release()
    assert not mine.path("ctx/0").exists()


def test_output_dir_that_is_a_file_is_named(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("x")
    for call in (lambda: results.DoneIndex(f), lambda: ResultWriter(f, "j"), lambda: results.DoneIndex(f / "sub")):
        with pytest.raises(results.ResultsError) as err:
            call()
        msg = str(err.value)
        assert "results.csv" in msg and "not a folder" in msg and "delete" not in msg.lower()


def test_done_index_reads_only_new_files(tmp_path, monkeypatch):
    w = ResultWriter(tmp_path, "a")
    w.add(_rows("a", 2))
    w.flush()
    index = results.DoneIndex(tmp_path)
    assert len(index.refresh()) == 2
    reads = []
    real = results._read
    monkeypatch.setattr(results, "_read", lambda p, *a, **k: reads.append(p.name) or real(p, *a, **k))
    w.add(_rows("b", 3))
    w.flush()
    assert len(index.refresh()) == 5 and reads == [w.parts[1].name]
