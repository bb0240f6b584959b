"""CLI: ``python -m harness method=<m> task=<t> r=<r>`` (Hydra; see conf/config.yaml and the README)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.configs import CONF_DIR


# An absolute config path: a relative one ("../conf") makes Hydra look for a Python module named ``conf`` when
# the app is started as the ``kvbench`` console script, which only exists when run from the repository root.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from harness.method_configs import keep_overrides
    from harness.models import ModelFilesError
    from harness.errors import UsageError
    from harness.results import ResultsError
    from harness.run import run
    from tasks.base import DataMissing

    keep_overrides(cfg, HydraConfig.get().overrides.task)  # this job's: method.* reach every member of methods=[...]
    try:
        run(cfg)
    except (UsageError, ResultsError, DataMissing, ModelFilesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # every finished context is already on disk (one part file per flush)
        start = "\n" if sys.stderr.isatty() else ""  # after the progress bar and ^C, on a line of its own
        print(f"{start}error: interrupted: rerun the same command to resume (the rows written so far stay in "
              f"{cfg.get('output_dir')})", file=sys.stderr)
        sys.exit(130)


def entry() -> None:
    """The ``kvbench`` console script (and ``python -m harness``). Shell completion (``-sc``, see
    docs/results.md) skips the key check and the override normalisation, which imports torch: a TAB then answers
    in about a second instead of several."""
    if not any(a in ("-sc", "--shell-completion") or a.startswith("--shell-completion=") for a in sys.argv[1:]):
        from harness.errors import UsageError
        from harness.plan import check_override_keys
        from harness.run import normalize_overrides

        try:
            check_override_keys(sys.argv[1:])  # unknown keys: one line here, not Hydra's advice to append them
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        sys.argv = [sys.argv[0], *normalize_overrides(sys.argv[1:])]
    try:
        main()
    except KeyboardInterrupt:  # before the run started (imports, composing the config): nothing to lose
        print("error: interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry()
