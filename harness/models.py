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
from typing import Any, cast

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from tasks.chat import check_chat_template_kwargs, default_chat_template_kwargs, set_chat_kwargs
from harness.configs import CONF_DIR  # conf/ in a clone, harness/conf in an installed wheel

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
    # chat-template variables (tasks/chat.py), e.g. {"enable_thinking": False} for Qwen3; recorded per row
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.chat_template_kwargs = check_chat_template_kwargs(self.chat_template_kwargs, f"model {self.name!r}")

    def need(self, key: str) -> str:
        """The field ``key`` (``path``, ``hub_id``, ``package``, ``gguf_file``) that this model's source reads; a
        config without it is one ValueError naming the field."""
        value = getattr(self, key)
        if value is None:
            raise ValueError(f"model {self.name!r} (source {self.source}) needs `{key}` in its config")
        return str(value)

    def ref(self) -> str:
        """What transformers loads a ``path`` or ``hub`` model from: the directory or the hub id."""
        return self.need("path") if self.source == "path" else self.need("hub_id")


def model_names() -> list[str]:
    """Configured model names (``custom`` is the carrier of hub ids and paths, not a model)."""
    return sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml") if p.stem != "custom")


def model_spec(name_or_path: str | dict[str, Any] | DictConfig | ListConfig) -> ModelSpec:
    """Resolve a config name, a config dict, a local directory or a hub id to a spec (no weights read)."""
    if isinstance(name_or_path, (DictConfig, ListConfig)):
        name_or_path = cast(dict[str, Any], OmegaConf.to_container(name_or_path, resolve=True))  # a model config
    if isinstance(name_or_path, dict):
        d = dict(name_or_path)
        if d.get("source") == "auto":  # conf/model/custom.yaml: resolve the path the user gave
            spec = model_spec(str(d["path"]))
            chat = d.get("chat_template_kwargs")
            if chat is not None:  # model.chat_template_kwargs={...} replaces the default for the name
                spec.chat_template_kwargs = check_chat_template_kwargs(chat, f"model {spec.name!r}")
            return spec
        known = {k: d.pop(k) for k in list(d) if k in ModelSpec.__dataclass_fields__}
        return ModelSpec(**known, extra=d)
    conf = MODEL_CONF_DIR / f"{name_or_path}.yaml"
    if conf.exists():
        return model_spec(OmegaConf.load(conf))
    chat = default_chat_template_kwargs(str(name_or_path))  # Qwen3 by hub id or path: thinking off, as its configs
    if os.path.isdir(name_or_path):
        return ModelSpec(name=Path(name_or_path).name, source="path", path=str(name_or_path), chat_template_kwargs=chat)
    if "/" in str(name_or_path):
        if is_hub_id(str(name_or_path)):
            return ModelSpec(name=str(name_or_path), source="hub", hub_id=str(name_or_path),
                             chat_template_kwargs=chat)
        what = "is a file, not a model directory" if os.path.exists(name_or_path) else "does not exist"
        raise ValueError(
            f"model path {name_or_path!r} {what}; give a directory holding a model (config.json and weights), "
            f"a hub id (owner/name) or a configured model: {', '.join(model_names())}"
        )
    raise ValueError(
        f"unknown model {name_or_path!r}: not a config in conf/model/, a local directory, or a hub id "
        f"(owner/name). Configured models: {', '.join(model_names())}"
    )


