"""lm-evaluation-harness adapter: ``--model kvcompress`` evaluates lm-eval tasks over a compressed KV cache.

    python -m harness.lm_eval_adapter --model kvcompress \\
        --model_args model=smollm2-135m,method=keydiff,r=0.5 --tasks <task> [any lm_eval run option]

(``python -m harness.lm_eval_adapter`` is lm-eval's own CLI with this model registered: the stock ``lm_eval``
command only knows the models it ships. From Python, ``import harness.lm_eval_adapter`` registers the model,
then ``lm_eval.simple_evaluate(model="kvcompress", ...)``.)

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
  the continuation is never compressed. (Decode-time eviction, ``h2o_online``, is not applied while scoring a
  continuation.) Consecutive requests with the same context share one prefill.
- ``loglikelihood_rolling`` (perplexity): NotImplementedError.

This module imports lm-eval; nothing else in the harness imports this module (``pip install 'kvbench[lmeval]'``).
"""

from __future__ import annotations

import logging
import sys

import torch

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry, register_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "harness.lm_eval_adapter needs lm-evaluation-harness: pip install 'kvbench[lmeval]' (or pip install lm-eval)"
    ) from exc

from harness import attention
from harness.cache import batch_cache, compress
from harness.models import context_window, load_model, model_spec
from harness.plan import UsageError, budgets, build_method, load_method_config, ratios
from harness.protocol import compressed_layers, decode, eviction_rule, prefill, with_cache
from harness.sweep import Cell, SweepRunner

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


class KVCompressLM(LM):
    """An lm-eval model: a harness model (config name, local directory or hub id) with one compression method
    at one budget. ``--model_args`` keys: ``model``, ``method`` (a conf/method name), ``r`` or
    ``budget_tokens``, ``budget_policy``, ``method.<param>=<value>`` (method parameters), ``device``,
    ``dtype``, ``attn_impl``, ``max_length`` (prompt + answer tokens; default the model window),
    ``max_gen_toks`` (default 256), ``add_bos_token`` (default: add the tokenizer's special tokens unless
    the prompt already starts with BOS)."""

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
        **method_params,
    ) -> None:
        super().__init__()
        unknown = [k for k in method_params if not k.startswith("method.")]
        if unknown:
            raise UsageError(
                f"kvcompress: unknown model_args {unknown}; method parameters are written method.<name>=<value> "
                f"(e.g. method.window_size=32)"
            )
        mcfg = load_method_config(str(method))
        for key, value in method_params.items():
            mcfg.setdefault("params", {})[key.split(".", 1)[1]] = value
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
        self.cell = Cell(label, meth, rs[0] if rs else None, bs[0] if bs else None, policy, safeguard, True)

        spec = model_spec(str(model))
        self.model, self.tokenizer = load_model(spec, dtype=dtype, device=device or "auto", attn_impl=attn_impl)
        self.spec = spec
        self._device = next(self.model.parameters()).device
        self.layers, self.sliding = compressed_layers(self.model)
        self.rotary = getattr(getattr(self.model, "model", self.model), "rotary_emb", None)
        self.max_length = int(max_length or context_window(spec) or 2048)
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _bool(add_bos_token)
        if str(batch_size) not in ("1", "None", "auto") or max_batch_size:
            log.warning("kvcompress: batch_size is ignored; prompts are evaluated one at a time")
        self._memo: tuple | None = None  # (prompt ids, CompressedContext): consecutive loglikelihood requests
        self._warned_sampling = False
        budget = f"r={self.cell.r:g}" if self.cell.r is not None else f"budget_tokens={self.cell.budget_tokens}"
        self.name = f"{NAME}[{spec.name},{label},{budget},{policy},query-aware]"
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
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
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
        cell = self.cell
        ids = torch.tensor([prompt[:-1]], dtype=torch.long)
        n = ids.shape[-1]
        cache, scores, _, _ = prefill(self.model, ids, {cell.score_key: cell.method})
        kept = SweepRunner._select(cell, scores, n)
        ctx = compress(
            cache, kept, n, self.sliding, cell.method.rerotate, self.rotary,
            scores[cell.score_key] if cell.method.decode_eviction else None,
        )
        del cache
        self._memo = (list(prompt), ctx)
        return ctx

    def _generate(self, prompt: list[int], max_new_tokens: int, until: list[str]) -> str:
        ctx, cell = self._compressed(prompt), self.cell
        last = torch.tensor([prompt[-1:]], dtype=torch.long)
        preds, _, _ = decode(
            self.model, self.tokenizer, [ctx], last, max_new_tokens, until,
            [eviction_rule(cell.method, ctx.n_context, cell.r, cell.budget_tokens)],
        )
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
            text = self._generate(prompt, max_new, until)
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


def register() -> None:
    """Register ``kvcompress`` with lm-eval (idempotent; done on import)."""
    import lm_eval.models  # noqa: F401  lm-eval's own models first (it imports them only into an empty registry)

    current = model_registry.get(NAME, None)
    if current is None:
        register_model(NAME)(KVCompressLM)
    elif getattr(current, "__qualname__", None) != KVCompressLM.__qualname__:
        raise ValueError(f"lm-eval model {NAME!r} is already registered by {current!r}")


register()


def cli(argv: list[str] | None = None) -> None:
    """lm-eval's command line with ``--model kvcompress`` available (same options as ``lm_eval``)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    cli()
