"""The one road from a suite to the Hugging Face hub: the hub when it answers, else the local HF cache, else a fast
:class:`HubUnavailable` (a :class:`~tasks.base.DataMissing`) that the suite turns into its own message.

Every hub call of the suites goes through here (``hub_file`` for one file of a dataset repo, ``hub_dataset`` for
``datasets.load_dataset``). docs/data_offline.md describes the whole lookup order, and the cluster recipe
(download on a login node, run offline on compute nodes).

- Hub reachable (``tasks.base.hub_reachable``: one 3 s socket probe per process; ``HF_HUB_OFFLINE=1`` or
  ``HF_DATASETS_OFFLINE=1`` says no without probing): the library call as usual (it uses and fills the cache).
- Hub not reachable: no request is made, so no retries and no retry lines. A file is looked up in the hub cache
  (``huggingface_hub.try_to_load_from_cache``: ``<HF_HUB_CACHE>/datasets--<owner>--<name>/snapshots/<rev>/<file>``
  with ``refs/main``). A ``datasets`` load tries, in offline mode, (1) the ``datasets`` cache (the Arrow files
  ``<HF_DATASETS_CACHE>/<owner>___<name>/<config>/...`` an earlier ``load_dataset`` wrote; ``datasets`` reloads them
  itself when offline), then (2) the repo's snapshot in the hub cache (``snapshot_download(local_files_only=True)``:
  what ``load_dataset`` or ``hf download <repo> --repo-type dataset`` downloaded), loaded as the local folder it is.
- Neither: :class:`HubUnavailable` at once, naming the repo and both cache folders.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from tasks.base import DataMissing, hub_reachable


class HubUnavailable(DataMissing):
    """The hub is not reachable and the local Hugging Face cache does not hold the data."""


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (200 characters at most), for one-line data messages; the message itself
    for :class:`HubUnavailable` (already one line, written here)."""
    if isinstance(exc, HubUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _unavailable(repo: str, what: str, tried: list[str]) -> HubUnavailable:
    from huggingface_hub import constants

    import datasets

    caches = f"{constants.HF_HUB_CACHE}, {datasets.config.HF_DATASETS_CACHE}"
    detail = f" [{'; '.join(tried)}]" if tried else ""
    return HubUnavailable(
        f"the Hugging Face hub is not reachable and {repo} ({what}) is not in the local Hugging Face cache "
        f"({caches}){detail}"
    )


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` in offline mode for the block (as if ``HF_HUB_OFFLINE=1`` had been set
    before they were imported): every request raises at once instead of being retried."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def hub_file(repo: str, filename: str) -> Path:
    """Local path of ``filename`` of the dataset repo ``repo``: downloaded (or already cached) when the hub is
    reachable, else from the hub cache. Raises :class:`HubUnavailable` (offline, not cached) or the hub's error."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if hub_reachable():
        return Path(hf_hub_download(repo, filename, repo_type="dataset"))
    cached = try_to_load_from_cache(repo, filename, repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached)
    raise _unavailable(repo, filename, [])


def cached_snapshot(repo: str) -> Path | None:
    """The repo's snapshot folder in the hub cache (``refs/main``), without any request; None if there is none.
    Raises ``huggingface_hub``'s ``IncompleteSnapshotError`` when the cached file listing shows files missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        with offline():
            return Path(snapshot_download(repo, repo_type="dataset", local_files_only=True))
    except IncompleteSnapshotError:
        raise
    except LocalEntryNotFoundError:
        return None


def hub_dataset(repo: str, name: str | None = None, split: str | None = None, **kwargs: Any):
    """``datasets.load_dataset(repo, name, split=split, **kwargs)`` when the hub is reachable, else the same data
    from the local cache (the ``datasets`` cache, then the hub cache's snapshot). Raises :class:`HubUnavailable`
    at once when the hub is not reachable and neither cache holds it."""
    import datasets

    if hub_reachable():
        return datasets.load_dataset(repo, name, split=split, **kwargs)
    what = ", ".join(f"{k} {v}" for k, v in (("config", name), ("split", split), *kwargs.items()) if v) or "default"
    tried: list[str] = []
    with offline():
        try:  # offline, datasets itself reloads what an earlier load_dataset left in its cache
            return datasets.load_dataset(repo, name, split=split, **kwargs)
        except ConnectionError:  # nothing of this repo in the datasets cache
            pass
        except Exception as e:  # noqa: BLE001 - another config / split only, a broken cache folder
            tried.append(f"datasets cache: {error_line(e)}")
        try:
            snapshot = cached_snapshot(repo)
        except Exception as e:  # noqa: BLE001 - an incomplete snapshot is not read
            snapshot = None
            tried.append(f"hub cache: {error_line(e)}")
        if snapshot is not None:
            try:
                return datasets.load_dataset(os.fspath(snapshot), name, split=split, **kwargs)
            except Exception as e:  # noqa: BLE001 - the snapshot lacks this config / split
                tried.append(f"hub cache {snapshot}: {error_line(e)}")
    raise _unavailable(repo, what, tried)


__all__ = ["HubUnavailable", "cached_snapshot", "error_line", "hub_dataset", "hub_file", "offline"]
