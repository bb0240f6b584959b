"""One harness run: plan (no weights) -> load model -> records -> sweep -> Parquet rows -> summary."""

from __future__ import annotations

import hashlib
import json
import sys
import time

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from harness.errors import UsageError
from harness.plan import Plan, check_output_dir, make_plan, shard_of
from harness.sweep import SweepRunner, device_name, git_commit, group_by_context, versions

if TYPE_CHECKING:
    import pandas as pd

    from harness.results import ContextClaims, DoneIndex, ResultWriter, clean_leftovers, describe, read_rows

# harness.results (pandas, pyarrow) loads with the first run, not with compose / run_context: the GPU check's
# benchmarks use those two where neither is installed (scripts/gpu_check.sh)
_RESULTS = ("ContextClaims", "DoneIndex", "ResultWriter", "clean_leftovers", "describe", "read_rows")


def _load_results() -> None:
    """harness.results' names into this module (a name already set, e.g. by a test, is kept)."""
    from harness import results

    for name in _RESULTS:
        globals().setdefault(name, getattr(results, name))


def __getattr__(name: str):
    if name in _RESULTS:
        _load_results()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cap_answer_tokens(cfg, records: list) -> None:
    """``max_new_tokens=N`` (conf/config.yaml): cap every record's answer length at N (quick runs); unset, each
    task's official value stands."""
    if cfg.get("max_new_tokens"):
        for rec in records:
            rec.max_new_tokens = min(rec.max_new_tokens, int(cfg.max_new_tokens))


def run_context(cfg, plan: Plan, dtype: str, device: str) -> dict:
    """The parts of the resolved configuration that define results (hashed into run_id, with the cell). The
    model's chat-template variables only when it has some (Qwen3: thinking off), and ``turns`` only when it is not
    1, so the run_ids of runs without them stay as they were."""
    chat = {"chat_template_kwargs": plan.model.chat_template_kwargs} if plan.model.chat_template_kwargs else {}
    turns = {"turns": plan.turns} if plan.turns != 1 else {}
    return {
        **chat,
        **turns,
        **prefill_context(cfg),
        "model": plan.model.name,
        "model_source": plan.model.hub_id or plan.model.path or plan.model.package or plan.model.source,
        "dtype": dtype,
        "attn_impl": cfg.attn_impl,
        "task": plan.task_name,
        "task_params": plan.task_params,
        "seed": int(cfg.seed),
        "max_context": cfg.get("max_context"),
        "max_new_tokens": cfg.get("max_new_tokens"),
    }


def prefill_context(cfg) -> dict:
    """The prefill protocol's settings for ``run_context``, only where they are not the default (so the run ids
    of default runs stay what they were): ``prefill`` (layerwise) and ``prefill_chunk``."""
    out = {}
    if cfg.get("prefill", "default") != "default":
        out["prefill"] = cfg.get("prefill")
    if cfg.get("prefill_chunk") is not None:
        out["prefill_chunk"] = cfg.get("prefill_chunk")
    return out


def run(cfg) -> pd.DataFrame:
    """Run the configuration; return this run's rows (already on disk and those added)."""
    plan = make_plan(cfg)  # every config error surfaces here, before weights load
    plan.task.check_data()  # missing or unreadable data: one DataMissing message, before weights load
    check_output_dir(cfg.get("output_dir"))  # created and writable, before weights load
    from harness.devices import claimed_device

    with claimed_device(cfg.device) as device:  # cuda:free -> the GPU this run holds until it ends
        return _run(cfg, plan, device)


