#!/usr/bin/env bash
# The GPU checks behind docs/performance.md's issue-4 and issue-5 figures, most important first;
# each step under its own timeout, logs under $OUT (or ./out).
#
#   bash scripts/device_checks.sh [tests|benches|all]   # on the device machine, from the repository root,
#                                                       # with .whl/ carried (pydantic wheels: docs/performance.md)
#
# About 12 minutes on an H200 for all: more than one 600 s device call, so run "tests" and
# "benches" in two calls. The last lines printed are a one-line status per step.
set -u
WHAT="${1:-all}"
case "$WHAT" in tests|benches|all) ;; *) echo "usage: $0 [tests|benches|all]" >&2; exit 2 ;; esac
OUT="${OUT:-out}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
status=()

step() {  # step NAME SECONDS COMMAND... (tests: the *_tests steps; benches: the others)
    local name=$1 secs=$2
    case "$WHAT:$name" in tests:*_tests|benches:*|all:*) ;; *) return ;; esac
    case "$WHAT:$name" in benches:*_tests) return ;; esac
    shift 2
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    status+=("$name: rc $rc ($(tail -n 1 "$OUT/$name.log" | cut -c1-150))")
}

# 0. the GPU test files of the quant, GEMM and attention families (what CI cannot run)
step quant_tests 230 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_quant_gpu.py tests/gpu/test_fused_quant_gpu.py
step gemm_tests 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gemm_gpu.py
step attention_tests 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_attention_gpu.py
# 1. the issue-4 quant targets (>= 85% of copy from 4096 tokens): the benches' own figures
step bench_quant 80 python3 benchmarks/bench_quant.py --ops per_tensor_quant,per_token_quant,per_token_group_quant \
    --tokens 4096,16384 --hidden 4096,7168 --csv "$OUT/quant.csv"
step bench_fused_quant 70 python3 benchmarks/bench_fused_quant.py --no-compile \
    --ops rms_norm_dynamic_quant,fused_add_rms_norm_dynamic_quant,silu_and_mul_group_quant --tokens 4096,16384 \
    --csv "$OUT/fused_quant.csv"
# 2. the issue-5 attention targets, and where a short backward's host time goes on this host
step bench_attention 150 python3 benchmarks/bench_attention.py --varlen --csv "$OUT/attention.csv"
step backward_host 90 bash -c "cd benchmarks && python3 attention_backward_host.py"

printf '%s\n' "${status[@]}"
