"""Result rows on disk: tidy Parquet part files written atomically, resume, per-context claims, leftovers.

A run appends rows in part files ``part-<job>-<writer>-<seq>.parquet`` (written to a temporary name, then
renamed, so an interrupted run never leaves half a file; ``<writer>`` is random per run, so a rerun under the
same job name never overwrites what an earlier run wrote); at the end the job's parts are merged into one
``part-<job>.parquet`` (``part-<job>-<writer>.parquet`` when an earlier or concurrent run holds that name). Readers
de-duplicate on (run_id, sample_id), so even a kill between writing the merged file and deleting its parts never
shows a row twice, and they list the folder again when a part file vanishes under them (another job merging its
parts while this one reads: parallel jobs of a multirun share one folder). A rerun skips the (run_id, sample_id)
pairs on disk.

Bookkeeping lives in ``<folder>/.kvbench/`` (docs/results.md):
- ``writer-<writer>.lock``: held (``flock``) by a live run for as long as it writes; it names the run's job, host
  and pid. A writer whose lock nobody holds is dead (killed): ``clean_leftovers`` then removes its temporary
  files, deletes its part files whose rows are all in other files (already merged) and merges the rest into one
  file. Nothing else is ever deleted: only names built from a registered dead writer, and, for runs of older
  versions (no registry), hidden ``.part-*.tmp`` files older than a day.
- ``claims/<key>.lock``: held while a run computes one context of one configuration set (``ContextClaims``), so
  a second identical run on the folder skips it and comes back to it later; the kernel releases a claim when its
  process dies, so the context is then picked up.
Where ``flock`` is not available (some network file systems), claims and owner-based cleaning are off and runs
behave as before (identical runs may compute the same rows; readers de-duplicate them).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

try:  # POSIX; elsewhere claims and owner-based cleaning are off
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # the optional-module idiom: checked for None before use

KEY = ["run_id", "sample_id"]
BOOK = ".kvbench"  # bookkeeping folder inside a results folder (hidden: readers skip it)
STALE_TMP_S = 24 * 3600  # hidden .part-*.tmp files of unregistered (older-version) runs older than this are removed


class ResultsError(RuntimeError):
    """Result files are missing or unreadable. The message says what to do."""


class CorruptResultFile(ResultsError):
    pass


class NotAResultFile(ResultsError):
    """A file under a results folder that is not a kvbench result file (not Parquet, or without the key columns)."""


def _ours(path: Path) -> bool:
    """Named like a file kvbench writes (part-*.parquet)."""
    return path.name.startswith("part-") and path.name.endswith(".parquet")


def result_files(paths: str | Path | Iterable[str | Path], must_exist: bool = False) -> list[Path]:
    """Every ``*.parquet`` file under the folder(s) (or the files given), sorted; skips names that start with
    ``.`` (in-flight temporary files, hidden folders such as ``.kvbench``) or end with ``.tmp``. A path that does
    not exist holds nothing, or is an error with ``must_exist``."""
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


def output_folder(folder: str | Path) -> Path:
    """``folder`` as a run's output folder: an error naming the file when it, or a folder above it, is a file."""
    p = Path(folder)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            where = "is a file" if q == p else f"lies under {q}, which is a file"
            raise ResultsError(
                f"output_dir={folder} {where}, not a folder: a run writes its result files (part-*.parquet) into "
                f"a folder (created if missing). Give a folder path, e.g. output_dir={p.parent / (p.stem + '_runs')}"
            )
    return p


def _read(path: Path, columns: list[str] | None = None, required: Iterable[str] = KEY) -> pd.DataFrame:
    try:
        names = pq.read_schema(path).names
        missing = [c for c in required if c not in names]
        if not missing:
            return pq.read_table(path, columns=columns).to_pandas()
    except FileNotFoundError as exc:  # vanished while listed: read_files lists again
        raise CorruptResultFile(f"result file {path} disappeared while being read") from exc
    except Exception as exc:  # pyarrow raises several types for truncated/garbage files
        if _ours(path):
            raise CorruptResultFile(
                f"result file {path} cannot be read ({exc.__class__.__name__}: {exc}); it is corrupt or incomplete "
                f"(e.g. copied while being written). Move or delete it and rerun the same command: resume redoes "
                f"only the rows that file held; every other result is kept."
            ) from exc
        raise NotAResultFile(
            f"{path} is not a kvbench result file: it cannot be read as Parquet ({exc.__class__.__name__}: {exc}). "
            f"kvbench reads every *.parquet file under a results folder (its own are named part-*.parquet). Keep "
            f"other files outside {path.parent}, or use another folder for results."
        ) from exc
    raise NotAResultFile(
        f"{path} is a Parquet file but not a kvbench result file: it lacks the column(s) {', '.join(missing)} "
        f"(it has {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}). kvbench reads every *.parquet file "
        f"under a results folder. Keep other Parquet files outside {path.parent}, or use another folder for results."
    )


