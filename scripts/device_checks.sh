#!/usr/bin/env bash
# The GPU checks the third 2026-12-01 H200 session could not run (its device time ran out), in one
# device call, most important first; each step under its own timeout, logs under $OUT (or ./out).
#
#   bash scripts/device_checks.sh          # on the device machine, from the repository root,
#                                          # with .whl/ carried (pydantic wheels: docs/performance.md)
#
# About 10 minutes (a 600 s call: run the steps in two calls if a lease is slow). The last lines printed are a one-line status per step.
set -u
OUT="${OUT:-out}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
status=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    status+=("$name: rc $rc ($(tail -n 1 "$OUT/$name.log" | cut -c1-150))")
}

# 0. the attention GPU file: its new test (Triton's backward from cuDNN's forward) has not run
step attention_tests 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_attention_gpu.py
# 1. the whole FP8 GEMM GPU file with the persistent kernel shipped (only its M >= 4096 triton cases ran)
step gemm_tests 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gemm_gpu.py
# 2. the whole quant / fused-quant GPU files with the split-division configs (84 of 235 ran)
step quant_tests 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_quant_gpu.py tests/gpu/test_fused_quant_gpu.py
# 3. the benches' own figures for the new quant configs (only the sweep's exist)
step bench_quant 60 python3 benchmarks/bench_quant.py --ops per_token_quant --tokens 4096,16384 --hidden 4096,7168 \
    --csv "$OUT/quant.csv"
step bench_fused_quant 60 python3 benchmarks/bench_fused_quant.py --no-compile \
    --ops rms_norm_dynamic_quant,fused_add_rms_norm_dynamic_quant --tokens 4096,16384 --csv "$OUT/fused_quant.csv"
# 4. fp16 attention (the TMA forward was timed in bf16 only), and the short-call probe on this host
step bench_attention_fp16 90 python3 benchmarks/bench_attention.py --dtype fp16 --csv "$OUT/attention.csv"
step host_layout 60 bash -c "cd benchmarks && python3 attention_host_layout.py"

printf '%s\n' "${status[@]}"
