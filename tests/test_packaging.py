"""The wheel carries the configs and data files, and its ``kvbench`` console script runs from any folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "conf", "harness", "methods", "tasks"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (the wheel is built offline, without build isolation)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building in the checkout would leave build/ and *.egg-info behind
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(p, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (found,) = (tmp / "dist").glob("kvbench-*.whl")
    return found


def test_wheel_holds_every_config_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    confs = [p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*") if p.is_file()]
    assert confs and not [c for c in confs if f"harness/conf/{c}" not in names]
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "tasks" / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]
    assert not [d for d in data if d not in names]
    assert not [n for n in names if n.startswith("conf/")]  # no top-level ``conf`` in site-packages


def test_installed_console_script_runs_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                          str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    script = target / "bin" / "kvbench"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, str(script), "method=keydiff", "task=ruler_1k", "--info", "searchpath"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(target / "harness" / "conf") in out.stdout  # the wheel's configs, not the checkout's
    out = subprocess.run([sys.executable, str(script), "method=keydiff", "task=ruler_1k", "--cfg", "job"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "name: keydiff" in out.stdout, out.stderr[-3000:]
    # a variant inherits its parent (Hydra defaults:) from the wheel's configs, on both paths: method=<variant>
    # and a member of methods=[...] (harness.method_configs composes it from harness/conf)
    out = subprocess.run([sys.executable, str(script), "method=nestedkv_uniform", "task=ruler_1k", "--cfg", "job"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "name: nestedkv_uniform" in out.stdout and "budget_policy: uniform" in out.stdout
    assert "window: 64" in out.stdout and "sinks_in_stats: true" in out.stdout  # from conf/method/nestedkv.yaml
    code = ("import harness.configs as c; from harness.plan import build_cells; from harness.run import compose; "
            "print(c.CONF_DIR); cells = build_cells(compose(['methods=[nestedkv_uniform,keydiff]', "
            "'method.params.window=32'])); print([(x.label, x.method.params().get('window')) for x in cells])")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [str(target / "harness" / "conf"),
                                       "[('nestedkv_uniform', 32), ('keydiff', None)]"]