def _run(cfg, plan: Plan, device_arg: str) -> pd.DataFrame:
    from harness.models import load_model, resolve_device, resolve_dtype

    _load_results()

    device = resolve_device(device_arg)
    dtype = str(resolve_dtype(cfg.dtype, device)).replace("torch.", "")
    context = run_context(cfg, plan, dtype, device)
    cells = [c.bind(context) for c in plan.cells]
    out_dir = cfg.output_dir
    done = DoneIndex(out_dir)  # output_dir that is a file: one clear error, before weights load
    for line in clean_leftovers(out_dir):  # what killed runs left there (only theirs, only once they are gone)
        print(f"[kvbench] {line}", file=sys.stderr)
    done.refresh()

    t0 = time.time()
    model, tokenizer = load_model(plan.model, dtype=dtype, device=device_arg, attn_impl=cfg.attn_impl)  # auto: all GPUs
    print(f"[kvbench] model {plan.model.name} loaded in {time.time() - t0:.1f}s on {device} ({dtype})", file=sys.stderr)
    data = plan.task.load(tokenizer, cfg.n_samples, int(cfg.seed))
    for sub, reason in sorted(data.skipped.items()):
        print(f"[kvbench] skipped {plan.task_name}/{sub}: {reason}", file=sys.stderr)
    cap_answer_tokens(cfg, data.records)
    if not data.records:
        raise UsageError(f"task {plan.task_name} produced no records (every sub-task skipped: see the messages above)")

    static = {
        **versions(),
        "git_commit": git_commit(),
        "device": device_name(next(model.parameters()).device),
        "model": plan.model.name,
        "model_source": context["model_source"],
        "dtype": dtype,
        "attn_impl": cfg.attn_impl,
        "task_config": plan.task_name,
    }
    runner = SweepRunner(
        model, tokenizer, cells, static, window=plan.window, max_context=cfg.get("max_context"),
        decode_batch_size=int(cfg.decode_batch_size), score=plan.task.score,
        extra_scores=plan.task.extra_scores, turns=plan.turns, prefill=cfg.get("prefill", "default"),
        prefill_chunk=cfg.get("prefill_chunk"),
    )
    groups = group_by_context(data.records)
    if plan.shard:  # this job's part of the contexts (shard is not part of run_id: shards share run_ids)
        i, n = plan.shard
        groups = type(groups)((k, g) for k, g in groups.items() if shard_of(k, n) == i)
    counted = {k: _todo(cells, g, done.keys) for k, g in groups.items()}
    pending = [g for k, g in groups.items() if counted[k]]
    run_ids = sorted({c.run_id for c in cells})
    job = cfg.get("job") or hashlib.sha1(json.dumps(run_ids).encode()).hexdigest()[:10] + f"-{int(time.time())}"
    if plan.shard and not cfg.get("job"):  # shards share run_ids and may start in the same second
        job += f"-shard{plan.shard[0]}of{plan.shard[1]}"
    writer = ResultWriter(out_dir, job)
    skipped = len(groups) - len(pending)
    part = f" in shard {plan.shard[0]}/{plan.shard[1]}" if plan.shard else ""
    total = sum(counted.values())
    print(
        f"[kvbench] {plan.task_name}: {len(groups)} contexts{part} ({skipped} already done), {len(cells)} configurations "
        f"per context, {total} rows (sample x configuration) to compute, results in {out_dir}",
        file=sys.stderr,
    )
    own = prefill_context(cfg)
    if own and len(cells) > 1:  # docs/protocol.md, "Layer-wise and chunked prefill"
        how = ", ".join(f"{k}={v}" for k, v in own.items())
        print(f"[kvbench] {how}: each of the {len(cells)} configurations prefills every context on its own (the "
              f"one-prefill sharing of the sweep does not apply) and decodes alone", file=sys.stderr)
    # counts rows (sample x configuration), moved after every decode batch: time left = rows left / row rate
    bar = tqdm(total=total, unit="row", disable=not cfg.get("progress", True), desc=f"{plan.task_name}")
    try:
        _compute(pending, counted, cells, runner, done, writer, ContextClaims(out_dir, run_ids), bar)
    finally:
        bar.close()
        writer.close()
    rows = read_rows(out_dir)
    rows = rows[rows["run_id"].isin(run_ids)] if not rows.empty else rows
    if not rows.empty:
        from harness.report import format_summary, summary

        print(f"\nscore (0-100) per method x r (samples per cell in brackets):\n{format_summary(summary(rows))}\n")
    return rows


def _todo(cells, group, done) -> int:
    """Rows of one context not on disk yet."""
    return sum((c.run_id, r.sample_id) not in done for c in cells for r in group)


CLAIM_POLL_S = 2.0  # how often a run waiting for contexts that other runs are computing looks again


def _compute(pending, counted, cells, runner, done: DoneIndex, writer: ResultWriter, claims: ContextClaims,
             bar) -> None:
    """Every pending context under its claim. A context that another live run of the same configurations is
    computing is skipped and revisited at the end, when only what is still missing is computed (nothing when
    that run finished it, all of it when it died). Rows are flushed before a claim is released."""
    n, k, told = len(pending), 0, False
    at = {"context": ""}
    runner.progress = lambda rows, note: (bar.update(rows), bar.set_postfix_str(f"{at['context']}: {note}"))
    waiting = list(pending)
    while waiting:
        busy = []
        for group in waiting:
            cid = group[0].context_id
            claim = claims.take(cid)
            if claim is None:
                busy.append(group)
                if not told:
                    print(f"[kvbench] context {cid} is being computed by another run of these configurations "
                          f"({describe(claims.holder(cid))}): skipped for now; contexts other runs hold are "
                          f"revisited at the end and whatever is still missing then is computed", file=sys.stderr)
                    told = True
                continue
            try:
                done.refresh()  # rows other runs wrote since the run started
                left = _todo(cells, group, done.keys)
                if left < counted[cid]:
                    bar.total -= counted[cid] - left
                    counted[cid] = left
                    bar.refresh()
                k += 1
                at["context"] = f"context {k}/{n}"
                if left:
                    writer.add(runner.run_group(group, done.keys))
                    writer.flush()  # on disk before the claim goes; an interruption loses at most this context
            finally:
                claim.release()
        if busy:
            bar.set_postfix_str(f"waiting for {len(busy)} context(s) another run is computing")
            time.sleep(CLAIM_POLL_S)
        waiting = busy


def normalize_overrides(overrides: list[str]) -> list[str]:
    """``model=<hub id or local dir>`` -> ``model=custom model.path=<it>`` (``model`` is otherwise a config group);
    ``method.<key>=v`` -> ``++method.<key>=v`` (harness.method_configs.force_add: the plan checks the key)."""
    from harness.method_configs import force_add
    from harness.models import model_names

    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "model" and value and value not in [*model_names(), "custom"] and "," not in value:
            out += ["model=custom", f"model.path={value}"]
        else:
            out.append(o)
    return force_add(out)


def compose(overrides: list[str] | None = None):
    """The resolved config for CLI-style overrides, without running (scripts and tests use it). It keeps the
    overrides as ``hydra.overrides.task``, as ``python -m harness`` does, so that ``method.*`` overrides reach every
    member of ``methods=[...]`` (harness.method_configs)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from harness.method_configs import keep_overrides
    from harness.models import CONF_DIR

    overrides = normalize_overrides(list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return keep_overrides(_compose(config_name="config", overrides=overrides), overrides)
