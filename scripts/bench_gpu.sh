#!/usr/bin/env bash
# GPU figures in one run: NVP-S and the hash-grid baseline on the largest real sample clip (1280x720),
# 60 s of training each, decoding speed at 1080p, and NVP through torch.compile. Needs only the core
# (torch, numpy, av, tyro, rich, matplotlib): run it where nerfstudio is not installed too.
#   bash scripts/bench_gpu.sh [OUTPUT_DIR]      (CLIP=path/to/video to use another clip)
set -u
out=${1:-bench-results/gpu}
clip=${CLIP:-sample:bigbuckbunny}
seconds=${SECONDS_PER_RUN:-60}
mkdir -p "$out"
status=0
bench() {  # NAME TIME_LIMIT ARGS...: one benchmark, its log beside its report; a failure does not stop the others
    local name=$1 limit=$2
    shift 2
    PYTHONUNBUFFERED=1 timeout "$limit" python -m nvp_nerfstudio.bench --data "$clip" --seconds "$seconds" \
        --eval-every 10 --output-dir "$out/$name" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
bench nvp 150 --method nvp --decode-size 1920 1080
bench ngp-video 120 --method ngp-video --decode-size 1920 1080
# Compiling costs a minute per new graph, so only the training batch size is swept.
bench nvp-compiled 180 --method nvp --compile --batch-sizes 1048576 --decode-size 1920 1080
exit $status
