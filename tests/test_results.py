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
