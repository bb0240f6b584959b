"""From a resolved config to a validated plan, before any weights load.

Unknown methods, ratios outside [0, 1), bad policies, unknown suites and tasks longer than the model's window
all fail here with one message that says what to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.models import CONF_DIR, ModelSpec, context_window, model_names, model_spec
from harness.sweep import Cell
from methods import available, make_method
from tasks import make_task
from tasks.base import Task


class UsageError(ValueError):
    """A configuration error, reported as one line before anything heavy runs."""


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def method_config_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def task_config_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def load_method_config(name: str) -> DictConfig:
    path = CONF_DIR / "method" / f"{name}.yaml"
    if not path.exists():
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(method_config_names())}")
    return OmegaConf.load(path)


def load_task_config(name: str) -> DictConfig:
    path = CONF_DIR / "task" / f"{name}.yaml"
    if not path.exists():
        raise UsageError(f"unknown task {name!r}; choose one of: {', '.join(task_config_names())}")
    return OmegaConf.load(path)


def build_method(mcfg) -> tuple[str, Any, str, float]:
    """(label, Method, default policy, safeguard) from a method config."""
    mcfg = OmegaConf.create(mcfg) if not OmegaConf.is_config(mcfg) else mcfg
    cls = mcfg.get("method", mcfg.get("name"))
    if cls not in available():
        raise UsageError(f"unknown method class {cls!r} in method config {mcfg.get('name')!r}; available: {', '.join(available())}")
    params = mcfg.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
    try:
        method = make_method(cls, **params)
    except TypeError as exc:
        raise UsageError(f"bad parameters for method {mcfg.get('name')!r}: {exc}") from exc
    return mcfg.get("name", cls), method, mcfg.get("budget_policy", "uniform"), float(mcfg.get("safeguard", 0.2))


def ratios(cfg) -> list[float | None]:
    rs = _as_list(cfg.get("r"))
    out = []
    for r in rs:
        try:
            r = float(r)
        except (TypeError, ValueError):
            raise UsageError(f"r must be a number in [0, 1) (the fraction of context KV pairs removed), got {r!r}")
        if not (0.0 <= r < 1.0):
            raise UsageError(f"r={r} is outside [0, 1): r is the fraction of context KV pairs removed (r=0.75 keeps 25 %)")
        out.append(r)
    return out


def budgets(cfg) -> list[int]:
    out = []
    for b in _as_list(cfg.get("budget_tokens")):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UsageError(f"budget_tokens must be a positive integer (tokens kept per head), got {b!r}")
        out.append(b)
    return out


def build_cells(cfg) -> list[Cell]:
    names = _as_list(cfg.get("methods"))
    mcfgs = [load_method_config(n) for n in names] if names else [cfg.method]
    bs = budgets(cfg)
    rs = [] if bs else ratios(cfg)  # an absolute budget replaces r (whose default is 0.5)
    if not rs and not bs:
        raise UsageError("give r (a ratio or a list) or budget_tokens")
    policy_override = cfg.get("budget_policy")
    if policy_override not in (None, "uniform", "adaptive"):
        raise UsageError(f"budget_policy must be uniform or adaptive, got {policy_override!r}")
    qas = _as_list(cfg.get("query_aware")) or [False]
    for qa in qas:
        if not isinstance(qa, bool):
            raise UsageError(f"query_aware must be true or false (or a list of them), got {qa!r}")
    cells: list[Cell] = []
    for mcfg in mcfgs:
        label, method, policy, safeguard = build_method(mcfg)
        policy = policy_override or policy
        if policy not in ("uniform", "adaptive"):
            raise UsageError(f"method {label!r}: budget_policy must be uniform or adaptive, got {policy!r}")
        for qa in qas:
            if not method.compresses:  # the reference: one configuration whatever the ratios
                cells.append(Cell(label, method, 0.0, None, "uniform", safeguard, qa))
                continue
            cells += [Cell(label, method, r, None, policy, safeguard, qa) for r in rs]
            cells += [Cell(label, method, None, b, policy, safeguard, qa) for b in bs]
    return cells


@dataclass
class Plan:
    model: ModelSpec
    window: int | None
    task_name: str
    task: Task
    task_params: dict
    cells: list[Cell]
    shard: tuple[int, int] | None = None  # (i, n): this job runs the contexts with shard_of(context_id, n) == i


def build_task(tcfg) -> tuple[str, Task, dict]:
    tcfg = OmegaConf.to_container(tcfg, resolve=True)
    name = tcfg.pop("name")
    suite = tcfg.pop("suite")
    try:
        return name, make_task(suite, **tcfg), tcfg
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"task {name}: {str(exc).strip(chr(39) + chr(34))}") from exc


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value) -> tuple[int, int] | None:
    """``shard=i/n`` -> (i, n) with 0 <= i < n; None when unset."""
    if value is None:
        return None
    m = _SHARD.match(str(value))
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise UsageError(
            f"shard must be i/n with 0 <= i < n (this job runs part i of n: shard=0/4, shard=1/4, ... shard=3/4; "
            f"in a multirun: -m shard=0/4,1/4,2/4,3/4), got {value!r}"
        )
    return int(m.group(1)), int(m.group(2))


def shard_of(context_id: str, n: int) -> int:
    """The shard (of n) a context belongs to: a stable hash of its id, so a context keeps its shard whatever
    else the run holds (more samples, other sub-tasks) and the shards of a run partition its contexts."""
    return int.from_bytes(hashlib.sha1(str(context_id).encode()).digest()[:8], "big") % n


def models_that_fit(needed: int) -> list[str]:
    fit = []
    for name in model_names():
        spec = model_spec(name)
        w = spec.max_position_embeddings or spec.arch.get("max_position_embeddings")
        if w and w >= needed:
            fit.append(f"{name} ({w})")
    return fit


DTYPES = ("auto", "float32", "bfloat16", "float16")


def _count(cfg, key: str, what: str, minimum: int = 1, nullable: bool = True) -> None:
    v = cfg.get(key)
    if v is None and nullable:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        null = " or null" if nullable else ""
        raise UsageError(f"{key} must be an integer >= {minimum}{null} ({what}), got {v!r}")


def check_run_options(cfg) -> None:
    """The run-wide options, checked before any weights load."""
    from harness.attention import BASES
    from harness.devices import check_device

    if cfg.get("decode_batch_size", 1) < 1:
        raise UsageError("decode_batch_size must be >= 1")
    check_device(str(cfg.get("device", "auto")))
    if cfg.get("attn_impl", "sdpa") not in BASES:
        raise UsageError(f"attn_impl={cfg.get('attn_impl')!r} is unknown; choose one of {', '.join(BASES)}")
    if cfg.get("dtype", "auto") not in DTYPES:
        raise UsageError(f"dtype={cfg.get('dtype')!r} is unknown; choose one of {', '.join(DTYPES)}")
    _count(cfg, "seed", "the data generators' seed", minimum=0, nullable=False)
    _count(cfg, "n_samples", "samples per sub-task; null: all")
    _count(cfg, "max_context", "a cap on context tokens; null: the model window")
    _count(cfg, "max_new_tokens", "a cap on answer tokens; null: each task's official value")


def make_plan(cfg) -> Plan:
    cells = build_cells(cfg)
    shard = parse_shard(cfg.get("shard"))
    try:
        spec = model_spec(cfg.model if OmegaConf.is_config(cfg.model) else str(cfg.model))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    window = context_window(spec)
    task_name, task, task_params = build_task(cfg.task)
    needed = task.max_length()
    if needed and window and needed > window:
        fit = models_that_fit(needed)
        raise UsageError(
            f"task {task_name} needs {needed} tokens but model {spec.name} holds {window}. "
            f"Models that fit: {', '.join(fit) if fit else 'none configured'}; or pick a shorter task "
            f"({', '.join(n for n in task_config_names() if n.startswith(task_name.split('_')[0]))})."
        )
    check_run_options(cfg)
    return Plan(spec, window, task_name, task, task_params, cells, shard)
