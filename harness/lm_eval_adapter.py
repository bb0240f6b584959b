"""lm-evaluation-harness adapter: ``--model kvcompress`` evaluates lm-eval tasks over a compressed KV cache.

    python -m harness.lm_eval_adapter --model kvcompress \\
        --model_args model=smollm2-135m,method=keydiff,r=0.5 --tasks <task> [any lm_eval run option]

(``python -m harness.lm_eval_adapter`` is lm-eval's own CLI with this model registered: the stock ``lm_eval``
command only knows the models it ships. From Python, ``import harness.lm_eval_adapter`` registers the model,
then ``lm_eval.simple_evaluate(model="kvcompress", ...)``.) docs/lm_eval.md has the details.

The command checks kvcompress's ``--model_args`` before lm-eval starts (one line and exit status 2 on an error),
uses ``device=auto`` unless a device is given (lm-eval's own default is ``cuda:0``), names the model's tokenizer
for lm-eval's RULER tasks (``--metadata``), and lm-eval's results folder after the model, method, budget,
method parameters and chat settings (``Settings.folder``), not after the model alone.

**Query-aware by construction.** lm-eval hands a model one prompt string (instructions, context and question
mixed); there is no question-free context to compress. So every prompt token but the last is prefilled with
full attention, scored by the method and compressed to its budget (``r``: the fraction removed, or
``budget_tokens``), and greedy decoding starts from the last prompt token over the compressed cache. The
method therefore sees the question while it chooses what to keep: the harness's ``query_aware=true`` setting,
which flatters query-agnostic methods compared with the harness's own suites (``query_aware=false``: context
compressed before the question is seen). Results and logs say so (the model's name and ``config.kvcompress``).

Request types:
- ``generate_until``: as above; greedy only (sampling arguments are ignored, with a warning), stop strings and
  ``max_gen_toks`` honoured, prompts longer than the window are left-truncated (as lm-eval's ``hf`` model).
- ``loglikelihood`` (multiple choice): computed on the compressed cache. The context minus its last token is
  prefilled and compressed, then its last token and the continuation are fed at once over the compressed cache;
  the continuation is never compressed. (A method's decode rule, ``Method.decode_rule``, is not applied while
  scoring a continuation.) Consecutive requests with the same context share one prefill.
- ``loglikelihood_rolling`` (perplexity): NotImplementedError.

This module imports lm-eval; nothing else in the harness imports this module (``pip install 'kvbench[lmeval]'``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

import torch

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry, register_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "harness.lm_eval_adapter needs lm-evaluation-harness: pip install 'kvbench[lmeval]' (or pip install lm-eval)"
    ) from exc

from harness import attention
from harness.cache import batch_cache
from harness.cell import Cell
from harness.configstep import ConfigStep
from harness.devices import check_device
from harness.errors import UsageError
from harness.models import ModelSpec, check_model, context_window, load_model, model_spec, tokenizer_ref
from harness.plan import DTYPES, budgets, build_method, load_method_config, ratios
from harness.protocol import with_cache
from tasks.chat import render_chat, set_chat_kwargs, strip_thinking

NAME = "kvcompress"
PROTOCOL = (
    "query-aware: the whole prompt except its last token is prefilled and compressed (the method sees the "
    "question), then decoding starts from the last prompt token over the compressed cache"
)
log = logging.getLogger(__name__)


def _bool(value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _device(device: str | None) -> str:
    """``device`` checked before any weights load (``harness.devices.check_device``: a known name, and a GPU that
    this machine has); ``cuda:free`` claims a GPU for a harness run, which an lm-eval model cannot hold."""
    device = str(device or "auto")
    if device == "cuda:free":
        raise UsageError("kvcompress: device=cuda:free is for harness multiruns; use auto, cpu, cuda or cuda:N")
    check_device(device)
    return device


@dataclass
class Settings:
    """What ``--model_args`` ask for, checked without loading weights (``settings``)."""

    spec: ModelSpec
    cell: Cell
    overrides: dict  # method parameters given as method.<name>=<value>
    device: str
    chat_template_kwargs: dict
    tokenizer: str | None  # a tokenizer name for lm-eval tasks that build their own prompts (RULER); unused here

    @property
    def budget(self) -> str:
        return f"r={self.cell.r:g}" if self.cell.r is not None else f"budget_tokens={self.cell.budget_tokens}"

    @property
    def name(self) -> str:
        return f"{NAME}[{self.spec.name},{self.cell.label},{self.budget},{self.cell.policy},query-aware]"

    @property
    def folder(self) -> str:
        """The results folder under ``--output_path``: model, method, budget, policy, method parameters and chat
        settings, so that runs that differ in any of them never share (or overwrite) a folder."""
        parts = [self.spec.name, self.cell.label, self.budget, self.cell.policy]
        parts += [f"{k}={v}" for k, v in sorted(self.overrides.items())]
        parts += [f"{k}={v}" for k, v in sorted(self.chat_template_kwargs.items())]
        return "__".join(str(p) for p in parts)


KEYS = ("model", "method", "r", "budget_tokens", "budget_policy", "device", "dtype", "attn_impl", "max_length",
        "max_gen_toks", "add_bos_token", "enable_thinking", "tokenizer", "batch_size", "max_batch_size")


def settings(
    model: str = "smollm2-135m",
    method: str = "keydiff",
    r: float | None = 0.5,
    budget_tokens: int | None = None,
    budget_policy: str | None = None,
    device: str | None = "auto",
    enable_thinking: bool | None = None,
    tokenizer: str | None = None,
    **rest,
) -> Settings:
    """``--model_args`` -> Settings, or a one-line UsageError; reads configs only (no weights, no tokenizer)."""
    unknown = [k for k in rest if not k.startswith("method.") and k not in KEYS]
    if unknown:
        raise UsageError(
            f"kvcompress: unknown model_args {unknown}; known: {', '.join(KEYS)}; method parameters are written "
            f"method.<name>=<value> (e.g. method.window_size=32)"
        )
    from harness.attention import BASES

    if str(rest.get("dtype", "auto")) not in DTYPES:
        raise UsageError(f"kvcompress: dtype={rest['dtype']!r} is unknown; choose one of {', '.join(DTYPES)}")
    if str(rest.get("attn_impl", "sdpa")) not in BASES:
        raise UsageError(f"kvcompress: attn_impl={rest['attn_impl']!r} is unknown; choose one of {', '.join(BASES)}")
    for key in ("max_length", "max_gen_toks"):
        value = rest.get(key)
        if value is not None and (isinstance(value, bool) or not str(value).isdigit() or int(value) < 1):
            raise UsageError(f"kvcompress: {key} must be a positive integer, got {value!r}")
    overrides = {k.split(".", 1)[1]: v for k, v in rest.items() if k.startswith("method.")}
    mcfg = load_method_config(str(method))
    for key, value in overrides.items():
        mcfg.setdefault("params", {})[key] = value
    label, meth, policy, safeguard = build_method(mcfg)
    if budget_tokens is not None:
        r = None
    rs, bs = ratios({"r": r}), budgets({"budget_tokens": None if budget_tokens is None else int(budget_tokens)})
    if not rs and not bs:
        raise UsageError("kvcompress: give r (fraction of prompt KV pairs removed) or budget_tokens")
    policy = budget_policy or policy
    if policy not in ("uniform", "adaptive"):
        raise UsageError(f"kvcompress: budget_policy must be uniform or adaptive, got {policy!r}")
    if not meth.compresses:
        rs, bs = [0.0], []
    cell = Cell(label, meth, rs[0] if rs else None, bs[0] if bs else None, policy, safeguard, True)
    try:
        spec = model_spec(str(model))
    except ValueError as exc:
        raise UsageError(f"kvcompress: {exc}") from None
    chat = dict(spec.chat_template_kwargs)
    if enable_thinking is not None:
        if str(enable_thinking).strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise UsageError(f"kvcompress: enable_thinking must be true or false, got {enable_thinking!r}")
        chat["enable_thinking"] = _bool(enable_thinking)
    return Settings(spec, cell, overrides, _device(device), chat, None if tokenizer is None else str(tokenizer))


class KVCompressLM(LM):
    """An lm-eval model: a harness model (config name, local directory or hub id) with one compression method
    at one budget. ``--model_args`` keys: ``model``, ``method`` (a conf/method name), ``r`` or
    ``budget_tokens``, ``budget_policy``, ``method.<param>=<value>`` (method parameters), ``device`` (default
    auto: the GPUs when present, else the CPU), ``dtype``, ``attn_impl``, ``max_length`` (prompt + answer
    tokens; default the model window), ``max_gen_toks`` (default 256), ``add_bos_token`` (default: add the
    tokenizer's special tokens unless the prompt already starts with BOS), ``enable_thinking`` (default: the
    model config's chat setting, off for Qwen3), ``tokenizer`` (for lm-eval's RULER tasks; the model always
    uses its own)."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        method: str = "keydiff",
        r: float | None = 0.5,
        budget_tokens: int | None = None,
        budget_policy: str | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        attn_impl: str = "sdpa",
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
        enable_thinking: bool | None = None,
        tokenizer: str | None = None,
        **method_params,
    ) -> None:
        super().__init__()
        cfg = settings(model, method, r, budget_tokens, budget_policy, device, enable_thinking, tokenizer, dtype=dtype,
                       attn_impl=attn_impl, max_length=max_length, max_gen_toks=max_gen_toks, **method_params)
        self.settings, self.cell, spec = cfg, cfg.cell, cfg.spec
        self.model, self.tokenizer = load_model(spec, dtype=dtype, device=cfg.device, attn_impl=attn_impl)
        set_chat_kwargs(self.tokenizer, cfg.chat_template_kwargs)  # enable_thinking given here wins over the config
        self.spec = spec
        self._device = next(self.model.parameters()).device
        self.step = ConfigStep(self.model, self.tokenizer)  # the engine's prefill, select, compress, decode
        self.max_length = int(max_length or context_window(spec) or 2048)
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _bool(add_bos_token)
        if str(batch_size) not in ("1", "None", "auto") or max_batch_size:
            log.warning("kvcompress: batch_size is ignored; prompts are evaluated one at a time")
        self._memo: tuple | None = None  # (prompt ids, CompressedContext): consecutive loglikelihood requests
        self._warned_sampling = False
        self.n_thinking_stripped = 0  # generations whose <think> text was removed before lm-eval scored them
        self.name = cfg.name
        log.warning(f"[kvbench] {self.name}: {PROTOCOL}")  # stderr even where logging is not configured

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """``--model_args`` win over lm-eval's own ``--device`` / ``--batch_size`` (which it always passes)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ------------------------------------------------------------------------------------------ metadata
    def get_model_info(self) -> dict:
        """Merged by lm-eval into ``results['config']``."""
        return {
            "model_name": self.name,
            NAME: {
                "query_aware": True,
                "protocol": PROTOCOL,
                "model": self.spec.name,
                "model_source": self.spec.hub_id or self.spec.path or self.spec.package or self.spec.source,
                **{k: v for k, v in self.cell.identity().items()},
                "max_length": self.max_length,
                "device": str(self._device) if not getattr(self.model, "hf_device_map", None) else "auto (spread)",
                "loglikelihood": "computed on the compressed cache (continuation not compressed)",
                "chat_template_kwargs": dict(self.settings.chat_template_kwargs),
                "thinking_stripped": self.n_thinking_stripped,  # generations scored without their <think> text
                "results_folder": self.settings.folder,
            },
        }

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", self.spec.name).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if not chat_template:
            return None
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval's ``--apply_chat_template``, with the model's chat settings (Qwen3: thinking off)."""
        return render_chat(
            self.tokenizer, chat_history, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ---------------------------------------------------------------------------------------- tokenizing
    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def _encode(self, text: str, special: bool | None = None) -> list[int]:
        if special is None:
            special = self.add_bos_token
        if special is None:  # like the harness's own prompts, unless the prompt already holds BOS (chat templates)
            bos = self.tokenizer.bos_token
            special = not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def _at_least_two(self, ids: list[int]) -> list[int]:
        """A prompt needs one token to compress and one to decode from."""
        return ids if len(ids) >= 2 else [self.prefix_token_id] * (2 - len(ids)) + ids

    # ------------------------------------------------------------------------------------------- engine
    def _compressed(self, prompt: list[int]):
        """Prefill and compress ``prompt[:-1]`` (one configuration); reused for consecutive equal prompts."""
        if self._memo is not None and self._memo[0] == prompt:
            return self._memo[1]
        pre = self.step.prefill(torch.tensor([prompt[:-1]], dtype=torch.long), [self.cell])
        ctx = self.step.compress(self.cell, pre)
        del pre  # the full cache
        self._memo = (list(prompt), ctx)
        return ctx

    def _generate(self, prompt: list[int], max_new_tokens: int, until: list[str]) -> str:
        ctx = self._compressed(prompt)
        last = torch.tensor([prompt[-1:]], dtype=torch.long)
        preds, _, _ = self.step.decode([self.cell], [ctx], last, max_new_tokens, until)
        return preds[0]

    @torch.no_grad()
    def _continuation_logprob(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        ctx = self._compressed(context)
        cache, state, starts = batch_cache([ctx], None, self._device)
        inputs = torch.tensor([context[-1:] + continuation[:-1]], dtype=torch.long, device=self._device)
        positions = starts[:, None] + torch.arange(inputs.shape[-1], device=self._device)[None]
        with attention.masking(state):
            state.extend(positions)
            logits = self.model(input_ids=inputs, position_ids=positions, use_cache=True,
                                **with_cache(self.model, cache)).logits
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        target = torch.tensor(continuation, dtype=torch.long, device=logp.device)
        total = float(logp.gather(-1, target[:, None]).sum())
        return total, bool((logp.argmax(dim=-1) == target).all())

    # -------------------------------------------------------------------------------------- lm-eval API
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc=self.name):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            if (_bool(gen_kwargs.get("do_sample")) or float(gen_kwargs.get("temperature", 0) or 0) > 0) and not self._warned_sampling:
                log.warning("kvcompress decodes greedily: do_sample/temperature are ignored")
                self._warned_sampling = True
            room = max(2, self.max_length - max_new)
            prompt = self._at_least_two(self._encode(context))[-room:]  # left truncation
            raw = self._generate(prompt, max_new, until)
            text = strip_thinking(raw)  # lm-eval scores the answer, not the model's thinking
            self.n_thinking_stripped += text != raw
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
        return out

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())  # trailing spaces belong to the continuation (lm-eval)
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        return ctx, whole[len(ctx):]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from tqdm.auto import tqdm

        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc=self.name):
            context, continuation = req.args
            if context:
                ctx, cont = self._encode_pair(context, continuation)
            else:
                ctx, cont = [self.prefix_token_id], self._encode(continuation, special=False)
            ctx = self._at_least_two(ctx)
            if not cont:
                raise ValueError(f"kvcompress: empty continuation for context {context[-80:]!r}")
            room = self.max_length - len(cont)
            if room < 2:
                raise ValueError(f"kvcompress: continuation of {len(cont)} tokens leaves no room in {self.max_length}")
            result = self._continuation_logprob(ctx[-room:], cont)
            out.append(result)
            self.cache_hook.add_partial("loglikelihood", (context, continuation), result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "kvcompress does not compute rolling log-likelihoods (perplexity tasks): compressing a text that is "
            "also the scored target is not this benchmark's protocol. Use generate_until or multiple-choice tasks."
        )


