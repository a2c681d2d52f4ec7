"""nerfstudio data parser for a video file or a folder of frames: one orthographic camera per frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from nvp_nerfstudio.data.masks import load_mask
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, VideoInputError, holdout_split, load_video, open_frames

# Frames lie in the plane z = 0, longest side 1, x right and y up. Each orthographic camera sits at
# z = 1 looking down -z; nerfstudio puts an orthophoto ray's origin at the pixel's (x, y) on that plane.
CAMERA_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])


@dataclass
class VideoDataParserConfig(DataParserConfig):
    """A video file (anything PyAV decodes) or a folder of frames, or `sample:bikes` for the bundled clip."""

    _target: Type = field(default_factory=lambda: VideoDataParser)
    data: Path = Path("sample:bikes")
    """Video file, frame folder (naturally sorted), or sample:bikes / sample:carphone / sample:bigbuckbunny."""
    split: Literal["fit", "holdout"] = "fit"
    """`fit`: train and evaluate on every frame (the paper's protocol). `holdout`: every k-th frame is evaluation only."""
    holdout_every: int = 2
    """k of the holdout split: frames k-1, 2k-1, ... are held out."""
    start_frame: int = 0
    end_frame: Optional[int] = None
    """First source frame not used (exclusive); None for the end of the video."""
    stride: int = 1
    """Keep every n-th source frame."""
    max_frames: Optional[int] = None
    downscale: int = 1
    """Divide width and height by this integer factor (area averaging)."""
    keep_decoded_prefix: bool = False
    """Train on the frames that decode from a truncated or damaged video (by default its decode is an error)."""
    mask: Optional[str] = None
    """Inpainting: a mask video or frame folder (white = missing) or a generated mask (box, strokes, logo).
    Masked pixels are left out of training; evaluation scores them apart from the rest."""

    def selection(self) -> FrameSelection:
        return FrameSelection(self.start_frame, self.end_frame, self.stride, self.max_frames, self.downscale, self.keep_decoded_prefix)

    def check_source(self, data: Path) -> None:
        """Open the source and read its size (no frame decoded): one error line for a missing, unreadable or
        too-small source, for ns-train to print before its configuration."""
        try:
            holdout_split(0, self.holdout_every)
            open_frames(data, self.selection()).decoded.close()
        except VideoInputError as err:
            raise SystemExit(f"error: {err}") from None


class VideoDataParser(DataParser):
    config: VideoDataParserConfig
    includes_time = True  # the viewer shows its Time slider for data parsers with time

    def __init__(self, config: VideoDataParserConfig) -> None:
        super().__init__(config)
        self._video: Optional[VideoFrames] = None

    @property
    def video(self) -> VideoFrames:
        """The selected frames, decoded once however many splits are asked for."""
        if self._video is None:
            self._video = self._decode()
        return self._video

    def _decode(self) -> VideoFrames:
        config = self.config
        try:
            holdout_split(0, config.holdout_every)  # checks the flag before a long decode
            selection = config.selection()
            video = load_video(config.data, selection)
            if config.mask is not None:
                video.missing = load_mask(config.mask, video, selection)
            return video
        except VideoInputError as err:
            raise SystemExit(f"error: {err}") from None

    def frame_indices(self, split: str) -> list[int]:
        if self.config.split == "fit":
            return list(range(self.video.num_frames))
        kept, held_out = holdout_split(self.video.num_frames, self.config.holdout_every)
        return kept if split == "train" else held_out

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        video = self.video
        indices = self.frame_indices(split)
        if not indices:
            raise SystemExit(f"error: the {split} split of {video.source} is empty: use more frames or split 'fit'")
        longest = max(video.width, video.height)
        last = max(video.num_frames - 1, 1)
        cameras = Cameras(
            camera_to_worlds=CAMERA_TO_WORLD.expand(len(indices), 3, 4),
            fx=float(longest),
            fy=float(longest),
            cx=video.width / 2.0,
            cy=video.height / 2.0,
            width=video.width,
            height=video.height,
            camera_type=CameraType.ORTHOPHOTO,
            times=torch.tensor([[i / last] for i in indices], dtype=torch.float32),
        )
        half_width, half_height = video.width / (2 * longest), video.height / (2 * longest)
        return DataparserOutputs(
            # One name per frame, under the video's own path: ns-render dataset names its images after what
            # follows the names' common folder (with a suffix, `clip.mp4#frame1` would become clip.jpg for all).
            image_filenames=[Path(video.source) / f"frame{video.source_indices[i]:06d}" for i in indices],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-half_width, -half_height, -1.0], [half_width, half_height, 1.0]])),
            metadata={"video": video, "frame_indices": indices},
        )


video_dataparser = DataParserSpecification(
    config=VideoDataParserConfig(), description="A video file or a folder of frames, one orthographic camera per frame"
)
