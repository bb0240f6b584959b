"""CLI: ``python -m harness method=<m> task=<t> r=<r>`` (Hydra; see conf/config.yaml and the README)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from harness.plan import UsageError
    from harness.results import ResultsError
    from harness.run import run
    from tasks.base import DataMissing

    try:
        run(cfg)
    except (UsageError, ResultsError, DataMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def entry() -> None:
    from harness.run import normalize_overrides

    sys.argv = [sys.argv[0], *normalize_overrides(sys.argv[1:])]
    main()


if __name__ == "__main__":
    entry()