def _as_dict(model_args) -> dict:
    from lm_eval.utils import simple_parse_args_string

    return dict(model_args) if isinstance(model_args, dict) else simple_parse_args_string(model_args or "")


def _name_results_folders() -> None:
    """lm-eval names its results folder after ``model_args['model']`` alone, so two kvcompress runs of one model
    with different methods or budgets would share a folder. For ``kvcompress`` the folder is ``Settings.folder``
    instead (model, method, budget, policy, method parameters, chat settings); other models are untouched."""
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker
    from lm_eval.utils import sanitize_model_name

    original = GeneralConfigTracker.log_experiment_args
    if getattr(original, "kvbench", False):
        return

    def log_experiment_args(self, model_source, model_args, *args, **kwargs):
        original(self, model_source, model_args, *args, **kwargs)
        if model_source == NAME:
            try:
                self.model_name_sanitized = sanitize_model_name(settings(**_as_dict(model_args)).folder)
            except UsageError:  # reported by the model itself
                pass

    log_experiment_args.kvbench = True  # type: ignore[attr-defined]  # a marker: patched once per process
    GeneralConfigTracker.log_experiment_args = log_experiment_args


def register() -> None:
    """Register ``kvcompress`` with lm-eval (idempotent; done on import)."""
    import lm_eval.models  # noqa: F401  lm-eval's own models first (it imports them only into an empty registry)

    current = model_registry.get(NAME, None)
    if current is None:
        register_model(NAME)(KVCompressLM)
    elif getattr(current, "__qualname__", None) != KVCompressLM.__qualname__:
        raise ValueError(f"lm-eval model {NAME!r} is already registered by {current!r}")
    _name_results_folders()


