"""Method configs composed one way: through Hydra's config group ``method`` (``conf/method/``).

``method=<name>`` and every member of ``methods=[a,b]`` are the same composition, ``method=<name>`` plus the
user's ``method.*`` overrides, so a variant's ``defaults: [<parent>]`` (``conf/method/nestedkv_uniform.yaml``)
and an override such as ``method.params.window=32`` reach each member alike. docs/sweeps.md ("Method parameters
with a list of methods") says which members an override reaches. Errors are ``MethodConfigError``, which
``harness/plan.py`` reports as one ``UsageError`` line.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from harness.configs import CONF_DIR
from methods import METHODS, available

PREFIX = "method."
PARAMS = PREFIX + "params."


class MethodConfigError(ValueError):
    """A method config or a ``method.*`` override that cannot be composed (harness.plan: one UsageError line)."""


def method_config_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def method_params(cls_name: str) -> list[str] | None:
    """The parameters a method class accepts (its dataclass fields, in its ``__init__``'s order: keyword-only ones
    such as ``decode_rescore_every`` last), or None when it is not a dataclass."""
    available()  # registers the method modules
    cls = METHODS[cls_name]
    if not dataclasses.is_dataclass(cls):
        return None
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return [f.name for f in fields if not f.kw_only] + [f.name for f in fields if f.kw_only]


# ----------------------------------------------------------------------------------------------- overrides
def override_key(override: str) -> str:
    """The key an override sets, without Hydra's prefixes: ``++method.params.window=32`` -> ``method.params.window``."""
    return override.split("=", 1)[0].lstrip("~+").strip()


def is_method_override(override: str) -> bool:
    """``method.<key>=...`` in any of Hydra's forms (plain, ``+``, ``++``, ``~``); not the choice ``method=<name>``."""
    return not override.startswith("-") and override_key(override).startswith(PREFIX)


def force_add(overrides: Sequence[str]) -> list[str]:
    """``method.<key>=v`` and ``+method.<key>=v`` -> ``++method.<key>=v``: a method override sets the key whether
    or not the chosen config file spells it out (a parameter the class has but the YAML leaves at its default,
    or a parameter of a member of ``methods=[...]`` that the default ``method`` lacks), and the harness then
    checks the key itself (one line naming the method and its parameters, harness.plan.build_method) instead of
    Hydra's ``Key 'x' is not in struct`` advice. Deletions (``~method.<key>``) stay as they are."""
    out = []
    for o in overrides:
        if is_method_override(o) and not o.startswith(("~", "++")) and "=" in o:
            o = "++" + o.lstrip("+")
        out.append(o)
    return out


def job_overrides(cfg) -> list[str]:
    """The overrides a config was composed with: ``hydra.overrides.task``, where Hydra keeps a job's overrides
    (``keep_overrides`` records them for ``python -m harness`` and ``harness.run.compose``); none for a config
    built another way."""
    found = OmegaConf.select(cfg, "hydra.overrides.task", default=None) if OmegaConf.is_config(cfg) else None
    return [str(o) for o in found] if found is not None else []


def keep_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Record a job's overrides in its config as ``hydra.overrides.task`` (Hydra's own place for them), so that
    the plan composes every member of ``methods=[...]`` with the job's ``method.*`` overrides."""
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.hydra = {"overrides": {"task": [str(o) for o in overrides]}}
    OmegaConf.set_struct(cfg, struct)
    return cfg


# ------------------------------------------------------------------------------------------------- compose
def compose_method(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config group option ``method=<name>`` as Hydra composes it (its ``defaults:`` applied) with ``method.*``
    overrides, standalone and without Hydra's struct flag (as ``OmegaConf.load`` gives a file)."""
    if name not in method_config_names():
        raise MethodConfigError(f"unknown method {name!r}; choose one of: {', '.join(method_config_names())}")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.create(_composed(name, tuple(force_add(overrides))))
    except (HydraException, OmegaConfBaseException) as exc:
        reason = " ".join(str(exc).split())
        raise MethodConfigError(f"method {name!r} with {' '.join(overrides)}: {reason}") from exc


@lru_cache(maxsize=256)
def _composed(name: str, overrides: tuple[str, ...]) -> dict:
    """Composed from ``CONF_DIR`` by a Hydra instance of its own, so that it works inside a running Hydra app
    (``python -m harness``, whose global instance is put back afterwards) as well as outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=None, overrides=[f"+method={name}", *overrides])
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)
    return cast(dict[str, Any], OmegaConf.to_container(cfg.method, resolve=True))  # a config group: a mapping


def member_configs(names: Sequence[str], overrides: Sequence[str]) -> list[DictConfig]:
    """The configs of ``methods=[...]``: each member composed with the ``method.*`` overrides that reach it.

    A parameter override (``method.params.<p>=v``) reaches the members whose method class has ``p`` and leaves
    the others as their configs say (one ``[kvbench]`` note on stderr names both); a parameter no member has is
    an error. Any other ``method.*`` key (``method.budget_policy``, ``method.safeguard``) reaches every member;
    ``method.name`` and ``method.method`` are refused (every member would get the same)."""
    overrides = [o for o in overrides if is_method_override(o)]
    for o in overrides:
        if override_key(o) in (PREFIX + "name", PREFIX + "method"):
            raise MethodConfigError(f"{o.lstrip('+')} cannot apply to methods=[{', '.join(names)}]: every member "
                                    f"would get it; give one method with method=<name>, or add a config to "
                                    f"conf/method/")
    params = {n: _params_of(compose_method(n)) for n in names}
    reached: dict[str, list[str]] = {o: [] for o in overrides}
    out = []
    for name in names:
        mine = [o for o in overrides if _reaches(o, params[name])]
        for o in mine:
            reached[o].append(name)
        out.append(compose_method(name, mine))
    for o, members in reached.items():
        others = [n for n in names if n not in members]
        if not others:
            continue
        if not members:
            have = "; ".join(f"{n}: {', '.join(params[n] or []) or 'none'}" for n in names)
            raise MethodConfigError(f"{o.lstrip('+')}: no method of methods=[{', '.join(names)}] has a parameter "
                                    f"{override_key(o)[len(PARAMS):]!r}; their parameters: {have}")
        print(f"[kvbench] {o.lstrip('+')} applies to {', '.join(members)}; not to {', '.join(others)} (no such "
              f"parameter: {'it keeps its' if len(others) == 1 else 'they keep their'} config)", file=sys.stderr)
    return out


def _params_of(mcfg: DictConfig) -> list[str] | None:
    """A method config's parameter names: its class's (None: any, for a class that is not a dataclass or unknown;
    harness.plan.build_method reports an unknown class)."""
    cls = mcfg.get("method", mcfg.get("name"))
    return method_params(cls) if cls in available() else None


def _reaches(override: str, params: list[str] | None) -> bool:
    """Whether a ``method.*`` override applies to a member with these parameters: one parameter
    (``method.params.<p>``) only where the class has it; any other key everywhere."""
    key = override_key(override)
    if not key.startswith(PARAMS) or params is None:
        return True
    return key[len(PARAMS):].split(".", 1)[0] in params
