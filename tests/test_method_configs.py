"""Method configs composed one way (harness/method_configs.py, docs/sweeps.md): every conf/method config resolves
to what it was before variants inherited their parent through Hydra ``defaults:`` (tests/data/method_configs.json,
taken from the flat files), and ``method.*`` overrides reach the members of ``methods=[...]`` that have them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.configs import CONF_DIR
from harness.plan import UsageError, build_cells, build_method, load_method_config, method_config_names
from harness.results import read_rows
from harness.run import compose

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = json.loads((ROOT / "tests" / "data" / "method_configs.json").read_text())
VARIANTS = {  # variant -> (parent, the only lines it changes)
    "nestedkv_uniform": ("nestedkv", {"budget_policy": "uniform"}),
    "keydiff_adaptive": ("keydiff", {"budget_policy": "adaptive"}),
    "snapkv_paper": ("snapkv", {"params": {"window_size": 32, "kernel_size": 7, "pooling": "max"}}),
    "streamingllm_rerotate": ("streamingllm", {"params": {"rerotate": True}}),
    "h2o_online": ("h2o", {"params": {"decode_eviction": True}}),
    "streamingllm_online": ("streamingllm", {"params": {"decode_window": True}}),
    "keydiff_online": ("keydiff", {"params": {"decode_rescore_every": 10}}),
    "nestedkv_online": ("nestedkv", {"params": {"decode_rescore_every": 10}}),
    "expected_attention_adaptive": ("expected_attention", {"budget_policy": "adaptive", "params": {"epsilon": 0.01}}),
}


def _identity(mcfg) -> dict:
    label, method, policy, safeguard = build_method(mcfg)
    return {"method": label, "method_class": method.name, "method_params": json.loads(json.dumps(method.params())),
            "budget_policy": policy, "safeguard": safeguard}


# ------------------------------------------------------------------------------- the snapshot, both paths
def test_the_snapshot_covers_every_method_config():
    assert sorted(SNAPSHOT) == method_config_names()


@pytest.mark.parametrize("name", method_config_names())
def test_composed_config_equals_the_snapshot(name):
    """load_method_config (methods=[...], lm-eval adapter, inspect) and method=<name> (Hydra's own composition of
    the top-level config) give the config and the run_id ingredients recorded before inheritance."""
    listed = load_method_config(name)
    single = compose([f"method={name}"]).method
    for mcfg in (listed, single):
        assert OmegaConf.to_container(mcfg, resolve=True) == SNAPSHOT[name]["config"]
        assert _identity(mcfg) == SNAPSHOT[name]["identity"]
    assert listed.name == name  # the label is the file's name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_inherits_its_parent_and_writes_only_what_differs(variant):
    parent, changed = VARIANTS[variant]
    text = yaml_lines(variant)
    assert text[:3] == ["defaults:", f"  - {parent}", "  - _self_"]
    written = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{variant}.yaml"))
    assert written == {"defaults": [parent, "_self_"], "name": variant, **changed}
    expected = SNAPSHOT[parent]["config"] | {k: v for k, v in changed.items() if k != "params"} | {"name": variant}
    expected["params"] = SNAPSHOT[parent]["config"]["params"] | changed.get("params", {})
    assert SNAPSHOT[variant]["config"] == expected  # the flat file said exactly this
    assert len(text) <= 10


def yaml_lines(name: str) -> list[str]:
    lines = (CONF_DIR / "method" / f"{name}.yaml").read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


# ---------------------------------------------------------------------------------- overrides on a list
def _params(cells) -> dict[str, dict]:
    return {c.label: c.method.params() for c in cells}


def test_list_override_reaches_every_member_that_has_the_parameter(capsys):
    cells = build_cells(compose(["methods=[nestedkv,nestedkv_uniform,keydiff]", "method.params.window=32", "r=0.5"]))
    params = _params(cells)
    assert params["nestedkv"]["window"] == 32 and params["nestedkv_uniform"]["window"] == 32  # 64 in the files
    assert params["nestedkv"]["block_min"] == 128 and params["nestedkv"]["n_sink"] == 4  # the rest as configured
    assert params["keydiff"] == {}
    assert [c.policy for c in cells] == ["adaptive", "uniform", "uniform"]  # the variant keeps its own line
    err = capsys.readouterr().err
    assert "[kvbench] method.params.window=32 applies to nestedkv, nestedkv_uniform; not to keydiff" in err


def test_a_parameter_shared_by_several_classes_reaches_each():
    cells = build_cells(compose(["methods=[streamingllm,nestedkv,expected_attention_adaptive,full]",
                                 "method.params.n_sink=8", "method.safeguard=0.1", "r=0.5"]))
    params = _params(cells)
    assert [params[m]["n_sink"] for m in ("streamingllm", "nestedkv", "expected_attention_adaptive")] == [8, 8, 8]
    assert params["expected_attention_adaptive"]["epsilon"] == 0.01 and params["full"] == {}
    assert {c.label: c.safeguard for c in cells} == {"streamingllm": 0.1, "nestedkv": 0.1,
                                                     "expected_attention_adaptive": 0.1, "full": 0.1}  # 0.2 filed


def test_a_list_member_equals_the_same_method_run_alone():
    """One way: the run_id ingredients of a member with an override are those of method=<it> with it."""
    listed = {c.label: c for c in build_cells(compose(["methods=[snapkv,snapkv_paper]", "method.params.window_size=16"]))}
    alone = build_cells(compose(["method=snapkv_paper", "method.params.window_size=16"]))
    assert [c.identity() for c in alone] == [listed["snapkv_paper"].identity()]
    assert listed["snapkv_paper"].method.params()["window_size"] == 16 and listed["snapkv_paper"].method.pooling == "max"
    assert listed["snapkv"].method.params()["window_size"] == 16 and listed["snapkv"].method.pooling == "avg"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["methods=[nestedkv,keydiff]", "method.params.windw=32"],
         "method.params.windw=32: no method of methods=[nestedkv, keydiff] has a parameter 'windw'; their parameters: "
         "nestedkv: window, block_min, block_max, block_divisor, prior, beta, contrast_fraction, kappa, tau, n_sink, "
         "normalization, local_similarity, sinks_in_stats, decode_rescore_every; keydiff: decode_rescore_every"),
        (["method=nestedkv", "method.params.windw=32"],
         "method 'nestedkv' has no parameter 'windw'; its parameters: window, block_min, "),
        (["methods=[nestedkv,keydiff]", "method.budget_polcy=uniform"],
         "method config 'nestedkv' has no key 'budget_polcy'; its keys: name, method, budget_policy, safeguard, params"),
        (["methods=[nestedkv,keydiff]", "method.name=mine"],
         "method.name=mine cannot apply to methods=[nestedkv, keydiff]: every member would get it"),
        (["methods=[nestedkv,keydiff]", "method.params={window:32}"], "method 'keydiff' has no parameter 'window'"),
    ],
    ids=["list-typo", "single-typo", "list-top-level-typo", "list-name", "list-dict"],
)
def test_bad_method_override_is_one_clear_error(overrides, message):
    with pytest.raises(UsageError) as err:
        build_cells(compose(overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_config_built_without_overrides_composes_the_files():
    """A config that does not come from compose() or the CLI (no hydra.overrides.task) runs the members as filed."""
    cfg = OmegaConf.create({"methods": ["nestedkv_uniform", "h2o_online"], "r": 0.5})
    identities = [json.loads(json.dumps(c.identity())) for c in build_cells(cfg)]
    assert identities == [{**SNAPSHOT[n]["identity"], "r": 0.5, "budget_tokens": None, "query_aware": False}
                          for n in ("nestedkv_uniform", "h2o_online")]


def test_composing_inside_a_running_hydra_app_keeps_its_instance():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert load_method_config("h2o_online", ["method.params.block_size=128"]).params.block_size == 128
        assert GlobalHydra.instance().hydra is outer
        assert hydra_compose(config_name="config", overrides=["method=h2o_online"]).method.params.decode_eviction


# -------------------------------------------------------------------------------------------- the CLI
def test_cli_multirun_override_reaches_list_members_per_job(tmp_path):
    """python -m harness -m methods=[...] method.params.window=16,32: each job's own value reaches the list (Hydra
    keeps the job's overrides; harness.__main__ records them for the plan)."""
    out = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "model=tiny-llama-random", "progress=false", "dtype=float32",
         "device=cpu", "task=ruler_1k", "task.tasks=[niah_single_1]", "n_samples=1", "max_new_tokens=2", "r=0.5",
         "methods=[nestedkv,nestedkv_uniform,keydiff]", "method.params.window=16,32", f"output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_rows(tmp_path)
    windows = sorted((m, json.loads(p).get("window")) for m, p in zip(rows["method"], rows["method_params"]))
    assert windows == [("keydiff", None), ("nestedkv", 16), ("nestedkv", 32),
                       ("nestedkv_uniform", 16), ("nestedkv_uniform", 32)]  # keydiff's row once: one run_id
