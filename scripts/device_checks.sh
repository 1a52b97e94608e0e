#!/usr/bin/env bash
# The GPU checks the 2026-12-01 H200 session could not run (its device time ran out), in one
# device call, most important first; each step under its own timeout, logs under $OUT (or ./out).
#
#   bash scripts/device_checks.sh          # on the device machine, from the repository root,
#                                          # with .whl/ carried (pydantic wheels: docs/performance.md)
#
# About 6 minutes. The last lines printed are a one-line status per step.
set -u
OUT="${OUT:-out}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:.${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
fi
status=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    status+=("$name: rc $rc ($(tail -n 1 "$OUT/$name.log" | cut -c1-150))")
}

# 1. decode-only paged attention in fp16 / fp32 (the float32 decode rule has never run on a GPU)
step decode_tests 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_paged_attention_gpu.py -k decode_only
# 2. the chunked FP8 per-token / RMSNorm + quant paths at 7168 and with partial chunks
step quant_tests 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_quant_gpu.py \
    tests/gpu/test_fused_quant_gpu.py -k "7168 or 4992 or 5000 or 5120"
# 3. auto's attention fast path at 4096 keys
step fast_path_test 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_attention_gpu.py -k fast_path
# 4. the fused quant benchmark with the chunked config (no torch.compile candidate: it timed out)
step bench_fused_quant 90 python3 benchmarks/bench_fused_quant.py --no-compile \
    --ops rms_norm_dynamic_quant,fused_add_rms_norm_dynamic_quant --tokens 4096,16384 --csv "$OUT/fused_quant.csv"
# 5. the small attention shape after the policy / d64-config edits (auto is Triton there now)
step bench_attention_small 60 python3 benchmarks/bench_attention.py --shapes "16,16,1024,64" --csv "$OUT/attention.csv"

printf '%s\n' "${status[@]}"