register()


def _config_file(path: str | None) -> dict:
    """The ``--config`` YAML's values (``{}`` without one; lm-eval reports an unreadable file itself)."""
    if not path:
        return {}
    try:
        import yaml

        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        return loaded if isinstance(loaded, dict) else {}
    except Exception:
        return {}


# Packages lm-eval's own task families import (lm-eval's extras of the same names), by task-name prefix.
TASK_PACKAGES = {
    "longbench": (("longbench",), ("jieba", "fuzzywuzzy", "rouge")),
    "ruler": (("ruler", "niah_"), ("nltk", "wonderwords", "scipy")),
}


def check_task_packages(tasks: list[str] | str | None) -> None:
    """One line naming the missing packages when lm-eval's longbench or RULER tasks are asked for without them
    (lm-eval would fail while loading the task, after indexing every task). ``tasks`` is the command line's list
    or a config file's ``tasks:``, which may be one comma-separated string."""
    import importlib.util

    if isinstance(tasks, str):  # a config file's `tasks: a,b` (iterating it would go character by character)
        tasks = [tasks]
    names = [str(t).strip().lower() for t in tasks or [] for t in str(t).split(",")]
    for extra, (prefixes, packages) in TASK_PACKAGES.items():
        if any(n.startswith(prefixes) for n in names):
            missing = [pkg for pkg in packages if importlib.util.find_spec(pkg) is None]
            if missing:
                raise UsageError(
                    f"lm-eval's {extra} tasks need the packages {', '.join(packages)} ({', '.join(missing)} missing): "
                    f"pip install 'lm-eval[{extra}]' (or pip install {' '.join(missing)})"
                )


