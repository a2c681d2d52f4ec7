#!/usr/bin/env bash
# GPU figures in one run: NVP-S, nvp-fast (32-wide MLP, finer 3D grid) and the hash-grid baseline
# on the largest real sample clip (1280x720), 60 s of training each, decoding speed at 1080p; NVP with
# its MLP compiled, in float32 (TF32), and the pure-torch grid path's throughput for comparison with the
# fused Triton kernels. Needs only the core (torch, triton, numpy, av, tyro, rich, matplotlib): it runs
# where nerfstudio is not installed too.
#   bash scripts/bench_gpu.sh [OUTPUT_DIR]      (CLIP=path/to/video to use another clip)
# The benchmarks run most wanted first, each cut at its own limit or at what is left of BUDGET seconds
# (default 570, under a 10-minute session), whichever comes first.
set -u
out=${1:-bench-results/gpu}
clip=${CLIP:-sample:bigbuckbunny}
mkdir -p "$out"
budget=${BUDGET:-570}
status=0
bench() {  # NAME TIME_LIMIT ARGS...: one benchmark, its log beside its report; a failure does not stop the others
    local name=$1 limit=$2
    shift 2
    local left=$((budget - SECONDS))
    if ((left < 30)); then
        echo "skipped $name: the budget of ${budget} s is spent" | tee "$out/$name.log"
        status=1
        return
    fi
    PYTHONUNBUFFERED=1 timeout "$((limit < left ? limit : left))" python -m nvp_nerfstudio.bench --data "$clip" --seconds 60 \
        --eval-every 10 --output-dir "$out/$name" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
bench nvp-and-ngp 330 --methods nvp nvp-fast ngp-video --decode-size 1920 1080
bench nvp-torch-grid 60 --methods nvp --grid-backends torch --seconds 0 --batch-sizes 1048576 --decode-frames 5
bench nvp-float32-tf32 110 --methods nvp --mlp-precision float32 --tf32 --batch-sizes 1048576
bench nvp-compiled 200 --methods nvp --compile --batch-sizes 1048576 --decode-size 1920 1080
exit $status
