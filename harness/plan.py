"""From a resolved config to a validated plan, before any weights load.

Unknown methods, ratios outside [0, 1), bad policies, unknown suites and tasks longer than the model's window
all fail here with one message that says what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.cell import Cell
from harness.errors import UsageError
from harness.method_configs import (
    MethodConfigError, compose_method, job_overrides, member_configs, method_config_names, method_params,
)
from harness.models import CONF_DIR, ModelSpec, check_model, context_window, model_names, model_spec
from methods import available, make_method
from tasks import make_task
from tasks.base import Task


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def config_keys() -> list[str]:
    """The top-level keys a run accepts: conf/config.yaml's own keys and its config groups (model, method, ...)."""
    keys = {str(k) for k in OmegaConf.load(CONF_DIR / "config.yaml") if k not in ("defaults", "hydra")}
    keys |= {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
    return sorted(keys)


def _unknown_key(key: str) -> UsageError:
    return UsageError(f"unknown key {key!r}; valid keys: {', '.join(config_keys())} (a method's parameters: "
                      f"method.params.<name>=..., a task's: task.<name>=...)")


def check_keys(cfg) -> None:
    """Refuse top-level keys the harness does not read (``+n_sample=3`` would otherwise be ignored). ``hydra``
    holds the overrides the config was composed with (harness.method_configs.keep_overrides)."""
    valid = {*config_keys(), "hydra"}
    for key in cfg:
        if key not in valid:
            raise _unknown_key(key)


def check_override_keys(overrides: list[str]) -> None:
    """The same check on command-line overrides, before Hydra composes them (``n_sample=3`` gets this line
    instead of Hydra's advice to append it with ``+``, which would then be ignored), and an empty ``output_dir``
    (before Hydra makes a multirun's folder from it)."""
    valid = set(config_keys())
    for o in overrides:
        if o.startswith("-") or "=" not in o:
            continue  # Hydra's own flags (-m, --cfg job, ...)
        key, value = o.split("=", 1)
        key = key.lstrip("+~").split("@", 1)[0]
        top = re.split(r"[./]", key, maxsplit=1)[0]
        if top and top != "hydra" and top not in valid:
            raise _unknown_key(top)
        if key == "output_dir" and value.strip() in ("", "null"):  # a multirun would put its folder at /.multirun
            check_output_dir(None)


def _not_empty(cfg, key: str, hint: str) -> None:
    """A key set to an empty list is refused (``methods=[]`` would silently run the default method)."""
    value = cfg.get(key)
    if isinstance(value, (list, tuple, ListConfig)) and len(value) == 0:
        raise UsageError(f"{key}=[] is empty; {hint}")


def task_config_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def load_method_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``conf/method/<name>.yaml`` as Hydra composes ``method=<name>`` (``defaults:`` applied), with ``method.*``
    overrides (harness.method_configs)."""
    try:
        return compose_method(name, overrides)
    except MethodConfigError as exc:
        raise UsageError(str(exc)) from exc


def run_method_configs(cfg) -> list[DictConfig]:
    """The method configs a run sweeps: ``cfg.method`` as Hydra composed it, or each member of ``methods=[...]``
    composed the same way with the job's ``method.*`` overrides (harness.method_configs.member_configs)."""
    names = [str(n) for n in _as_list(cfg.get("methods"))]
    if not names:
        return [cfg.method]
    try:
        return member_configs(names, job_overrides(cfg))
    except MethodConfigError as exc:
        raise UsageError(str(exc)) from exc


def load_task_config(name: str) -> DictConfig:
    path = CONF_DIR / "task" / f"{name}.yaml"
    if not path.exists():
        raise UsageError(f"unknown task {name!r}; choose one of: {', '.join(task_config_names())}")
    return cast(DictConfig, OmegaConf.load(path))  # a task config is a mapping


METHOD_KEYS = ("name", "method", "budget_policy", "safeguard", "params")


def build_method(mcfg) -> tuple[str, Any, str, float]:
    """(label, Method, default policy, safeguard) from a method config."""
    mcfg = OmegaConf.create(mcfg) if not OmegaConf.is_config(mcfg) else mcfg
    extra = [k for k in mcfg if k not in METHOD_KEYS]
    if extra:
        raise UsageError(f"method config {mcfg.get('name')!r} has no key {extra[0]!r}; its keys: "
                         f"{', '.join(METHOD_KEYS)} (a method's parameters: method.params.<name>=...)")
    cls = mcfg.get("method", mcfg.get("name"))
    if cls not in available():
        raise UsageError(f"unknown method class {cls!r} in method config {mcfg.get('name')!r}; available: {', '.join(available())}")
    raw = mcfg.get("params")
    params = cast(dict[str, Any], OmegaConf.to_container(raw, resolve=True)) if raw is not None else {}
    accepted = method_params(cls)
    unknown = [k for k in params if accepted is not None and k not in accepted]
    if unknown:
        raise UsageError(f"method {mcfg.get('name')!r} has no parameter {unknown[0]!r}; its parameters: "
                         f"{', '.join(accepted or []) or 'none'}")
    try:
        method = make_method(cls, **params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad parameters for method {mcfg.get('name')!r}: {exc}") from exc
    return mcfg.get("name", cls), method, mcfg.get("budget_policy", "uniform"), float(mcfg.get("safeguard", 0.2))


def ratios(cfg) -> list[float | None]:
    rs = _as_list(cfg.get("r"))
    out: list[float | None] = []
    for r in rs:
        try:
            r = float(r)
        except (TypeError, ValueError):
            raise UsageError(f"r must be a number in [0, 1) (the fraction of context KV pairs removed), got {r!r}") from None
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


def runs_decode_rule(method) -> bool:
    """Whether configurations of ``method`` run a decode rule (``Method.decode_rule``; the reference never does)."""
    return bool(method.compresses) and method.decode_rule(2, 1) is not None


def decode_budget(cfg) -> str:
    from methods.base import DECODE_BUDGETS

    value = cfg.get("decode_budget", "fixed")
    if value not in DECODE_BUDGETS:
        raise UsageError(f"decode_budget must be fixed (a decode rule keeps each head at the budget compression gave "
                         f"it) or ratio (that fraction of every token seen), got {value!r}")
    return str(value)


def parse_turns(value) -> int | str:
    """``turns``: 1 (default), an integer k >= 2, or ``multi`` (docs/protocol.md, "Multi-turn conversations")."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip() == "multi":
        return "multi"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise UsageError(f"turns must be a positive integer (k questions of a context asked as successive turns of one "
                     f"conversation; 1: each question on its own) or multi (all of a context's questions), got "
                     f"{value!r}")


def build_cells(cfg) -> list[Cell]:
    _not_empty(cfg, "methods", f"give one or more of: {', '.join(method_config_names())} (or leave methods unset "
                               f"and give method=<name>)")
    _not_empty(cfg, "r", "give a ratio in [0, 1) or a list of them (r=0.75 keeps 25 %)")
    _not_empty(cfg, "budget_tokens", "give a positive integer or a list of them, or leave it unset (null) to use r")
    _not_empty(cfg, "query_aware", "give true, false or [false, true]")
    mcfgs = run_method_configs(cfg)
    bs = budgets(cfg)
    rs = [] if bs else ratios(cfg)  # an absolute budget replaces r (whose default is 0.5)
    if not rs and not bs:
        raise UsageError("give r (a ratio or a list) or budget_tokens")
    policy_override = cfg.get("budget_policy")
    if policy_override not in (None, "uniform", "adaptive"):
        raise UsageError(f"budget_policy must be uniform or adaptive, got {policy_override!r}")
    budget_mode = decode_budget(cfg)
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
            mode = budget_mode if runs_decode_rule(method) else "fixed"  # no rule: nothing to keep at a budget
            cells += [Cell(label, method, r, None, policy, safeguard, qa, mode) for r in rs]
            cells += [Cell(label, method, None, b, policy, safeguard, qa, mode) for b in bs]
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
    turns: int | str = 1  # questions per conversation (parse_turns)


def build_task(tcfg) -> tuple[str, Task, dict]:
    tcfg = OmegaConf.to_container(tcfg, resolve=True)
    name = tcfg.pop("name")
    suite = tcfg.pop("suite")
    if tcfg.get("tasks") == []:
        try:
            default = getattr(make_task(suite, **{**tcfg, "tasks": None}), "tasks", None)
        except Exception:
            default = None
        every = f" ({', '.join(default)})" if default else ""
        raise UsageError(f"task.tasks=[] is empty; give one or more sub-tasks, or leave it unset (null) for the "
                         f"suite's default{every}")
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
    if cfg.get("attn_impl") == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available() or str(cfg.get("device", "auto")) in ("cpu", "mps"):
            raise UsageError("attn_impl=flash_attention_2 needs the flash-attn package (>= 2.3.3, `pip install "
                             "flash-attn --no-build-isolation`) and a CUDA GPU; use attn_impl=sdpa or eager")
    if cfg.get("dtype", "auto") not in DTYPES:
        raise UsageError(f"dtype={cfg.get('dtype')!r} is unknown; choose one of {', '.join(DTYPES)}")
    _count(cfg, "seed", "the data generators' seed", minimum=0, nullable=False)
    _count(cfg, "n_samples", "samples per sub-task; null: all")
    _count(cfg, "max_context", "a cap on context tokens; null: the model window")
    _count(cfg, "max_new_tokens", "a cap on answer tokens; null: each task's official value")


def check_output_dir(value) -> Path:
    """``output_dir`` exists (created here) and is writable: checked before any weights load, so a bad folder
    never costs a model load and computed rows."""
    if value is None or not str(value).strip():
        raise UsageError("output_dir is empty; give the folder for the result files (default results/runs): an "
                         "empty one writes them into the current folder, and resume reads every *.parquet below it")
    path = Path(str(value))
    if path.exists() and not path.is_dir():
        raise UsageError(f"output_dir={str(value)!r} is a file, not a folder; give a folder for the result files")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kvbench-write-check-", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(value) else ""
        raise UsageError(f"output_dir={str(value)!r} cannot be written: {reason}{where}; give a folder this user "
                         f"can create and write") from exc
    return path


def check_prefill(cfg, cells: list[Cell]) -> None:
    """``prefill`` and ``prefill_chunk`` (docs/protocol.md, "Layer-wise and chunked prefill"): known values, and a
    combination every configuration can run (harness.prefill_modes.prefill_error says why not)."""
    from harness.prefill_modes import prefill_error

    mode, chunk = cfg.get("prefill", "default"), cfg.get("prefill_chunk")
    if (mode != "default" or chunk is not None) and str(cfg.get("turns", 1)) != "1":
        raise UsageError("turns (multi-turn conversations) runs on the default prefill only: give prefill=default "
                         "and prefill_chunk=null, or turns=1")
    for cell in cells:
        err = prefill_error(cell.method, cell.policy, cell.query_aware, mode, chunk)
        if err:
            raise UsageError(err if cell.label == cell.method.name else f"{cell.label}: {err}")


def make_plan(cfg) -> Plan:
    check_keys(cfg)
    cells = build_cells(cfg)
    check_prefill(cfg, cells)
    shard = parse_shard(cfg.get("shard"))
    try:
        spec = model_spec(cfg.model if OmegaConf.is_config(cfg.model) else str(cfg.model))  # a missing path fails here
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
    try:
        check_model(spec)  # a directory that is not a model, a hub id neither cached nor reachable, a missing package
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    check_run_options(cfg)
    return Plan(spec, window, task_name, task, task_params, cells, shard, parse_turns(cfg.get("turns", 1)))
