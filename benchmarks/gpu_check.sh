#!/usr/bin/env bash
# The prepared GPU check (issue: GPU training that is measured). One command for a lent GPU machine:
#   1. the CUDA tests (every model's CUDA step equals the CPU step, ranks, --mix_cpu_gpu, two workers on one GPU)
#      and the CPU tests of the same code paths, under that machine's torch;
#   2. benchmarks/bench_gpu.py: FB15k-237 TransE_l2 and ComplEx presets on the GPU (fp32 and --amp) with wall time,
#      positives/s and test MRR; full filtered evaluation time; positives/s against batch size; worker processes
#      on one GPU; a 10M-entity synthetic graph GPU-resident vs --mix_cpu_gpu (sync and async update).
# Everything lands in OUTDIR (gpu_check.txt: the table; gpu_check.jsonl: one JSON record per measurement).
# Needs no network and no DGL: runs from the checkout (PYTHONPATH), with the machine's torch.
# On a machine without CUDA it says so, runs the tests (the CUDA ones skip) and a tiny CPU dry run of step 2.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]          # OUTDIR default: $OUT, else benchmarks/out/gpu_check
#   KGE_DATA=/path/with/fb15k-237 bash benchmarks/gpu_check.sh   # default ../shared/data
#   GPU_CHECK_ARGS="--sections presets,eval" ...   # extra arguments for bench_gpu.py
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-benchmarks/out/gpu_check}}"
DATA="${KGE_DATA:-../shared/data}"
PY="${PYTHON:-python3}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TESTS="tests/test_cuda.py tests/test_devices.py"
status=0
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device here: the CUDA tests skip and the GPU timings are not taken;"
    echo "gpu_check: running the tests and a tiny CPU dry run of the benchmark pipeline instead."
    OMP_NUM_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py | tail -n 3 || status=1
    OMP_NUM_THREADS=1 "$PY" benchmarks/bench_gpu.py --out "$OUTDIR" --quick --device cpu --threads 1 \
        --sections presets,eval,throughput,big ${GPU_CHECK_ARGS:-} >/dev/null || status=1
    echo "gpu_check: CPU dry run written to $OUTDIR (exit $status)"
    exit $status
fi
nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -x $TESTS 2>&1 | tee "$OUTDIR/pytest.txt" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check: tests took $(( $(date +%s) - start )) s"
start=$(date +%s)
"$PY" benchmarks/bench_gpu.py --out "$OUTDIR" --data "$DATA" ${GPU_CHECK_ARGS:-} 2>&1 \
    | grep -v -e "Warning" -e "warnings.warn" > "$OUTDIR/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check: benchmarks took $(( $(date +%s) - start )) s"
tail -n 20 "$OUTDIR/bench.log"
echo "=== gpu_check.txt"
cat "$OUTDIR/gpu_check.txt"
exit $status
