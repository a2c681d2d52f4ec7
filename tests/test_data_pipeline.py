"""Data parser, pixel sampler and the rays-to-plane mapping, on clips written here."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_gradient, write_clip
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.viewer.render_state_machine import RenderStateMachine
from nerfstudio.viewer_legacy.server.viewer_utils import IOChangeException, SetTrace

from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.plugin.dataparser import VideoDataParserConfig
from nvp_nerfstudio.plugin.model import VideoModelConfig
from nvp_nerfstudio.rendering import render_frame


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mkv", moving_gradient(9, 12, 20), codec="ffv1", pix_fmt="bgr0")


def outputs(clip: Path, which: str, **options):
    parser = VideoDataParserConfig(data=clip, **options).setup()
    return parser, parser.get_dataparser_outputs(which)


def test_fit_split_uses_every_frame_with_times_in_unit_interval(clip: Path) -> None:
    parser, train = outputs(clip, "train")
    test = parser.get_dataparser_outputs("test")
    assert train.metadata["frame_indices"] == test.metadata["frame_indices"] == list(range(9))
    times = train.cameras.times.squeeze(-1)
    torch.testing.assert_close(times, torch.linspace(0, 1, 9))
    assert (train.cameras.camera_type == CameraType.ORTHOPHOTO.value).all()
    assert train.metadata["video"] is test.metadata["video"]  # decoded once


def test_holdout_split_leaves_every_kth_frame_for_evaluation(clip: Path) -> None:
    parser, train = outputs(clip, "train", split="holdout", holdout_every=3)
    held_out = parser.get_dataparser_outputs("val").metadata["frame_indices"]
    assert held_out == [2, 5, 8]
    assert train.metadata["frame_indices"] == [0, 1, 3, 4, 6, 7]


def test_bad_flag_exits_with_a_message(clip: Path) -> None:
    with pytest.raises(SystemExit, match="stride must be >= 1"):
        outputs(clip, "train", stride=0)


def test_sampler_gathers_uint8_pixels_uniformly() -> None:
    frames = torch.from_numpy(moving_gradient(6, 10, 14))
    original = frames.clone()
    sampler = FramePixelSampler(frames, frame_indices=[1, 3, 5], seed=0)
    indices, rgb = sampler.sample(60000)
    camera, row, column = indices.unbind(-1)
    expected = frames[torch.tensor([1, 3, 5])[camera], row, column].float() / 255
    torch.testing.assert_close(rgb, expected)
    assert torch.equal(frames, original) and frames.dtype == torch.uint8
    for values, bins in ((camera, 3), (row, 10), (column, 14)):
        counts = torch.bincount(values, minlength=bins).float()
        assert counts.numel() == bins
        assert (counts / counts.mean() - 1).abs().max() < 0.1  # uniform within 10 %
    # Drawn at random, handed out in video order (for the grids' caches); rows and columns independent of it.
    flat = (camera * 10 + row) * 14 + column
    assert torch.equal(flat, flat.sort().values)
    assert abs(torch.corrcoef(torch.stack([row.float(), column.float()]))[0, 1]) < 0.02


def video_model(clip: Path):
    _, train = outputs(clip, "train")
    model = VideoModelConfig().setup(scene_box=train.scene_box, num_train_data=9, metadata=train.metadata)
    return model, train


def test_whole_frame_sampler_returns_every_pixel_of_random_frames() -> None:
    frames = torch.randint(0, 256, (6, 5, 7, 3), dtype=torch.uint8)
    sampler = FramePixelSampler(frames, [1, 3, 4], seed=0, whole_frames=True)
    indices, rgb = sampler.sample(2 * 5 * 7 + 10)  # room for two whole frames
    assert indices.shape == (2 * 35, 3)
    for block, colours in zip(indices.view(2, 35, 3), rgb.view(2, 35, 3)):
        camera = block[0, 0]
        assert (block[:, 0] == camera).all()
        assert sorted(zip(block[:, 1].tolist(), block[:, 2].tolist())) == [(r, c) for r in range(5) for c in range(7)]
        frame = [1, 3, 4][camera]
        torch.testing.assert_close(colours, frames[frame, block[:, 1], block[:, 2]].float() / 255)
    assert sampler.sample(3)[0].shape == (35, 3)  # at least one frame


def test_orthographic_rays_land_on_their_pixel_centres(clip: Path) -> None:
    model, train = video_model(clip)
    camera = train.cameras[4:5]
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    xyt, inside, _ = model.plane_coordinates(rays)
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(20), indexing="ij")
    torch.testing.assert_close(xyt[:, 0], ((cols + 0.5) / 20).reshape(-1).float())
    torch.testing.assert_close(xyt[:, 1], ((rows + 0.5) / 12).reshape(-1).float())
    torch.testing.assert_close(xyt[:, 2], torch.full((240,), 0.5))
    assert inside.all()


def test_viewer_perspective_rays_hit_the_plane_or_background(clip: Path) -> None:
    model, _ = video_model(clip)
    origins = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    directions = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.9, 0.0, -1.0], [0.0, 0.0, 1.0]]), dim=-1)
    bundle = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(3, 1), times=None)
    xyt, inside, _ = model.plane_coordinates(bundle)
    torch.testing.assert_close(xyt[0], torch.tensor([0.5, 0.5, 0.0]))
    assert inside.tolist() == [True, False, False]  # centre; beyond the frame's edge; pointing away
    out = model.get_outputs(bundle)
    assert out["rgb"].shape == (3, 3) and out["depth"].shape == out["accumulation"].shape == (3, 1)
    assert out["accumulation"].squeeze(-1).tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(out["rgb"][1:], torch.zeros(2, 3))
    missing = model.get_outputs(bundle[1:])  # a chunk of rays that all miss the frame
    assert missing["accumulation"].sum() == 0 and torch.equal(missing["rgb"], torch.zeros(2, 3))


def test_images_are_the_frame_at_its_pixel_centres(clip: Path) -> None:
    model, train = video_model(clip)
    model.eval()
    out = model.get_outputs_for_camera(train.cameras[4:5])  # a dataset camera, as ns-eval renders with
    reconstruction = render_frame(model.field, 0.5, 12, 20)
    source = train.metadata["video"].frames[4].float() / 255
    torch.testing.assert_close(out["rgb"], reconstruction)
    torch.testing.assert_close(out["ground_truth"], source)
    torch.testing.assert_close(out["error"], (reconstruction - source).abs().mean(-1, keepdim=True))
    assert out["accumulation"].all()


def facing_camera(distance: float, size: int = 32) -> Cameras:
    """A perspective camera on the z axis looking at the plane, with a 90-degree field of view."""
    pose = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, distance]])
    half = size / 2
    return Cameras(pose, fx=half, fy=half, cx=half, cy=half, camera_type=CameraType.PERSPECTIVE, times=torch.tensor([[0.5]]))


def test_a_view_with_fewer_pixels_than_the_frame_evaluates_fewer_points(clip: Path) -> None:
    model, _ = video_model(clip)
    model.eval()
    evaluated = []
    model.field.register_forward_hook(lambda field, inputs, output: evaluated.append(len(inputs[0])))
    out = model.get_outputs_for_camera(facing_camera(3.0))  # the 20x12 frame covers about 5x3 of its pixels
    plane = out["accumulation"][..., 0].bool()
    assert out["rgb"].shape == (32, 32, 3) and 3 <= int(plane.any(0).sum()) <= 7
    assert sum(evaluated) <= 7 * 5  # a grid about as coarse as the view's, not the 240 pixel centres
    assert torch.equal(out["rgb"][~plane], torch.zeros(int((~plane).sum()), 3))


def test_a_still_viewer_render_gives_the_plane_every_pixel_of_the_video(clip: Path) -> None:
    model, _ = video_model(clip)
    model.eval()
    camera = facing_camera(3.0)
    # The viewer's render thread in its still ("high") state, without a viewer behind it.
    results = []
    thread = RenderStateMachine.__new__(RenderStateMachine)
    threading.Thread.__init__(thread)
    thread.state = "high"
    thread.run = lambda: results.append(model.get_outputs_for_camera(camera))
    thread.start()
    thread.join()
    plane = results[0]["accumulation"][..., 0].bool()
    # Raised in place (the viewer composites depth with the same camera) until the frame's 20 columns and 12 rows fit.
    assert results[0]["rgb"].shape[:2] == (int(camera.height), int(camera.width)) and int(camera.width) > 32
    assert int(plane.any(0).sum()) >= 20 and int(plane.any(1).sum()) >= 12
    assert model.get_outputs_for_camera(facing_camera(3.0))["rgb"].shape == (32, 32, 3)  # any other render: as asked


def test_a_viewer_render_interrupted_at_any_line_leaves_the_next_render_to_finish(clip: Path) -> None:
    """nerfstudio's viewer stops a render by raising from a trace function at whatever line its render thread is on
    (viewer_utils.SetTrace). Interrupted at each line in turn, the thread's next render still finishes: nothing a
    render takes (the grid kernels' lock) is left held."""
    model, _ = video_model(clip)
    model.eval()
    camera = facing_camera(3.0)
    model.get_outputs_for_camera(camera)  # the first call also compiles the grid kernels
    line_events = 0

    def count(frame, event, arg):
        nonlocal line_events
        line_events += event == "line"
        return count

    with SetTrace(count):
        model.get_outputs_for_camera(camera)
    assert line_events > 100
    interrupted_at, finished = [], []

    def render_thread() -> None:
        for line in range(1, line_events + 1):
            seen = 0

            def interrupt(frame, event, arg):
                nonlocal seen
                seen += event == "line"
                if seen == line:
                    raise IOChangeException
                return interrupt

            try:
                with SetTrace(interrupt):
                    model.get_outputs_for_camera(camera)
            except IOChangeException:
                interrupted_at.append(line)
        finished.append(model.get_outputs_for_camera(camera))

    thread = threading.Thread(target=render_thread, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert finished, f"a render hung after one interrupted at line event {interrupted_at[-1] if interrupted_at else '(none yet)'} of {line_events}"
    assert len(interrupted_at) > line_events // 2


def test_sampler_coordinates_match_the_rays_nerfstudio_generates(clip: Path) -> None:
    from nerfstudio.model_components.ray_generators import RayGenerator

    model, train = video_model(clip)
    sampler = FramePixelSampler(train.metadata["video"].frames, train.metadata["frame_indices"], seed=1)
    indices, _ = sampler.sample(500)
    xyt, inside, _ = model.plane_coordinates(RayGenerator(train.cameras)(indices))
    assert inside.all()
    torch.testing.assert_close(xyt, sampler.coordinates(indices))


def test_linear_blend_baseline_recovers_linear_motion() -> None:
    from nvp_nerfstudio.data.interpolation import blend, blend_psnr

    # Brightness ramping linearly in time: blending the neighbours of a held-out frame is exact.
    ramp = torch.arange(9, dtype=torch.uint8).mul(20).view(9, 1, 1, 1).expand(9, 4, 6, 3).contiguous()
    assert blend_psnr(ramp, holdout_every=2) == float("inf")
    torch.testing.assert_close(blend(ramp, [0, 2, 4], 1), ramp[1].float())
    # A clip with no temporal structure cannot be blended well.
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (9, 8, 8, 3), dtype=np.uint8))
    assert blend_psnr(noise, holdout_every=2) < 12.0


def test_a_checkpoint_of_another_field_layout_is_refused_not_half_loaded(clip: Path) -> None:
    from nerfstudio.pipelines.base_pipeline import Pipeline

    model, _ = video_model(clip)
    state = {f"_model.{key}": value for key, value in model.state_dict().items()}
    renamed = {key.replace("mlp.synthesis.head", "mlp.head"): value for key, value in state.items()}
    pipeline = Pipeline.__new__(Pipeline)  # nerfstudio's own loading path, which retries non-strictly
    torch.nn.Module.__init__(pipeline)
    pipeline._model = model
    with pytest.raises(SystemExit, match="parameter names differ"):
        pipeline.load_state_dict(renamed)
    pipeline.load_state_dict(state)  # the matching checkpoint still loads
