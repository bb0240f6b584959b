"""Model loading: config names (conf/model/*.yaml), local directories, hub ids, GGUF packages, random weights.

``load_model(name_or_path)`` returns ``(model, tokenizer)`` ready for the protocol (eval mode, the harness's
attention function installed). Everything about a model that must be known *before* its weights load (its
context window, for validating a task) comes from ``model_spec`` / ``context_window``, which never read
weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
MODEL_CONF_DIR = CONF_DIR / "model"


def cache_dir() -> Path:
    """Where de-quantised GGUF weights are cached ($KVBENCH_CACHE, default ~/.cache/kvbench)."""
    return Path(os.environ.get("KVBENCH_CACHE", Path.home() / ".cache" / "kvbench"))


@dataclass
class ModelSpec:
    name: str
    source: str  # gguf_package | hub | path | random
    hub_id: str | None = None
    path: str | None = None
    package: str | None = None
    gguf_file: str | None = None
    install_hint: str | None = None
    tokenizer: str | None = None  # for random models: a model name or path whose tokenizer is used
    arch: dict[str, Any] = field(default_factory=dict)  # for random models: the architecture config
    max_position_embeddings: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def model_names() -> list[str]:
    """Configured model names (``custom`` is the carrier of hub ids and paths, not a model)."""
    return sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml") if p.stem != "custom")


def model_spec(name_or_path: str | dict) -> ModelSpec:
    """Resolve a config name, a config dict, a local directory or a hub id to a spec (no weights read)."""
    if isinstance(name_or_path, dict) or OmegaConf.is_config(name_or_path):
        d = OmegaConf.to_container(name_or_path, resolve=True) if OmegaConf.is_config(name_or_path) else dict(name_or_path)
        if d.get("source") == "auto":  # conf/model/custom.yaml: resolve the path the user gave
            return model_spec(str(d["path"]))
        known = {k: d.pop(k) for k in list(d) if k in ModelSpec.__dataclass_fields__}
        return ModelSpec(**known, extra=d)
    conf = MODEL_CONF_DIR / f"{name_or_path}.yaml"
    if conf.exists():
        return model_spec(OmegaConf.load(conf))
    if os.path.isdir(name_or_path):
        return ModelSpec(name=Path(name_or_path).name, source="path", path=str(name_or_path))
    if "/" in str(name_or_path):
        return ModelSpec(name=str(name_or_path), source="hub", hub_id=str(name_or_path))
    raise ValueError(
        f"unknown model {name_or_path!r}: not a config in conf/model/, a local directory, or a hub id "
        f"(owner/name). Configured models: {', '.join(model_names())}"
    )


def _package_dir(spec: ModelSpec) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        hint = spec.install_hint or f"pip install {spec.package}"
        raise RuntimeError(f"model {spec.name!r} needs the package {spec.package!r}: run `{hint}`")
    return Path(list(found.submodule_search_locations)[0])


def context_window(spec: ModelSpec) -> int | None:
    """The model's maximum positions, from its spec or its config.json; never loads weights."""
    if spec.max_position_embeddings:
        return int(spec.max_position_embeddings)
    if spec.source == "random":
        return spec.arch.get("max_position_embeddings")
    try:
        from transformers import AutoConfig

        ref = spec.path if spec.source == "path" else spec.hub_id
        cfg = AutoConfig.from_pretrained(ref)
        cfg = getattr(cfg, "text_config", cfg)
        return getattr(cfg, "max_position_embeddings", None)
    except Exception:
        return None


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(name_or_path: str | ModelSpec):
    """The tokenizer of a model (GGUF tokenizers are cached with the de-quantised weights)."""
    from transformers import AutoTokenizer

    spec = name_or_path if isinstance(name_or_path, ModelSpec) else model_spec(name_or_path)
    if spec.source == "gguf_package":
        cached = _gguf_cache_path(spec)
        if (cached / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(cached)
        tok = AutoTokenizer.from_pretrained(_package_dir(spec), gguf_file=spec.gguf_file)
        cached.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(cached)
        return tok
    if spec.source == "random":
        return load_tokenizer(spec.tokenizer or "smollm2-135m")
    return AutoTokenizer.from_pretrained(spec.path if spec.source == "path" else spec.hub_id)


def _gguf_cache_path(spec: ModelSpec) -> Path:
    gguf = _package_dir(spec) / spec.gguf_file
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{spec.name}-{key}"


def _load_gguf(spec: ModelSpec, dtype: torch.dtype):
    """De-quantise once, then cache as safetensors: the first load takes ~15 s, later ones ~1 s."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM

    cached = _gguf_cache_path(spec)
    if (cached / "model.safetensors").exists() and (cached / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(_package_dir(spec), gguf_file=spec.gguf_file, dtype=torch.float32)
    cached.mkdir(parents=True, exist_ok=True)
    tmp = cached / "model.safetensors.tmp"
    save_model(model, str(tmp))
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    (cached / "config.json").write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, cached / "model.safetensors")
    return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)


def build_random_model(arch: dict[str, Any], dtype: torch.dtype = torch.float32, seed: int = 0):
    """A model with random weights from an architecture config alone (timing runs, tests)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(arch)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(model_type, **arch)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def load_model(
    name_or_path: str | ModelSpec,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    attn_impl: str = "sdpa",
):
    """``(model, tokenizer)`` for a config name, local directory or hub id, with the harness attention installed."""
    from transformers import AutoModelForCausalLM

    from harness.attention import install

    spec = name_or_path if isinstance(name_or_path, ModelSpec) else model_spec(name_or_path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if spec.source == "gguf_package":
        model = _load_gguf(spec, torch_dtype)
    elif spec.source == "random":
        model = build_random_model(spec.arch, torch_dtype)
    else:
        ref = spec.path if spec.source == "path" else spec.hub_id
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
    tokenizer = load_tokenizer(spec)
    if device != "cpu" and device != "auto":
        model = model.to(device)
    model.eval()
    install(model, attn_impl)
    model.kvbench_spec = spec  # recorded in result rows
    return model, tokenizer
