"""Where the Hydra configs are: ``conf/`` at the repository root, shipped inside the package as ``harness/conf``.

The repository keeps ``conf/`` at its root (the README and users edit it there). A wheel carries the same files
as ``harness/conf`` (``pyproject.toml`` maps the folder into the package), so the ``kvbench`` console script and
``python -m harness`` find their configs from any working directory, whether the project is installed from a
wheel or in editable mode. This module imports nothing heavy: shell completion runs it at every TAB.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """``harness/conf`` in an installed wheel, else ``conf/`` beside the package (source tree, editable install)."""
    for cand in (_HERE / "conf", _HERE.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    raise RuntimeError(
        f"kvbench's configs are missing: neither {_HERE / 'conf'} (installed package) nor {_HERE.parent / 'conf'} "
        f"(source tree) holds config.yaml. Reinstall kvbench (pip install kvbench, or pip install -e . in a clone)."
    )


CONF_DIR = conf_dir()