def read_files(paths: str | Path | Iterable[str | Path], columns: list[str] | None = None,
               must_exist: bool = False, attempts: int = 20, required: Iterable[str] = KEY) -> list[pd.DataFrame]:
    """Every result file under ``paths`` (sorted by name), read while other jobs may be writing there.

    A job that ends merges its part files into one file and then deletes the parts, so a file listed a moment
    ago may be gone when it is opened. The merged file always exists before its parts are removed, so listing
    again and rereading sees every row; only a file that stays unreadable is an error. ``required``: columns
    every file must have (else ``NotAResultFile`` naming it).
    """
    required = list(required)
    for _ in range(attempts):
        try:
            return [_read(p, columns, required) for p in result_files(paths, must_exist)]
        except CorruptResultFile as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
    raise CorruptResultFile(
        f"result files under {paths} kept disappearing while being read ({attempts} attempts): is another job "
        f"deleting them? Rerun when the other jobs writing there have finished."
    )


class DoneIndex:
    """(run_id, sample_id) pairs on disk under a folder; ``refresh`` reads only the files it has not seen yet
    (result files are never rewritten: new rows come in new files), so a run can check cheaply, before each
    context, what other runs on the folder finished meanwhile."""

    def __init__(self, folder: str | Path):
        self.folder = output_folder(folder)
        self.keys: set[tuple[str, str]] = set()
        self._seen: set[str] = set()

    def refresh(self, attempts: int = 20) -> set[tuple[str, str]]:
        for _ in range(attempts):
            vanished = False
            for p in result_files(self.folder):
                if p.name in self._seen:
                    continue
                try:
                    df = _read(p, KEY)
                except CorruptResultFile as exc:
                    if not isinstance(exc.__cause__, FileNotFoundError):
                        raise
                    vanished = True  # merged into a new file by its run: list again
                    continue
                self.keys.update(zip(df["run_id"], df["sample_id"]))
                self._seen.add(p.name)
            if not vanished:
                return self.keys
        raise CorruptResultFile(f"result files under {self.folder} kept disappearing while being read ({attempts} "
                                f"attempts): is another job deleting them?")


def done_keys(folder: str | Path) -> set[tuple[str, str]]:
    """(run_id, sample_id) pairs already written under ``folder``."""
    return DoneIndex(folder).refresh()


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


