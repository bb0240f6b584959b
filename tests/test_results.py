"""Result files on disk: reading while another job of the same folder merges its part files."""

from __future__ import annotations

import pytest

from harness import report, results
from harness.results import CorruptResultFile, ResultWriter, done_keys, read_rows


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