def is_hub_id(ref: str) -> bool:
    """``owner/name`` as the hub spells repository ids (a path such as ``/data/model`` or ``./m`` is not one)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return ref.count("/") == 1


def _hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """``local_files_only=True`` for a hub model when the hub cannot be reached (read the local cache at once
    instead of retrying every file: ``tasks.base.hub_reachable`` probes once per process)."""
    from tasks.base import hub_reachable

    return {"local_files_only": True} if spec.source == "hub" and not hub_reachable() else {}


def check_model(spec: ModelSpec) -> None:
    """Raise ``ValueError`` (one line, what to do) when ``spec`` cannot load, without reading weights: a directory
    that is not a model, a hub id neither in the local cache nor reachable, a model package not installed."""
    if spec.source == "path":
        config = Path(spec.need("path")) / "config.json"
        if not config.is_file():
            raise ValueError(
                f"model directory {spec.path!r} is not a model: it holds no config.json (give a directory written by "
                f"save_pretrained, a hub id (owner/name) or a configured model: {', '.join(model_names())})"
            )
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(spec.need("path"))
        except Exception as exc:  # unreadable or unknown config.json: transformers raises several types
            raise ValueError(f"model directory {spec.path!r} is not a model transformers can load: {_first_line(exc)}") from exc
    elif spec.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(spec.need("hub_id"), "config.json"), str):
            return  # in the local cache: loads offline too
        if _hub_kwargs(spec):
            raise ValueError(
                f"model {spec.hub_id!r} (a hub id: there is no local directory of that name) is not in the local "
                f"Hugging Face cache and the hub cannot be reached (no network, or HF_HUB_OFFLINE=1): download it where "
                f"the hub is reachable (`hf download {spec.hub_id}`, then copy the cache or set HF_HOME), or give a "
                f"local directory"
            )
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(spec.need("hub_id"))
        except Exception as exc:  # unknown, gated or private repository; network error
            raise ValueError(f"model {spec.hub_id!r} cannot be read from the hub: {_first_line(exc)}") from exc
    elif spec.source == "gguf_package":
        if _is_split(spec):
            cached = _gguf_cache_path(spec)
            if (cached / "model.safetensors").exists() and (cached / "tokenizer_config.json").exists():
                return  # de-quantised already: the package is no longer needed
            if spec.extra.get("gguf_parts"):
                sha = str(spec.extra.get("gguf_sha256", "")).lower()[:12]
                target = cache_dir() / "gguf" / sha / spec.need("gguf_file")
                if not target.exists():  # missing or truncated chunks, before any weights load
                    try:
                        _checked_parts(spec)
                    except ModelFilesError as exc:
                        raise ValueError(str(exc)) from exc
                return
        try:
            _package_dir(spec)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def _package_dir(spec: ModelSpec) -> Path:
    found = importlib.util.find_spec(spec.need("package"))
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

        ref = spec.ref()
        cfg = AutoConfig.from_pretrained(ref, **_hub_kwargs(spec))
        cfg = getattr(cfg, "text_config", cfg)
        return getattr(cfg, "max_position_embeddings", None)
    except Exception:
        return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` (the first GPU; with several, see ``spreads_over_gpus``) or ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def spreads_over_gpus(device: str) -> bool:
    """``device=auto`` with more than one CUDA device: the layers are spread over all of them (accelerate
    ``device_map="auto"``); an explicit ``cuda`` / ``cuda:N`` keeps the whole model on one GPU."""
    return device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1


def spread_model(model, device_map: dict | str = "auto", main_device=None, **dispatch_kwargs):
    """Dispatch a model loaded in memory over devices with accelerate (GGUF and random-weight models, which
    load on the CPU first). ``device_map="auto"`` balances whole decoder layers over the visible GPUs; an
    explicit map ``{module name: device}`` is used as given (tests pass one)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    if device_map == "auto":
        dtype = next(model.parameters()).dtype
        memory = get_balanced_memory(model, no_split_module_classes=no_split, dtype=dtype)
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    model.tie_weights()
    skip = sorted(getattr(model, "_skip_keys_device_placement", None) or ["past_key_values"])
    return dispatch_model(model, device_map=device_map, main_device=main_device, skip_keys=skip, **dispatch_kwargs)


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(name_or_path: str | ModelSpec):
    """The tokenizer of a model (GGUF tokenizers are cached with the de-quantised weights), carrying the model's
    chat-template variables (``tasks.chat``: ``render_chat`` passes them to every rendering)."""
    spec = name_or_path if isinstance(name_or_path, ModelSpec) else model_spec(name_or_path)
    return set_chat_kwargs(_load_tokenizer(spec), spec.chat_template_kwargs)


def tokenizer_ref(name_or_path: str | ModelSpec) -> str:
    """A name ``AutoTokenizer.from_pretrained`` loads this model's tokenizer from without the harness (lm-eval's
    RULER tasks size their prompts with one): the cached tokenizer folder of a GGUF model (written now if
    needed), the tokenizer model's for a random model, else the hub id or path."""
    spec = name_or_path if isinstance(name_or_path, ModelSpec) else model_spec(name_or_path)
    if spec.source == "random":
        return tokenizer_ref(spec.tokenizer or "smollm2-135m")
    if spec.source == "gguf_package":
        _load_tokenizer(spec)
        return str(_gguf_cache_path(spec))
    return str(spec.path if spec.source == "path" else spec.hub_id)


