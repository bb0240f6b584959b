"""Result rows on disk: tidy Parquet part files written atomically, and resume.

A run appends rows in part files ``part-<job>-<writer>-<seq>.parquet`` (written to a temporary name, then
renamed, so an interrupted run never leaves half a file; ``<writer>`` is random per run, so a rerun under the
same job name never overwrites what an earlier run wrote); at the end the job's parts are merged into one
``part-<job>.parquet`` (``part-<job>-<writer>.parquet`` when an earlier or concurrent run holds that name). Readers
de-duplicate on (run_id, sample_id), so even a kill between writing the merged file and deleting its parts never
shows a row twice, and they list the folder again when a part file vanishes under them (another job merging its
parts while this one reads: parallel jobs of a multirun share one folder). A rerun skips the (run_id, sample_id)
pairs on disk.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEY = ["run_id", "sample_id"]


class ResultsError(RuntimeError):
    """Result files are missing or unreadable. The message says what to do."""


class CorruptResultFile(ResultsError):
    pass


def result_files(paths: str | Path | Iterable[str | Path], must_exist: bool = False) -> list[Path]:
    """Every ``*.parquet`` file under the folder(s) (or the files given), sorted; skips names that start with
    ``.`` (in-flight temporary files, hidden folders) or end with ``.tmp``. A path that does not exist holds
    nothing, or is an error with ``must_exist``."""
    found: set[Path] = set()
    for p in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if p.is_file():
            cands = [p]
        elif p.is_dir():
            cands = [q for q in p.rglob("*.parquet") if not any(x.startswith(".") for x in q.relative_to(p).parts)]
        elif must_exist:
            raise ResultsError(f"results path {str(p)!r} does not exist")
        else:
            cands = []
        found.update(q for q in cands if not q.name.startswith(".") and not q.name.endswith(".tmp"))
    return sorted(found)


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pq.read_table(path, columns=columns).to_pandas()
    except Exception as exc:  # pyarrow raises several types for truncated/garbage files
        raise CorruptResultFile(
            f"result file {path} cannot be read ({exc.__class__.__name__}: {exc}); it is corrupt or incomplete "
            f"(e.g. copied while being written). Move or delete it and rerun the same command: resume redoes only "
            f"the rows that file held; every other result is kept."
        ) from exc


def read_files(paths: str | Path | Iterable[str | Path], columns: list[str] | None = None,
               must_exist: bool = False, attempts: int = 20) -> list[pd.DataFrame]:
    """Every result file under ``paths`` (sorted by name), read while other jobs may be writing there.

    A job that ends merges its part files into one file and then deletes the parts, so a file listed a moment
    ago may be gone when it is opened. The merged file always exists before its parts are removed, so listing
    again and rereading sees every row; only a file that stays unreadable is an error.
    """
    for _ in range(attempts):
        try:
            return [_read(p, columns) for p in result_files(paths, must_exist)]
        except CorruptResultFile as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
    raise CorruptResultFile(
        f"result files under {paths} kept disappearing while being read ({attempts} attempts): is another job "
        f"deleting them? Rerun when the other jobs writing there have finished."
    )


def done_keys(folder: str | Path) -> set[tuple[str, str]]:
    """(run_id, sample_id) pairs already written under ``folder``."""
    keys: set[tuple[str, str]] = set()
    for df in read_files(folder, columns=KEY):
        keys.update(zip(df["run_id"], df["sample_id"]))
    return keys


def read_rows(folder: str | Path) -> pd.DataFrame:
    frames = read_files(folder)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(subset=KEY, keep="last").reset_index(drop=True)


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)


class ResultWriter:
    """Buffers rows of one job and flushes them as atomic part files under ``folder``."""

    def __init__(self, folder: str | Path, job: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.writer = uuid.uuid4().hex[:8]  # names this run's files apart from earlier runs of the same job
        self.rows: list[dict] = []
        self.parts: list[Path] = []
        self.written = 0

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.folder / f"part-{self.job}-{self.writer}-{len(self.parts):05d}.parquet"
        _write_atomic(pd.DataFrame(self.rows), path)
        self.parts.append(path)
        self.written += len(self.rows)
        self.rows = []

    def close(self) -> Path | None:
        """Flush, then merge this job's parts into one file (atomically; parts removed after)."""
        self.flush()
        if not self.parts:
            return None
        if len(self.parts) == 1:
            src = self.parts[0]
        else:
            src = self.folder / f".part-{self.job}-{self.writer}.merged.tmp"
            _write_atomic(pd.concat([_read(p) for p in self.parts], ignore_index=True), src)
        final = self._claim(src)
        for p in self.parts:
            p.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
        self.parts = []
        return final

    def _claim(self, src: Path) -> Path:
        """Link ``src`` as ``part-<job>.parquet``, or ``part-<job>-<writer>.parquet`` when an earlier or concurrent
        run of this job holds that name. A hard link never replaces an existing file, so two runs of one job
        ending at once cannot overwrite each other's rows; the rows stay in ``src`` until the link exists."""
        for final in (self.folder / f"part-{self.job}.parquet", self.folder / f"part-{self.job}-{self.writer}.parquet"):
            try:
                os.link(src, final)
                return final
            except FileExistsError:
                continue
            except OSError:  # a file system without hard links: check, then rename (not atomic between runs)
                if not final.exists():
                    os.replace(src, final)
                    return final
        raise ResultsError(f"cannot name the merged result file of job {self.job!r} under {self.folder}: both "
                           f"part-{self.job}.parquet and part-{self.job}-{self.writer}.parquet exist. The rows stay "
                           f"in this run's part files ({', '.join(p.name for p in self.parts)}), which every reader "
                           f"includes")
