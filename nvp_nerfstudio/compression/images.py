"""Grayscale image codecs through Pillow, for the levels of 2D dense grids (NVP's latent keyframes).

Core module: imports only numpy and Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from PIL import Image

from nvp_nerfstudio.compression.container import CodecError

ImageCodecName = Literal["jpeg", "webp", "avif", "jpeg2000", "png"]


@dataclass(frozen=True)
class ImageCodec:
    pil_format: str
    default_quality: int
    options: Callable[[int], dict]
    """Pillow save options for a quality value."""
    qualities: range = range(0, 101)


IMAGE_CODECS: dict[str, ImageCodec] = {
    "jpeg": ImageCodec("JPEG", 95, lambda q: {"quality": q, "optimize": True}),
    "webp": ImageCodec("WEBP", 90, lambda q: {"quality": q, "method": 6}),
    "avif": ImageCodec("AVIF", 80, lambda q: {"quality": q, "speed": 4}),
    # OpenJPEG takes a target PSNR: its "quality" is in dB.
    "jpeg2000": ImageCodec(
        "JPEG2000", 45, lambda q: {"quality_mode": "dB", "quality_layers": [q], "irreversible": True}, range(1, 101)
    ),
    "png": ImageCodec("PNG", 0, lambda q: {"optimize": True}),  # lossless: no quality
}


def encode_image(pixels: np.ndarray, codec: ImageCodecName, quality: int) -> bytes:
    """A uint8 [height, width] image, coded."""
    spec = IMAGE_CODECS[codec]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buffer, spec.pil_format, **spec.options(quality))
    return buffer.getvalue()


def decode_image(data: bytes, codec: ImageCodecName, height: int, width: int) -> np.ndarray:
    """The uint8 [height, width] image, or CodecError; the size is checked before any pixel is decoded."""
    spec = IMAGE_CODECS[codec]
    try:
        with Image.open(io.BytesIO(data), formats=[spec.pil_format]) as image:
            if image.size != (width, height):
                raise CodecError(f"its {codec} image is {image.size[0]}x{image.size[1]} where {width}x{height} was expected")
            image.load()
            # Lossy WebP stores grey as YUV and decodes to RGB.
            return np.asarray(image if image.mode == "L" else image.convert("L"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        if isinstance(err, CodecError):
            raise
        raise CodecError(f"its {codec} image does not decode ({err})") from None
