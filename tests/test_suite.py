"""nvp-suite on two real clips: every method on every clip, each clip's table row, the comparison with the baseline."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nvp_nerfstudio.data.video import VideoSource, load_video
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, TimedRun, psnr_against_time, train_runs
from nvp_nerfstudio.scripts.suite import SuiteConfig, main, read_suite

SUITE = """
[[clips]]
name = "carphone"
data = "sample:carphone"
downscale = 4
max_frames = 3

[[clips]]
name = "bikes"
data = "sample:bikes"
downscale = 8
max_frames = 4
"""


def test_runs_trained_together_take_turns_by_the_share_of_their_budget_behind_them() -> None:
    """The suite interleaves a clip's methods so that a drift in the machine's speed slows each alike: the next step
    is always the run's with the least of its budget done."""
    video = load_video("sample:bikes", VideoSource("sample:bikes", 8, 3).selection)
    shape = VideoShape(video.num_frames, video.height, video.width)
    settings = dict(train_batch=256, eval_every=float("inf"), device="cpu")
    runs = [TimedRun(FitConfig(method="ngp-video", steps=2, **settings), video, shape),
            TimedRun(FitConfig(method="kplanes-video", steps=6, **settings), video, shape)]
    order = []
    for index, run in enumerate(runs):
        step = run.step
        run.step = lambda step=step, index=index: (order.append(index), step())
    train_runs(runs)
    # Fractions done before each step, ties to the first: 0/2 0/6 | 1/2 0/6 | 1/2 1/6 | 1/2 2/6 | 1/2 3/6 | 2/2 ...
    assert order == [0, 1, 1, 1, 0, 1, 1, 1]
    assert [run.points[-1]["steps"] for run in runs] == [2, 6] and all(len(run.points) == 1 for run in runs)


def suite_config(tmp_path: Path, text: str = SUITE, **overrides) -> SuiteConfig:
    (tmp_path / "suite.toml").write_text(text)
    settings = dict(suite=tmp_path / "suite.toml", clips_dir=tmp_path, methods=("nvp", "ngp-video"), steps=6, train_batch=512,
                    eval_every=float("inf"), device="cpu", output_dir=tmp_path / "out")
    return SuiteConfig(**{**settings, **overrides})


def test_every_method_trains_on_every_clip_and_is_compared_with_the_baseline(tmp_path: Path) -> None:
    assert list(main(suite_config(tmp_path, only=("bikes",), output_dir=tmp_path / "half"))) == ["bikes"]
    results = main(suite_config(tmp_path))
    assert list(results) == ["carphone", "bikes"] and all(list(runs) == ["nvp", "ngp-video"] for runs in results.values())
    # The suite's figure is the training loop's own: trained in turns with the other method, each run scores what
    # the same run alone scores over every frame.
    video = load_video("sample:bikes", VideoSource("sample:bikes", 8, 4).selection)
    for method in ("nvp", "ngp-video"):
        alone, _ = psnr_against_time(FitConfig(method=method, steps=6, train_batch=512, eval_every=float("inf"), device="cpu"), video,
                                     VideoShape(video.num_frames, video.height, video.width))
        assert results["bikes"][method]["psnr"] == pytest.approx(alone[-1]["psnr"], abs=1e-9)
        assert alone[-1]["frames"] == 4
    text = (tmp_path / "out" / "suite.md").read_text()
    assert f"| bikes ({video.width}x{video.height}, 4 frames) |" in text
    diffs = [runs["nvp"]["psnr"] - runs["ngp-video"]["psnr"] for runs in results.values()]
    assert f"| nvp | {statistics.median(diffs):+.2f} dB | {min(diffs):+.2f} dB | {max(diffs):+.2f} dB |" in text
    saved = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert saved["results"]["carphone"]["nvp"]["steps"] == 6
    assert {p.name for p in (tmp_path / "out").glob("psnr_vs_time_*.png")} == {"psnr_vs_time_carphone.png", "psnr_vs_time_bikes.png"}
    # Every frame's own PSNR is kept (and plotted per clip): the run's figure is their mean.
    per_frame = dict(saved["results"]["bikes"]["nvp"]["curve"][-1]["frame_psnr"])
    assert sorted(per_frame) == [0, 1, 2, 3]
    assert statistics.mean(per_frame.values()) == pytest.approx(results["bikes"]["nvp"]["psnr"], abs=1e-9)
    assert len(set(per_frame.values())) > 1
    assert {p.name for p in (tmp_path / "out").glob("psnr_per_frame_*.png")} == {"psnr_per_frame_carphone.png", "psnr_per_frame_bikes.png"}


@pytest.mark.parametrize(
    "text,flags,message",
    [
        ('[[clips]]\nname = "gone"\ndata = "gone.mp4"\n', [], "gone.mp4 does not exist: fetch the suite's clips with scripts/get_suite_clips.sh"),
        ("[[clips]\n", [], "is not a suite"),
        ('[[clips]]\nname = "x"\n', [], "each [[clips]] entry has name, data"),
        (SUITE, ["--baseline", "kplanes-video"], "--baseline kplanes-video is not among --methods"),
        (SUITE, ["--methods", "nvp", "no-such"], "unknown method(s) no-such"),
        (SUITE, ["--only", "bikes", "city"], "--only city: not in"),
    ],
)
def test_a_bad_suite_or_flag_is_one_error_line_before_any_training(tmp_path: Path, text: str, flags: list[str], message: str) -> None:
    (tmp_path / "suite.toml").write_text(text)
    command = [sys.executable, "-m", "nvp_nerfstudio.scripts.suite", "--suite", str(tmp_path / "suite.toml"), "--clips-dir", str(tmp_path),
               "--output-dir", str(tmp_path / "out"), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:") and message in lines[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suite", ["suite_cpu.toml", "suite_gpu.toml"])
def test_the_shipped_suites_name_clips_that_exist_or_that_the_fetch_script_makes(tmp_path: Path, suite: str) -> None:
    import re

    from nvp_nerfstudio.data.video import SAMPLE_CLIPS

    root = Path(__file__).parent.parent
    fetched = set(re.findall(r'"\$out/([^"/]+)"', (root / "scripts" / "get_suite_clips.sh").read_text()))
    for name in fetched:  # stand-ins where the script puts each clip: read_suite checks the suite's paths
        (tmp_path / name).touch()
    clips = read_suite(root / "benchmarks" / suite, tmp_path)
    samples = {clip.source.data.removeprefix("sample:") for clip in clips if clip.source.data.startswith("sample:")}
    assert samples <= set(SAMPLE_CLIPS) and len(clips) >= 6
    assert len({clip.name for clip in clips}) == len(clips)
