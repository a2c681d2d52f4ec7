"""Videos longer than memory: one decoding pass in segments, a field per segment, rendered and scored as one video."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import pytest
import torch
from conftest import moving_gradient, write_clip
from PIL import Image

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.data import video as video_module
from nvp_nerfstudio.data.video import FrameSelection, VideoSource, iter_segments, load_video, resolve_source
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.scripts.decompress import DecompressConfig
from nvp_nerfstudio.scripts.decompress import main as decompress_main
from nvp_nerfstudio.scripts.long import (
    CompressConfig,
    EvaluateConfig,
    FitSegmentsConfig,
    MemoryBenchConfig,
    RenderConfig,
    compress,
    evaluate,
    fit,
    memory_bench,
    render,
)
from nvp_nerfstudio.segments import MANIFEST


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "long.mkv", moving_gradient(14, 24, 32), codec="ffv1", pix_fmt="bgr0")


@pytest.mark.parametrize("frames,expected", [(10, [(0, 3), (3, 6), (6, 9)]), (7, [(0, 3), (3, 6)]), (2, [(0, 1)])])
def test_segments_share_boundary_frames_and_match_the_whole_decode(tmp_path: Path, frames: int, expected: list) -> None:
    clip = write_clip(tmp_path / f"clip{frames}.mkv", moving_gradient(frames, 8, 10), codec="ffv1", pix_fmt="bgr0")
    whole = load_video(clip)
    segments = list(iter_segments(clip, 4))
    assert [(s.source_indices[0], s.source_indices[-1]) for s in segments] == expected
    for segment in segments:
        assert torch.equal(segment.video.frames, whole.frames[segment.source_indices[0] : segment.source_indices[-1] + 1])


class CountingContainer:
    """A PyAV input container that counts the frames decoded from it."""

    decoded = 0

    def __init__(self, container) -> None:
        self._container = container

    def __getattr__(self, name: str):
        return getattr(self._container, name)

    def __enter__(self) -> "CountingContainer":
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            CountingContainer.decoded += 1
            yield frame


def count_decoded_frames(monkeypatch: pytest.MonkeyPatch) -> type[CountingContainer]:
    real_open = av.open
    monkeypatch.setattr(video_module.av, "open", lambda *args, **kwargs: CountingContainer(real_open(*args, **kwargs)))
    CountingContainer.decoded = 0
    return CountingContainer


def gop_clip(tmp_path: Path, suffix: str, codec: str, **options: str) -> Path:
    """Real carphone frames re-encoded with a keyframe every 8 frames."""
    carphone = load_video("sample:carphone", FrameSelection(max_frames=60)).frames.numpy()
    return write_clip(tmp_path / f"carphone{suffix}", carphone, codec=codec, **options)


@pytest.mark.parametrize("source", ["sample:bikes", "x264 mkv", "mpeg4 avi", "frames"])
def test_each_rank_gets_its_segments_as_the_whole_decode_has_them(tmp_path: Path, source: str) -> None:
    if source == "x264 mkv":
        source = str(gop_clip(tmp_path, ".mkv", "libx264", g="8", bf="2"))
    elif source == "mpeg4 avi":
        source = str(gop_clip(tmp_path, ".avi", "mpeg4", g="8"))
    elif source == "frames":
        (tmp_path / "frames").mkdir()
        for index, frame in enumerate(load_video("sample:carphone", FrameSelection(max_frames=40)).frames.numpy()):
            Image.fromarray(frame).save(tmp_path / "frames" / f"frame_{index}.png")
        source = str(tmp_path / "frames")
    for selection in (FrameSelection(downscale=2), FrameSelection(start=3, stride=2, max_frames=25)):
        whole = list(iter_segments(source, 10, selection))
        assert sum(len(s.source_indices) - 1 for s in whole) + 1 == load_video(source, selection).num_frames
        for world in (2, 3):
            for rank in range(world):
                parts = list(iter_segments(source, 10, selection, wanted=lambda n: n % world == rank))
                assert [p.source_indices for p in parts] == [w.source_indices for w in whole]
                for number, (part, full) in enumerate(zip(parts, whole)):
                    if number % world == rank:
                        assert torch.equal(part.video.frames, full.video.frames), (source, selection, world, rank, number)
                    else:
                        assert part.video is None


def test_a_rank_decodes_from_the_keyframe_before_each_of_its_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    with av.open(str(resolve_source("sample:bikes"))) as container:  # scene cuts: keyframes at frames 0, 30, 76, 137, 187, 242
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    assert [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts)) if p.is_keyframe] == [0, 30, 76, 137, 187, 242]
    counter = count_decoded_frames(monkeypatch)
    parts = list(iter_segments("sample:bikes", 64, FrameSelection(downscale=4), wanted=lambda n: n % 2 == 1))
    assert [(p.source_indices[0], p.source_indices[-1], p.video is not None) for p in parts] == [
        (0, 63, False), (63, 126, True), (126, 189, False), (189, 249, True)
    ]
    # Segment 1 from the keyframe at 30 to its frame 126; segment 3 from 187 (a seek) to the end; and frame 0 twice,
    # for its display rotation, on opening the file and on opening it to decode.
    assert counter.decoded == (126 - 30 + 1) + (249 - 187 + 1) + 2


def test_a_decode_that_disagrees_with_the_packets_falls_back_to_decoding_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = list(iter_segments("sample:carphone", 16))
    honest = video_module._frame_index(resolve_source("sample:carphone"))
    shifted = video_module.FrameIndex([t + 1 for t in honest.pts], honest.keyframes)  # every frame one tick late
    monkeypatch.setattr(video_module, "_frame_index", lambda path: shifted)
    with pytest.warns(UserWarning, match="from segment 2 on are decoded in order"):
        parts = list(iter_segments("sample:carphone", 16, wanted=lambda n: n in (2, 3, 6)))
    assert [p.source_indices for p in parts] == [w.source_indices for w in whole]
    for number, (part, full) in enumerate(zip(parts, whole)):
        assert (part.video is not None) == (number in (2, 3, 6))
        assert part.video is None or torch.equal(part.video.frames, full.video.frames)


def test_fit_render_evaluate_treat_segments_as_one_video(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    fit(FitSegmentsConfig(source=VideoSource(str(clip)), output_dir=out, method="ngp-video", segment_frames=6, steps_per_segment=40, train_batch=2048, device="cpu"))
    manifest = json.loads((out / "segments.json").read_text())
    assert [(s["first"], s["last"]) for s in manifest["segments"]] == [(0, 5), (5, 10), (10, 13)]
    frames_dir = tmp_path / "frames"
    render(RenderConfig(segments=out, output=frames_dir))
    rendered = load_video(frames_dir)
    truth = load_video(clip)
    assert rendered.num_frames == 14
    scores = evaluate(EvaluateConfig(segments=out))
    expected = sum(psnr(rendered.frames[i].float() / 255, truth.frames[i].float() / 255) for i in range(14)) / 14
    assert scores["frames"] == 14 and scores["psnr"] == pytest.approx(expected, abs=0.3)  # PNG frames are 8-bit
    assert scores["psnr"] > 20 and scores["psnr_near_boundaries"] is not None


def test_peak_memory_stays_flat_as_the_clip_grows() -> None:
    # 300 more frames of 320x180 are 49 MiB more as uint8 (198 MiB as float): a fit that held the video, or more
    # than a segment of it, would grow by that much. Measured: 1150.0 and 1150.1 MiB.
    rows = memory_bench(MemoryBenchConfig(lengths=(100, 400), segment_frames=50, size=(320, 180), steps_per_segment=1))
    assert [r["frames"] for r in rows] == [100, 400]
    growth = rows[1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
    assert growth < (rows[1]["clip_mib"] - rows[0]["clip_mib"]) / 2, rows


def test_segments_compress_to_one_file_that_plays_and_scores_as_one_video(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    fit(FitSegmentsConfig(source=VideoSource(str(clip)), output_dir=out, method="ngp-video", segment_frames=6, steps_per_segment=40, train_batch=2048, device="cpu"))
    packed = tmp_path / "long.nvp"
    compress(CompressConfig(segments=out, output=packed))
    stored = container.read(packed)
    assert stored.meta["segments"] == [[0, 5], [5, 10], [10, 13]] and len(stored.sections) == 3
    # Every section is a complete one-field file of its segment's frames.
    inner = container.from_bytes(stored.sections[1].payload, "segment 1")
    assert inner.meta["video"]["frames"] == 6 and inner.meta["selection"]["start"] == 5

    uncompressed, compressed = evaluate(EvaluateConfig(segments=out)), evaluate(EvaluateConfig(segments=packed, reference=str(clip)))
    assert compressed["frames"] == 14 and compressed["psnr"] == pytest.approx(uncompressed["psnr"], abs=0.5)
    assert compressed["psnr_near_boundaries"] is not None

    frames_dir = tmp_path / "decoded"
    decompress_main(DecompressConfig(packed, frames_dir, reference=str(clip)))
    decoded, truth = load_video(frames_dir), load_video(clip)
    assert decoded.num_frames == 14
    mean = sum(psnr(decoded.frames[i].float() / 255, truth.frames[i].float() / 255) for i in range(14)) / 14
    assert mean == pytest.approx(compressed["psnr"], abs=0.3)  # PNG frames are 8-bit

    with pytest.raises(SystemExit, match="needs|reference"):
        evaluate(EvaluateConfig(segments=packed))  # a .nvp file does not name its source
    damaged = bytearray(packed.read_bytes())
    damaged[-10] ^= 0xFF
    (tmp_path / "damaged.nvp").write_bytes(bytes(damaged))
    with pytest.raises(SystemExit, match="segment 2"):
        render(RenderConfig(segments=tmp_path / "damaged.nvp", output=tmp_path / "damaged.mp4"))
    # A damaged segment inside an intact outer file fails when its turn comes, with one line too.
    inner = bytearray(stored.sections[1].payload)
    inner[-5] ^= 0xFF
    sections = [*stored.sections[:1], replace(stored.sections[1], payload=bytes(inner)), *stored.sections[2:]]
    (tmp_path / "inner.nvp").write_bytes(container.to_bytes(replace(stored, sections=sections)))
    with pytest.raises(SystemExit, match="segment 1 is corrupt"):
        render(RenderConfig(segments=tmp_path / "inner.nvp", output=tmp_path / "inner.mp4"))
    assert not (tmp_path / "inner.mp4").exists()


def test_a_failed_decode_leaves_an_existing_video_untouched(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    fit(FitSegmentsConfig(source=VideoSource(str(clip)), output_dir=out, method="ngp-video", segment_frames=8, steps_per_segment=5, train_batch=1024, device="cpu"))
    packed = tmp_path / "long.nvp"
    compress(CompressConfig(segments=out, output=packed))
    target = tmp_path / "out.mp4"
    render(RenderConfig(segments=packed, output=target))
    before = target.read_bytes()
    short = write_clip(tmp_path / "short.mkv", moving_gradient(5, 24, 32), codec="ffv1", pix_fmt="bgr0")
    with pytest.raises(SystemExit, match="fewer frames"):
        decompress_main(DecompressConfig(packed, target, reference=str(short)))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial file left


def torchrun_fit(output_dir: Path):
    """`nvp-long fit` under torchrun: two CPU processes (gloo), three segments of 10 carphone frames."""
    import os
    import subprocess
    import sys

    command = [
        str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "-m", "nvp_nerfstudio.scripts.long", "fit",
        "--data", "sample:carphone", "--max-frames", "10", "--segment-frames", "4", "--steps-per-segment", "3",
        "--method", "ngp-video", "--device", "cpu", "--output-dir", str(output_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=output_dir.parent)


def test_torchrun_spreads_the_segments_over_its_ranks_and_a_failing_rank_ends_the_job_with_its_error(tmp_path: Path) -> None:
    result = torchrun_fit(tmp_path / "fit")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "fit" / MANIFEST).read_text())
    assert [(s["first"], s["last"]) for s in manifest["segments"]] == [(0, 3), (3, 6), (6, 9)]
    for segment in manifest["segments"]:  # rank 0 trained segments 0 and 2, rank 1 segment 1: all are there, whole
        assert torch.load(tmp_path / "fit" / segment["file"], map_location="cpu")["shape"][0] == 4
    # Rank 1 cannot write its segment (a folder is in the way): its one error line ends the job, nothing half-written.
    failing = tmp_path / "failing"
    (failing / "segment_0001.pt").mkdir(parents=True)
    result = torchrun_fit(failing)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "[rank1]: Traceback" not in output
    assert f"error: cannot write {failing / 'segment_0001.pt'} (Is a directory)" in output
    assert not (failing / MANIFEST).exists() and not list(failing.glob(".*.tmp"))