def _load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    if spec.source == "gguf_package":
        cached = _gguf_cache_path(spec)
        if (cached / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(cached)
        gguf = gguf_path(spec)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _save_tokenizer(tok, cached)
        return tok
    if spec.source == "random":
        return _load_tokenizer(model_spec(spec.tokenizer or "smollm2-135m"))
    return AutoTokenizer.from_pretrained(spec.ref(), **_hub_kwargs(spec))


def _save_tokenizer(tok, cached: Path) -> None:
    """Write the tokenizer files into ``cached`` so that a concurrent run (several processes of a multirun on one
    host) never reads a half-written folder: saved into a private temporary folder first, then moved in file by
    file (atomic renames), ``tokenizer_config.json`` (the marker ``_load_tokenizer`` checks) last."""
    import shutil
    import tempfile

    cached.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=cached))
    try:
        tok.save_pretrained(tmp)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "tokenizer_config.json"):
            os.replace(f, cached / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_split(spec: ModelSpec) -> bool:
    return bool(spec.extra.get("gguf_split"))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resource(ref: str) -> Path:
    """``pkg/rel/path`` -> that file inside the installed package ``pkg``, located without importing it."""
    top, _, rel = ref.partition("/")
    found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {top!r} (holding {rel}) is not installed")
    return Path(list(found.submodule_search_locations)[0]) / rel


def _part_check(ref: str, path: Path) -> tuple[str, int | None, str | None]:
    """``(reinstall command, size, sha256 hex)`` of one GGUF chunk as its wheel's RECORD lists it (size and hash
    None when the RECORD does not list the file), so a truncated or corrupt chunk names the package to reinstall."""
    import base64
    from importlib import metadata

    top, _, rel = ref.partition("/")
    for dist_name in metadata.packages_distributions().get(top, []):
        dist = metadata.distribution(dist_name)
        hint = f"pip install --force-reinstall --no-deps {dist.metadata['Name']}=={dist.version}"
        for f in dist.files or []:
            if f.as_posix() == f"{top}/{rel}":
                digest = None
                if f.hash is not None and f.hash.mode == "sha256":
                    digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
                return hint, f.size, digest
        return hint, None, None
    return f"pip install --force-reinstall {top}", None, None


class ModelFilesError(RuntimeError):
    """A model's files are missing, truncated or corrupt; the message names what to reinstall."""


def _checked_parts(spec: ModelSpec) -> tuple[list[Path], list[tuple[str, int | None, str | None]]]:
    """The chunk files of ``gguf_parts`` with their RECORD checks; missing or truncated chunks are one
    ``ModelFilesError`` naming the package to (re)install. Cheap: sizes only, no hashing."""
    refs = [str(ref) for ref in spec.extra["gguf_parts"]]
    hint = spec.install_hint or f"pip install {spec.package}"
    try:
        paths = [_resource(ref) for ref in refs]
    except FileNotFoundError as exc:
        raise ModelFilesError(f"model {spec.name!r}: {exc}; run `{hint}`") from exc
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ModelFilesError(f"model {spec.name!r}: missing GGUF chunks {missing}; run `{hint}`")
    checks = [_part_check(ref, path) for ref, path in zip(refs, paths)]
    for path, (part_hint, size, _) in zip(paths, checks):
        if size is not None and path.stat().st_size != size:
            raise ModelFilesError(
                f"model {spec.name!r}: GGUF chunk {path} has {path.stat().st_size} bytes, its package installed "
                f"{size}; reinstall it: {part_hint}"
            )
    return paths, checks


def _assemble_split(spec: ModelSpec) -> Path:
    """A GGUF shipped in chunks (``gguf_split: true``, ``gguf_sha256``): assembled once into the cache directory
    (``<cache>/gguf/<sha256[:12]>/<gguf_file>``) and verified against the SHA-256 before it is used.

    The chunks are the ``gguf_parts`` (``package/relative/path``, in order) when the config lists them, else the
    package's own ``assemble(output_path)`` writes them. Either way the file is written under a temporary name,
    checked, then renamed, so an interrupted or corrupt assembly never looks complete; a ``.sha256`` stamp
    beside it (written only after the check) lets later calls skip re-hashing."""
    expected = str(spec.extra.get("gguf_sha256") or "").lower()
    if len(expected) != 64:
        raise ValueError(f"model {spec.name!r}: a split GGUF needs its gguf_sha256 (64 hex digits)")
    target = cache_dir() / "gguf" / expected[:12] / spec.need("gguf_file")
    stamp = target.with_name(target.name + ".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        parts = spec.extra.get("gguf_parts")
        if parts:
            paths, checks = _checked_parts(spec)
            with tmp.open("wb") as out:
                for path, (hint, _, digest) in zip(paths, checks):
                    part_hash = hashlib.sha256()
                    with path.open("rb") as f:
                        while block := f.read(1 << 20):
                            part_hash.update(block)
                            out.write(block)
                    if digest is not None and part_hash.hexdigest() != digest:
                        raise ModelFilesError(
                            f"model {spec.name!r}: GGUF chunk {path} is corrupt (its SHA-256 differs from the one "
                            f"its package installed); reinstall it: {hint}"
                        )
        else:
            _package_dir(spec)  # a clear install hint when the package is missing
            package = importlib.import_module(spec.need("package"))  # the assembler imports nothing heavy
            package.assemble(output_path=tmp, overwrite=True)
        got = _sha256_file(tmp)
        if got != expected:
            raise ModelFilesError(f"model {spec.name!r}: assembled GGUF has SHA-256 {got}, expected {expected} "
                                  f"(reinstall its packages: {spec.install_hint or spec.package})")
        os.replace(tmp, target)
        stamp.write_text(expected + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file of a ``gguf_package`` model (a split one is assembled and verified on first use)."""
    if _is_split(spec):
        return _assemble_split(spec)
    return _package_dir(spec) / spec.need("gguf_file")


def _gguf_cache_path(spec: ModelSpec) -> Path:
    if _is_split(spec):  # keyed by the verified content, so a cache hit needs neither the chunks nor the GGUF
        return cache_dir() / "models" / f"{spec.name}-{str(spec.extra['gguf_sha256']).lower()[:12]}"
    gguf = _package_dir(spec) / spec.need("gguf_file")
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{spec.name}-{key}"


def _save_weights(model, path: Path) -> None:
    """Save the weights with each tied pair stored once under its *source* name (the input embedding).

    ``safetensors.torch.save_model`` keeps ``lm_head.weight`` instead, so every later load first fills the
    embedding with random numbers before tying it back (seconds for Gemma's 262k x 640 embedding)."""
    from safetensors.torch import save_file, save_model

    state = model.state_dict()
    tied = getattr(model, "_tied_weights_keys", None)
    if isinstance(tied, dict):
        for target, source in tied.items():
            if target in state and source in state and state[target].data_ptr() == state[source].data_ptr():
                del state[target]
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    except (RuntimeError, ValueError):  # other shared tensors: let safetensors choose the names
        save_model(model, str(path))


def _load_gguf(spec: ModelSpec, dtype: torch.dtype):
    """De-quantise once, then cache as safetensors: the first load takes ~15 s, later ones ~1 s."""
    from transformers import AutoModelForCausalLM

    cached = _gguf_cache_path(spec)
    if (cached / "model.safetensors").exists() and (cached / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    gguf = gguf_path(spec)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached.mkdir(parents=True, exist_ok=True)
    tmp = cached / f"model.safetensors.tmp-{os.getpid()}"  # one per process: concurrent first loads do not collide
    _save_weights(model, tmp)
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
    spread = spreads_over_gpus(device)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if spec.source == "gguf_package":
        model = _load_gguf(spec, torch_dtype)
    elif spec.source == "random":
        model = build_random_model(spec.arch, torch_dtype)
    else:
        ref = spec.ref()
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype, **({"device_map": "auto"} if spread else {}),
                                                     **_hub_kwargs(spec))
    tokenizer = load_tokenizer(spec)
    if spread:
        if not getattr(model, "hf_device_map", None):  # loaded in memory (GGUF, random): dispatch it now
            model = spread_model(model)
    elif device != "cpu" and device != "auto":
        model = model.to(device)
    model.eval()
    install(model, attn_impl)
    model.kvbench_spec = spec  # recorded in result rows
    return model, tokenizer