# ----------------------------------------------------------------------------------------------- locks
def owner() -> dict:
    """Who holds a lock: host, pid, start time (shown when another run waits for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


class Lock:
    """An exclusive ``flock`` on a file under ``<folder>/.kvbench``; the kernel releases it if the process dies.

    ``Lock.take(path)`` returns the held lock, or ``None`` when another open file holds it (another run, or
    another ``Lock`` of this process). Where ``flock`` is not supported it returns a lock with ``real=False``
    (nothing is excluded: callers then neither skip nor clean anything).
    """

    def __init__(self, path: Path, fd: int | None, real: bool = True):
        self.path, self.fd, self.real = path, fd, real

    @classmethod
    def take(cls, path: Path, info: dict | None = None, create: bool = True) -> "Lock | None":
        """``create=False``: only an existing file (``None`` when it is gone)."""
        for _ in range(20):
            try:
                fd = _open_creating(path) if create else os.open(path, os.O_RDWR)
            except FileNotFoundError:
                return None
            if fcntl is None:
                os.close(fd)
                return cls(path, None, real=False)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as exc:  # ENOLCK, EOPNOTSUPP, ENOSYS: no flock on this file system
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return None
                return cls(path, None, real=False)
            # its previous holder may have deleted the file between our open and our flock: lock the new one
            st = os.fstat(fd)
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                cur = None
            if cur is None or (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                os.close(fd)
                continue
            if info is not None:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info, sort_keys=True).encode())
            return cls(path, fd)
        return None

    def info(self) -> dict:
        return read_info(self.path)

    def release(self, remove: bool = True) -> None:
        """Unlock; ``remove`` deletes the file first (while still held, so nobody holds the deleted file)."""
        if remove:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open_creating(path: Path) -> int:
    for _ in range(20):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed (empty) by another run just now
            continue
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def read_info(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _remove_empty_dirs(folder: Path) -> None:
    for d in (folder / BOOK / "claims", folder / BOOK):
        try:
            d.rmdir()  # only when empty; a run creating a file there right now retries (_open_creating)
        except OSError:
            pass


def describe(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}" if info else "another run"


class ContextClaims:
    """Per-context claims under ``<folder>/.kvbench/claims``: ``take`` returns a held ``Lock`` or ``None`` when a
    live run is computing that context of the same configurations. Release it after the context's rows are on
    disk, so that a run that takes it next sees them (``DoneIndex.refresh``)."""

    def __init__(self, folder: str | Path, run_ids: Iterable[str]):
        self.dir = Path(folder) / BOOK / "claims"
        self.runs = json.dumps(sorted(set(run_ids)))

    def path(self, context_id: str) -> Path:
        return self.dir / f"{hashlib.sha1((self.runs + chr(0) + context_id).encode()).hexdigest()[:24]}.lock"

    def take(self, context_id: str) -> Lock | None:
        return Lock.take(self.path(context_id), {**owner(), "context_id": context_id})

    def holder(self, context_id: str) -> dict:
        return read_info(self.path(context_id))


class ResultWriter:
    """Buffers rows of one job and flushes them as atomic part files under ``folder``.

    While it is open it holds ``<folder>/.kvbench/writer-<writer>.lock`` (job, host, pid), which tells
    ``clean_leftovers`` of other runs that its files are in use; ``close`` merges the parts and removes it."""

    def __init__(self, folder: str | Path, job: str):
        self.folder = output_folder(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.writer = uuid.uuid4().hex[:8]  # names this run's files apart from earlier runs of the same job
        self.rows: list[dict] = []
        self.parts: list[Path] = []
        self.written = 0
        self.lock = None
        for _ in range(100):  # a cleaner may hold the new file for an instant (it finds no entry and lets go)
            self.lock = Lock.take(self.folder / BOOK / f"writer-{self.writer}.lock",
                                  {**owner(), "job": job, "writer": self.writer})
            if self.lock is not None:
                break
            time.sleep(0.01)

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
        try:
            self.flush()
            final = _merge(self.folder, self.job, self.writer, self.parts)
            self.parts = []
        except BaseException:
            if self.lock is not None:
                self.lock.release(remove=False)  # the registry entry stays: a later run merges what is left
            raise
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        _remove_empty_dirs(self.folder)
        return final


def _merge(folder: Path, job: str, writer: str, parts: list[Path]) -> Path | None:
    """Merge one writer's part files into one file named by ``_claim`` (atomically; the parts are removed after)."""
    if not parts:
        return None
    if len(parts) == 1:
        src = parts[0]
    else:
        src = folder / f".part-{job}-{writer}.merged.tmp"
        _write_atomic(pd.concat([_read(p) for p in parts], ignore_index=True), src)
    final = _claim(folder, job, writer, src, parts)
    for p in parts:
        p.unlink(missing_ok=True)
    src.unlink(missing_ok=True)
    return final


def _claim(folder: Path, job: str, writer: str, src: Path, parts: list[Path]) -> Path:
    """Link ``src`` as ``part-<job>.parquet``, or ``part-<job>-<writer>.parquet`` when an earlier or concurrent
    run of this job holds that name. A hard link never replaces an existing file, so two runs of one job
    ending at once cannot overwrite each other's rows; the rows stay in ``src`` until the link exists."""
    for final in (folder / f"part-{job}.parquet", folder / f"part-{job}-{writer}.parquet"):
        if final == src:
            return final
        try:
            os.link(src, final)
            return final
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: check, then rename (not atomic between runs)
            if not final.exists():
                os.replace(src, final)
                return final
    raise ResultsError(f"cannot name the merged result file of job {job!r} under {folder}: both "
                       f"part-{job}.parquet and part-{job}-{writer}.parquet exist. The rows stay "
                       f"in this run's part files ({', '.join(p.name for p in parts)}), which every reader "
                       f"includes")


