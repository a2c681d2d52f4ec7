#!/usr/bin/env bash
# GPU figures in one run of under 9 minutes, most wanted first, PSNR always over every frame:
#   1. the Triton kernels' tests, compiled on this GPU (fused modulated SIREN, grids);
#   2. kernel timings: the modulated SIREN on the torch path and fused (several launch shapes), the grids;
#   3. NVP-S (its MLP on the torch path, then fused) against the hash-grid baseline, 60 s of training each
#      on the largest real sample clip (1280x720), decoding speed at 1080p;
#   4. the same quality per step: NVP-S with the torch MLP and with the fused kernels, 300 steps each;
#   5. nvp-fast, 60 s (the MLP fused).
# Only when named (PARTS=suite, a device call of its own): nvp-suite on benchmarks/suite_gpu.toml, nvp-fast against
# ngp-video for 20 s each on six real clips at their own sizes (CLIPS_DIR: the folder get_suite_clips.sh filled);
# PARTS=rd: rate-distortion of nvp-c on the clip, three lambdas trained 120 s each, every file decoded from its
# bytes and every frame scored, against x265-medium on the same frames, encoded on the CPUs meanwhile.
# Needs only the core (torch, triton, numpy, av, tyro, rich, matplotlib, constriction; scenedetect and
# opencv-python-headless for nvp-fast's per-shot keyframes), not nerfstudio.
#   bash scripts/bench_gpu.sh [OUTPUT_DIR]      (CLIP=path/to/video to use another clip)
# Each part is cut at its own limit or at what is left of BUDGET seconds (default 540), whichever comes first;
# PARTS="tests kernels" runs only the parts named.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench-results/gpu}
clip=${CLIP:-sample:bigbuckbunny}
mkdir -p "$out"
budget=${BUDGET:-540}
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the core runs from the checkout, uninstalled
status=0
part() {  # NAME TIME_LIMIT COMMAND...: one part, its log in OUTPUT_DIR/NAME.log; a failure does not stop the others
    local name=$1 limit=$2
    shift 2
    [[ -z ${PARTS:-} || " $PARTS " == *" $name "* ]] || return 0
    local left=$((budget - SECONDS))
    if ((left < 20)); then
        echo "skipped $name: the budget of ${budget} s is spent" | tee "$out/$name.log"
        status=1
        return
    fi
    echo "== $name (at most $((limit < left ? limit : left)) s)"
    PYTHONUNBUFFERED=1 timeout "$((limit < left ? limit : left))" "$@" 2>&1 | tee "$out/$name.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
bench() {  # NAME TIME_LIMIT ARGS...: one nvp-bench run on the clip
    local name=$1 limit=$2
    shift 2
    part "$name" "$limit" "$python" -m nvp_nerfstudio.scripts.bench --data "$clip" --eval-frames 0 --output-dir "$out/$name" "$@"
}
part tests 100 "$python" -m pytest -q -p no:cacheprovider tests/test_triton_modulated_siren.py tests/test_grid.py -k "triton or fused"
part kernels 120 "$python" scripts/bench_kernels.py "$out/kernels"
bench nvp-and-ngp 270 --methods nvp ngp-video --mlp-backends torch triton --seconds 60 --eval-every 20 --batch-sizes 1048576 --decode-size 1920 1080
bench same-steps 80 --methods nvp --mlp-backends torch triton --steps 300 --eval-every 1e9 --batch-sizes 1048576 --decode-frames 5
bench nvp-fast 100 --methods nvp-fast --mlp-backends triton --seconds 60 --eval-every 20 --batch-sizes 1048576 --decode-size 1920 1080
if [[ " ${PARTS:-} " == *" suite "* ]]; then
    part suite 480 "$python" -m nvp_nerfstudio.scripts.suite --suite benchmarks/suite_gpu.toml --clips-dir "${CLIPS_DIR:-clips}" \
        --methods nvp-fast ngp-video --seconds 20 --eval-every 10 --output-dir "$out/suite"
fi
if [[ " ${PARTS:-} " == *" rd "* ]]; then
    part rd 500 "$python" scripts/rd_lambdas.py --data "$clip" --seconds 120 --lambdas 0.001 0.003 0.01 --mlp-bits 8 \
        --crfs 22 26 30 34 38 42 --output-dir "$out/rd"
fi
exit $status