def prepare_argv(argv: list[str]) -> list[str]:
    """lm-eval's arguments with kvcompress's checked before lm-eval starts (seconds, not after indexing every
    task); raises UsageError with one line. For ``--model kvcompress`` it also:

    - adds ``--device auto`` (or the ``device`` of ``--model_args``) when no ``--device`` is given: lm-eval's own
      default, ``cuda:0``, fails on a CPU machine and pins a multi-GPU host's model to one GPU;
    - adds ``--metadata '{"tokenizer": <the model's tokenizer>}'`` unless a tokenizer is named (lm-eval's RULER
      tasks size their prompts with it, and cannot load a conf/model name such as ``smollm2-135m``);
    - checks that the packages lm-eval's longbench and RULER tasks import are installed (``TASK_PACKAGES``)."""
    try:
        from lm_eval._cli.harness import HarnessCLI
    except ImportError:  # an lm-eval older than its subcommand CLI: run it as it is
        return list(argv)
    cli_parser = HarnessCLI()
    commands = cli_parser._subparsers.choices
    full = list(argv) if argv and argv[0] in commands else ["run", *argv]
    if full[0] != "run" or len(full) < 2:
        return list(argv)
    args = cli_parser._parser.parse_args(full)  # usage errors: argparse's own message and exit status 2
    file = _config_file(getattr(args, "config", None))  # command-line values win over the file's, as in lm-eval
    if (args.model or file.get("model")) != NAME:
        return list(argv)
    model_args = {**_as_dict(file.get("model_args")), **(args.model_args or {})}
    device = args.device or file.get("device")
    if "device" not in model_args and device is not None:
        model_args["device"] = device
    cfg = settings(**model_args)  # UsageError: one line, before lm-eval loads anything
    try:
        check_model(cfg.spec)  # a directory that is not a model, a hub id out of reach, a package not installed
    except ValueError as exc:
        raise UsageError(f"kvcompress: {exc}") from None
    check_task_packages(args.tasks or file.get("tasks"))
    out = list(full)
    if device is None:  # lm-eval records it as the run's device
        out += ["--device", str(model_args.get("device", "auto"))]
    given = dict(getattr(args, "metadata", None) or {})
    from_file = {k: v for k, v in _as_dict(file.get("metadata")).items() if k not in given}
    if not any(k in d for d in (model_args, given, from_file) for k in ("tokenizer", "pretrained")):
        try:
            ref = tokenizer_ref(cfg.spec)
        except (OSError, RuntimeError, ValueError) as exc:
            raise UsageError(f"kvcompress: {exc}") from None
        # with the file's metadata: lm-eval replaces a --config file's metadata with the command line's
        out += ["--metadata", json.dumps({**from_file, "tokenizer": ref}, default=str)]
    return out


def cli(argv: list[str] | None = None) -> None:
    """lm-eval's command line with ``--model kvcompress`` available (same options as ``lm_eval``); errors in
    kvcompress's arguments are one line on stderr (exit status 2)."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.argv = [sys.argv[0], *prepare_argv(argv)]
        cli_evaluate()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
