"""A nerfstudio dataset whose images are frames of the decoded video in memory."""

from __future__ import annotations

from typing import Dict

import numpy as np
import numpy.typing as npt
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset


class VideoDataset(InputDataset):
    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0) -> None:
        if scale_factor != 1.0:
            raise SystemExit("error: camera_res_scale_factor is not supported for video; use the data parser's --downscale")
        super().__init__(dataparser_outputs, scale_factor)
        self.video = self.metadata["video"]
        self.frame_indices = self.metadata["frame_indices"]
        missing = self.video.missing
        # Inpainting: evaluation scores the missing pixels apart when every frame of this split has some
        # (nerfstudio averages a metric over frames only if every frame reports it).
        self.scores_missing = missing is not None and all(
            bool(region.flatten(1).any(1).all()) for region in (missing[self.frame_indices], ~missing[self.frame_indices])
        )

    def get_metadata(self, data: Dict) -> Dict:
        if not self.scores_missing:
            return {}
        return {"missing": self.video.missing[self.frame_indices[data["image_idx"]]]}

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        return self.video.frames[self.frame_indices[image_idx]].numpy()
