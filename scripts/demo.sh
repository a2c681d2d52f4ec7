#!/usr/bin/env bash
# Installs nvp-nerfstudio into .venv, trains NVP on the bundled real clip (bikes, 250 frames, at half
# resolution for a quick CPU run), evaluates every frame and prints the PSNR and where everything went.
# NVP_METHOD picks the method (default nvp-fast, NVP sized for CPUs; nvp: the paper's NVP-S), NVP_STEPS
# the training steps, NVP_OUTPUT the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
export PYTHONWARNINGS=ignore  # nerfstudio 1.1.5 on a recent torch prints pages of deprecation warnings
output="${NVP_OUTPUT:-outputs}"
steps="${NVP_STEPS:-2400}"
method="${NVP_METHOD:-nvp-fast}"
"$VENV/bin/ns-train" "$method" --data sample:bikes --vis tensorboard --output-dir "$output" \
    --max-num-iterations "$steps" --pipeline.datamanager.dataparser.downscale 2
run_dir=$(ls -td "$output/bikes/$method"/*/ | head -n 1)
"$VENV/bin/ns-eval" --load-config "$run_dir/config.yml" --output-path "$run_dir/eval.json" \
    --render-output-path "$run_dir/eval_images"
"$VENV/bin/python" - "$run_dir" "$method" <<'PY'
import json, sys
from pathlib import Path
run, method = Path(sys.argv[1]), sys.argv[2]
results = json.loads((run / "eval.json").read_text())["results"]
print(f"\n{method} on bikes (320x136, 250 frames): PSNR {results['psnr']:.2f} dB (mean of per-frame PSNR), SSIM {results['ssim']:.3f}")
print(f"config and checkpoint: {run}")
print(f"metrics: {run / 'eval.json'}; rendered frames beside ground truth: {run / 'eval_images'}")
print(f"watch it in the viewer: {Path(sys.executable).parent / 'ns-viewer'} --load-config {run / 'config.yml'}")
print("full quality (full resolution, 20000 steps; hours on a CPU, minutes on a GPU): ns-train nvp --data sample:bikes")
PY
