"""What the nerfstudio web viewer needs for a video: a camera that faces the frame."""

from __future__ import annotations

import math

from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from nerfstudio.viewer.viewer_elements import ViewerControl

# Fraction of the view's height the frame fills, leaving a margin; browsers are usually wider than tall.
FILL = 0.9
ASSUMED_ASPECT = 16 / 9


class VideoViewerControl(ViewerControl):
    """Puts every new viewer client in front of the video plane, upright, the frame filling the view."""

    def __init__(self, plane_size: tuple[float, float]) -> None:
        self.plane_size = plane_size

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self.viser_server.on_client_connect(self.face_video)

    def camera_distance(self, vertical_fov: float) -> float:
        width, height = self.plane_size
        visible_height = max(height, width / ASSUMED_ASPECT) / FILL
        return 0.5 * visible_height / math.tan(0.5 * vertical_fov)

    def face_video(self, client) -> None:
        distance = self.camera_distance(client.camera.fov) * VISER_NERFSTUDIO_SCALE_RATIO
        with client.atomic():
            client.camera.up_direction = (0.0, 1.0, 0.0)
            client.camera.position = (0.0, 0.0, distance)
            client.camera.look_at = (0.0, 0.0, 0.0)