# ----------------------------------------------------------------------------------------------- leftovers
def clean_leftovers(folder: str | Path, now: float | None = None) -> list[str]:
    """Tidy what killed runs left in ``folder``; returns one line per action (empty: nothing to do).

    Only our own names, and only of runs that are gone: for each registered writer whose lock nobody holds
    (``.kvbench/writer-*.lock``), its hidden temporary files are removed, its part files whose (run_id,
    sample_id) pairs are all in other files are removed (already merged), the rest are merged into one file;
    stale claim files nobody holds are removed; hidden ``.part-*.tmp`` files of no live writer that are older
    than ``STALE_TMP_S`` (runs of older versions, which registered nothing) are removed. Files of live runs, files
    of other names and every row are kept.
    """
    folder = Path(folder)
    book = folder / BOOK
    if not book.is_dir() and not any(folder.glob(".part-*.tmp")) and not any(folder.glob("..part-*.tmp")):
        return []
    now = time.time() if now is None else now
    done: list[str] = []
    live: list[str] = []  # "<job>-<writer>" of live writers: their temporary files are never touched
    for lock_path in sorted(book.glob("writer-*.lock")) if book.is_dir() else []:
        info = read_info(lock_path)
        lock = Lock.take(lock_path, create=False)
        if lock is None or not lock.real:
            if lock is not None:
                lock.release(remove=False)
            if info.get("job") and info.get("writer"):
                live.append(f"{info['job']}-{info['writer']}")
            continue
        try:
            info = lock.info()  # read again under the lock
            if info.get("job") and info.get("writer"):
                done += _clean_writer(folder, info["job"], info["writer"], describe(info))
            # else: an entry whose writer has not written it yet; removing it makes that writer lock a new file
        finally:
            lock.release()
    for claim in sorted((book / "claims").glob("*.lock")) if (book / "claims").is_dir() else []:
        lock = Lock.take(claim, create=False)
        if lock is not None and lock.real:
            lock.release()
            done.append(f"removed the claim file {claim.name} of a finished or killed run")
        elif lock is not None:
            lock.release(remove=False)
    for tmp in sorted([*folder.glob(".part-*.tmp"), *folder.glob("..part-*.tmp")]):
        name = tmp.name.lstrip(".")
        if any(name.startswith(f"part-{w}") for w in live):
            continue
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
                done.append(f"removed {tmp.name} (a temporary file older than {STALE_TMP_S // 3600} h)")
        except FileNotFoundError:
            pass
    _remove_empty_dirs(folder)
    return done


def _clean_writer(folder: Path, job: str, writer: str, who: str) -> list[str]:
    """Leftovers of one dead writer (its lock held by the caller)."""
    done = []
    prefix = f"part-{job}-{writer}"
    for tmp in sorted([*folder.glob(f".{glob_escape(prefix)}*.tmp"), *folder.glob(f"..{glob_escape(prefix)}*.tmp")]):
        tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp.name} (temporary file of a killed run, {who})")
    pat = re.compile(re.escape(prefix) + r"-\d{5}\.parquet")
    parts = sorted(p for p in folder.iterdir() if pat.fullmatch(p.name))
    if not parts:
        return done
    own = {p.name for p in parts}
    others: set[tuple[str, str]] = set()
    for p in result_files(folder):
        if p.parent != folder or p.name not in own:
            try:
                df = _read(p, KEY)
            except ResultsError:
                continue  # unreadable or foreign files hold nothing we can rely on
            others.update(zip(df["run_id"], df["sample_id"]))
    keep = []
    for p in parts:
        try:
            df = _read(p, KEY)
        except ResultsError:
            continue  # a reader reports it; never delete a file we cannot read
        if set(zip(df["run_id"], df["sample_id"])) <= others:
            p.unlink(missing_ok=True)
            done.append(f"removed {p.name} (its rows are in another result file: merged before its run was killed)")
        else:
            keep.append(p)
    if keep:
        try:
            final = _merge(folder, job, writer, keep)
            assert final is not None  # None only for no parts
            done.append(f"merged {len(keep)} part file(s) of a killed run ({who}) into {final.name}")
        except ResultsError:
            pass  # both names taken: the parts stay, every reader includes them
    return done


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
