"""What the nerfstudio web viewer needs for a video: a camera that faces the frame, a way to pick a frame."""

from __future__ import annotations

import math
import sys
import threading
from typing import Callable, TypeVar

from nerfstudio.viewer.render_state_machine import RenderStateMachine
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from nerfstudio.viewer.viewer_elements import ViewerControl

# Fraction of the view the frame fills along its tighter axis, leaving a margin.
FILL = 0.9
# nerfstudio's control panel (~320 px) lies over the right of the canvas: about this fraction of a
# 1200-px-wide window. The frame, centred on the canvas, is kept clear of it.
PANEL_FRACTION = 0.27
# Longest side of a still render raised to the video's own resolution: the most nerfstudio's Max res slider offers.
MAX_STILL_RENDER_SIDE = 2048


Result = TypeVar("Result")


def uninterrupted(function: Callable[..., Result], *args) -> Result:
    """function(*args) out of reach of the viewer's interrupt.

    nerfstudio's viewer stops a render by raising from a trace function (viewer_utils.SetTrace) at whatever line its
    render thread is on. Raised on the line where a `with` block ends, the exception skips the block's exit: the
    grid kernels' lock stayed held, and every later render and training step waited for it forever. Untraced, the
    call runs whole; an interrupt that came meanwhile is raised at the caller's next line.
    """
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        return function(*args)
    finally:
        sys.settrace(tracer)


def rendering_still_view() -> bool:
    """Whether the caller is a viewer's render thread drawing the view that stays once the camera stops.

    nerfstudio draws that view (its "high" state) at Max res over the whole canvas, of which the video plane covers
    only part: the model raises its resolution so the plane gets every pixel of the video.
    """
    thread = threading.current_thread()
    return isinstance(thread, RenderStateMachine) and thread.state == "high"


class VideoViewerControl(ViewerControl):
    """Puts every new viewer client in front of the video plane, upright, the frame filling the view."""

    def __init__(self, plane_size: tuple[float, float]) -> None:
        self.plane_size = plane_size

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        # Every training camera of a video has the same pose, between the viewer's camera and the plane: their
        # frustums would cover the frame with thumbnails, and hundreds of them cost a browser without a GPU its frame
        # rate (viser then lowers its canvas resolution). The viewer draws them after setting up its controls: none is.
        viewer.config.max_num_display_images = 0
        viewer.hide_images.visible = False
        self.viser_server.on_client_connect(self.face_video)

    def camera_distance(self, vertical_fov: float, aspect: float) -> float:
        """Distance of a camera on the z axis at which the whole frame shows, clear of the panel."""
        width, height = self.plane_size
        # Centred on the canvas, the frame may reach (0.5 - PANEL_FRACTION) of the canvas width either side.
        visible_height = max(height, width / ((1.0 - 2.0 * PANEL_FRACTION) * aspect)) / FILL
        return 0.5 * visible_height / math.tan(0.5 * vertical_fov)

    def face_video(self, client) -> None:
        aspect = client.camera.aspect or 16 / 9  # 0 until the browser has reported its canvas
        distance = self.camera_distance(client.camera.fov, aspect) * VISER_NERFSTUDIO_SCALE_RATIO
        with client.atomic():
            client.camera.up_direction = (0.0, 1.0, 0.0)
            client.camera.position = (0.0, 0.0, distance)
            client.camera.look_at = (0.0, 0.0, 0.0)

    def show_time(self, t: float) -> None:
        """Move the viewer's Time slider (which re-renders); a no-op before a viewer exists."""
        viewer = getattr(self, "viewer", None)
        if viewer is not None:
            viewer.control_panel.time = t
