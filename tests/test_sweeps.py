"""The named grids in conf/sweep compose to what their comments promise (no weights load)."""

import pytest

from harness.plan import build_cells
from harness.run import compose

PAPER_SET = ["full", "streamingllm", "snapkv", "expected_attention", "pyramidkv", "keydiff", "nestedkv"]
PAPER_RATIOS = [0.25, 0.5, 0.75, 0.85, 0.95]


@pytest.mark.parametrize(
    "sweep, task", [("paper_ruler", "ruler_4k"), ("paper_longbench", "longbench"), ("paper_mmlu_pro", "mmlu_pro")]
)
def test_paper_sweeps_run_the_paper_set_on_full_data(sweep, task):
    cfg = compose([f"+sweep={sweep}"])
    assert cfg.task.name == task
    assert list(cfg.methods) == PAPER_SET  # H2O ran out of memory in the paper: not part of its comparison
    assert list(cfg.r) == PAPER_RATIOS
    assert cfg.n_samples is None  # the full sets, not the CLI default of 20 per sub-task
    cells = build_cells(cfg)
    assert len(cells) == 1 + 6 * len(PAPER_RATIOS)  # the full cache once, whatever the ratios


def test_sweep_task_and_sample_count_can_be_overridden():
    cfg = compose(["+sweep=paper_ruler", "task=ruler_8k", "n_samples=10"])
    assert (cfg.task.name, cfg.n_samples) == ("ruler_8k", 10)
