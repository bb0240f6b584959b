"""How the tables read rows (harness/rows.py, docs/results.md "How the tables read rows"): the one
de-duplication rule, the configuration identity, the reference rule, and the suites' headline registry."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import report as R
from harness import rows as H

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_tables  # noqa: E402
import regress  # noqa: E402


def cfg(**over) -> str:
    """A config_json as the engine writes it (harness.run.run_context + Cell.identity)."""
    base = {"model": "m", "model_source": "hub", "dtype": "float32", "attn_impl": "sdpa", "task": "ruler_4k",
            "task_params": {"length": 4096, "tasks": ["a", "b"]}, "seed": 42, "max_context": None,
            "max_new_tokens": None, "method": "keydiff", "method_class": "keydiff", "method_params": {}, "r": 0.5,
            "budget_tokens": None, "budget_policy": "uniform", "safeguard": 0.2, "query_aware": False}
    return json.dumps({**base, **over}, sort_keys=True)


def row(sample="a/0", score=0.0, config=None, run_id=None, created="2025-01-01T00:00:00Z", task=None, **kw):
    config = config or cfg()
    c = json.loads(config)
    d = dict(run_id=run_id or hashlib.sha1(config.encode()).hexdigest()[:16], config_json=config,
             created_at=created, model=c["model"], suite="ruler", task=task or sample.split("/")[0], length_bucket=4096, sample_id=sample,
             method=c["method"], method_params=json.dumps({"class": c["method_class"], **c["method_params"]}),
             r=c["r"] if c["r"] is not None else float("nan"), budget_tokens=c["budget_tokens"],
             budget_policy=c["budget_policy"], query_aware=c["query_aware"], score=float(score))
    d.update(kw)
    return d


def write(rows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


# ------------------------------------------------------------------------------------------------ dedup rule
def test_last_written_row_per_configuration_and_sample_wins(tmp_path):
    """One configuration run twice on different sub-task selections (so two run_ids): sample a/0 is in both;
    the newer row stands for it. Hand-worked: a = 90 (not 10), b = 30; headline (90 + 30) / 2 = 60."""
    first = cfg(task_params={"length": 4096, "tasks": ["a", "b"]})
    second = cfg(task_params={"length": 4096, "tasks": ["a"]})
    write([row("a/0", 10, first, created="2025-01-01T00:00:00Z"), row("b/0", 30, first)], tmp_path / "r" / "p1.parquet")
    write([row("a/0", 90, second, created="2025-02-01T00:00:00Z")], tmp_path / "r" / "p2.parquet")
    df = R.load_results(tmp_path / "r")
    assert sorted(zip(df["sample_id"], df["score"])) == [("a/0", 90.0), ("b/0", 30.0)]
    assert df["config_id"].nunique() == 1  # the sub-task selection is not part of the configuration
    assert len(R.prepare(df)) == 2  # prepare trusts the reader: nothing more is dropped
    s = R.summary(df)
    assert s[["score", "n", "n_tasks"]].values.tolist() == [[60.0, 2, 2]]


def test_ties_in_created_at_go_to_the_later_file_then_the_later_row(tmp_path):
    write([row("a/0", 10), row("a/0", 20)], tmp_path / "r" / "p1.parquet")  # same file: the later row (20)
    df = R.load_results(tmp_path / "r")
    assert df["score"].tolist() == [20.0]
    write([row("a/0", 70)], tmp_path / "r" / "p2.parquet")  # same created_at, later file (name order): 70
    assert R.load_results(tmp_path / "r")["score"].tolist() == [70.0]


def test_rows_of_different_configurations_are_never_merged(tmp_path):
    write([row("a/0", 10, cfg(seed=1)), row("a/0", 90, cfg(seed=2)),  # one setting apart
           row("a/0", 50, None, run_id="x", config_json="{}"),  # hand-made rows without config_json:
           row("a/0", 60, None, run_id="y", config_json="{}")],  # their run_ids keep them apart
          tmp_path / "r" / "p.parquet")
    df = R.load_results(tmp_path / "r")
    assert sorted(df["score"]) == [10.0, 50.0, 60.0, 90.0] and df["config_id"].nunique() == 4


def test_identity_drops_the_sub_task_selection_and_for_the_reference_its_budgets():
    df = pd.DataFrame([row("a/0", config=cfg(task_params={"length": 4096, "tasks": ["a"]})),
                       row("a/0", config=cfg(task_params={"length": 4096, "tasks": ["a", "b"]})),
                       row("a/0", config=cfg(task_params={"length": 2048, "tasks": ["a"]})),
                       row("a/0", config=cfg(method="full", method_class="full", r=0.25)),
                       row("a/0", config=cfg(method="full", method_class="full", r=0.5, query_aware=True))])
    df["reference"] = H.reference(df)
    ids = H.config_ids(df).tolist()
    assert ids[0] == ids[1] != ids[2]  # tasks ignored, length kept
    assert ids[3] == ids[4]  # the reference: r and query_aware ignored
    ident = json.loads(H.identities(df).iloc[3])
    assert "r" not in ident and "query_aware" not in ident and ident["task_params"] == {"length": 4096}


# ------------------------------------------------------------------------------------------------ reference rule
def test_reference_is_the_method_class_that_does_not_compress(monkeypatch):
    import methods
    from methods.base import Method

    class Plain(Method):
        compresses = False

    monkeypatch.setitem(methods.METHODS, "plain", Plain)
    df = pd.DataFrame([
        dict(method="baseline", config_json=cfg(method="baseline", method_class="full")),  # class from config
        dict(method="full", config_json=cfg(method="full", method_class="keydiff")),  # the class rules, not "full"
        dict(method="x", config_json="{}", method_params=json.dumps({"class": "full"})),  # from method_params
        dict(method="full", config_json="{}", method_params="{}"),  # no class recorded: the label
        dict(method="gone", config_json=cfg(method="gone", method_class="removed")),  # unknown: compresses
        dict(method="mine", config_json=cfg(method="mine", method_class="plain")),  # read from the class
    ])
    assert H.reference(df).tolist() == [True, False, True, True, False, True]


def test_tables_and_regress_use_the_reference_rule_not_the_label(tmp_path):
    """A reference labelled "baseline" (class full) that an old sweep wrote at r=0.5: r becomes 0, it heads the
    table, repeats in every column, is never bold, and the note names it."""
    ref = cfg(method="baseline", method_class="full", r=0.5)
    rows = [row("a/0", 100, ref), row("a/1", 0, ref)]
    for r, scores in ((0.25, (100, 100)), (0.5, (100, 0))):
        rows += [row(f"a/{i}", s, cfg(r=r)) for i, s in enumerate(scores)]
    write(rows, tmp_path / "r" / "p.parquet")
    s = R.summary(R.load_results(tmp_path / "r")).set_index(["method", "r"])["score"].to_dict()
    assert s == {("baseline", 0.0): 50.0, ("keydiff", 0.25): 100.0, ("keydiff", 0.5): 50.0}
    make_tables.build([str(tmp_path / "r")], tmp_path / "out")
    md = (tmp_path / "out" / "ruler_4k_m.md").read_text()
    body = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| method")]
    assert body == ["| baseline | 50.00 | 50.00 |", "| keydiff | 100.00 | 50.00 |"]
    assert "- baseline: full-cache reference (independent of r), repeated in every column." in md
    base = regress.to_baseline(pd.DataFrame(rows).assign(prediction="x"))
    assert base.loc[base["method"] == "baseline", "r"].tolist() == [0.0, 0.0]
    assert sorted(base.loc[base["method"] == "keydiff", "r"].unique()) == [0.25, 0.5]


# ------------------------------------------------------------------------------------------------ headlines
def test_headline_rule_reads_each_suite_class_without_constructing_it():
    from tasks import headline_rule, make_task

    assert headline_rule("ruler")({"vt": 100.0, "cwe": 50.0, "fwe": 0.0}, None) == pytest.approx(50.0)
    # MMLU weighs subjects by their questions: (100 x 3 + 0 x 1) / 4
    assert headline_rule("mmlu")({"anatomy": 100.0, "virology": 0.0}, {"anatomy": 3, "virology": 1}) == 75.0
    # LongBench: multi-doc QA (20 + 30) / 2 = 25, code 90 -> (25 + 90) / 2
    assert headline_rule("longbench")({"hotpotqa": 20.0, "2wikimqa": 30.0, "lcc": 90.0}, None) == 57.5
    # a suite whose constructor needs a parameter still has its rule (the old tables fell back here)
    with pytest.raises(ValueError, match="needs length"):
        make_task("infinitebench_synth")
    assert headline_rule("infinitebench_synth")({"passkey": 100.0, "kv_retrieval": 0.0}, None) == 50.0


def test_unknown_suite_and_instance_headline_are_clear_errors():
    import tasks
    from tasks.base import Task

    with pytest.raises(KeyError, match=r"unknown suite 'nope'; available: .*ruler"):
        tasks.headline_rule("nope")

    class Stateful(Task):
        def headline(self, task_scores, counts=None):
            return 0.0

    with pytest.raises(TypeError, match=r"suite 'stateful' \(Stateful\): headline must be a @staticmethod"):
        tasks.register("stateful")(Stateful)
    assert "stateful" not in tasks.SUITES


def test_bucket_names_come_from_the_class():
    from tasks import bucket_names

    assert bucket_names("longbench_e") == {0: "0-4k", 4000: "4-8k", 8000: "8k+"}
    assert bucket_names("ruler") == {}
    assert R.bucket_label("infinitebench_synth", 4096, []) == "4k" and R.bucket_label("nope", 8192, []) == "8k"


def test_tables_use_the_official_headline_of_a_suite_that_needs_parameters(tmp_path):
    rows = [row(f"{t}/0", s, suite="infinitebench_synth", task=t) for t, s in (("passkey", 100), ("kv_retrieval", 0))]
    write(rows, tmp_path / "r" / "p.parquet")
    s = R.summary(R.load_results(tmp_path / "r"))
    assert s["score"].tolist() == [50.0] and s["official"].tolist() == [True]
    make_tables.build([str(tmp_path / "r")], tmp_path / "out")
    assert "FALLBACK" not in (tmp_path / "out" / "all_tables.md").read_text()
