#!/usr/bin/env bash
# Everything this project measures on a CUDA GPU, in one call (a lent GPU is held by the minute):
#
#   bash benchmarks/device_session.sh            # results under $OUT, else benchmarks/results/device/
#
# About 9.5 minutes at most on an H200: the attention benchmark ~4.5 (2.5 of them compiling and
# tuning the kernels), the GPU tests ~2.5, the training step ~1.5 (on 2026-12-04 the first ran out
# of a 200 s limit before its 8192 rows, the last of 90 s before its JSON).
#
# 1. the GPU and the software versions; 2. benchmarks/attention.py (the kernels vs the padded
# reference vs SDPA flash, with per-kernel times); 3. the GPU tests (tests/gpu: kernels vs the
# reference in fp32 and bf16, every tuning candidate, training on the GPU vs the CPU);
# 4. benchmarks/train_step.py on the GPU. Each step has its own time limit and the next runs
# whatever the last one did, so a slow or failing step costs only its own share.
#
# BASELINE=DIR adds the Triton rows of another checkout (e.g. `git worktree add .baseline <commit>`
# here, excluded from git and carried to the device), measured in the same run; it costs the
# compile and tuning time once more (about 2.5 minutes: raise ATTENTION_LIMIT).
#
# It runs under the machine's own python3 (its torch and triton, not this project's pins). A
# `.whl/` folder of wheels beside the checkout (DeepSpeed and its pure-Python needs) is installed
# first when present, and `.devdata/u.data` (MovieLens-100K) is used by the training benchmark.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# Compiled kernels wherever a GPU answers (tests/conftest.py would pick the interpreter on a
# machine without /dev/nvidiactl).
if nvidia-smi -L >/dev/null 2>&1; then export TRITON_INTERPRET=0; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD
fi
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, say how it ended
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
}
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv
    python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
} >"$OUT/summary.txt" 2>&1

step attention "${ATTENTION_LIMIT:-300}" python3 benchmarks/attention.py --out "$OUT/attention.json" \
    ${BASELINE:+--baseline "$BASELINE"}
step gpu-tests "${TESTS_LIMIT:-160}" python3 -m pytest -p no:cacheprovider -n 8 -q tests/gpu/test_hstu_attention_gpu.py \
    tests/gpu/test_training_gpu.py
data=.devdata/u.data
[ -f "$data" ] || data=../shared/data/ml-100k/u.data
step train-step "${TRAIN_LIMIT:-110}" python3 benchmarks/train_step.py --sizes ml100k --repeats 1 --epochs 2 --data "$data" \
    --out "$OUT/train_step.json"

cat "$OUT/summary.txt"
tail -n 60 "$OUT/attention.log"
grep -E "passed|failed|error" "$OUT/gpu-tests.log" | tail -n 15
tail -n 8 "$OUT/train-step.log"
