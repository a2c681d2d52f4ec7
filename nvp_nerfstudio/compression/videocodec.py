"""Grayscale video codecs through PyAV, for the dense levels of 3D grids (t-slices as frames).

Run as a program in a child process (`videos.py` does that), so that a codec library that crashes
cannot take the caller's process (and its unsaved work) with it. The child reads jobs from stdin and
writes results to stdout:

    u32 JSON length | JSON {"op": "encode" | "decode", "jobs": [{..., "lengths": [...]}]} | blobs

An encode job's one blob is the raw frames (frames x height x width bytes); its result blobs are the
codec's extradata and its packets. A decode job takes those and returns the raw frames. Bitstreams
carry no container: the caller stores sizes and frame counts.

Imports only the standard library, numpy and av, so the child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class VideoCodec:
    encoder: str
    decoder: str
    pix_fmt: str
    default_crf: int
    crfs: range
    options: dict
    multiple: int = 1
    """Frame sizes are padded (edge values) to a multiple of this ..."""
    minimum: int = 1
    """... and to at least this."""
    lossless: bool = False


VIDEO_CODECS = {
    # The paper's codec, HEVC at crf 21, but every frame intra-coded (keyint=1): on frames as small as
    # grid levels, libx265's inter coding (3.5 to 4.2, as PyAV bundles it) writes past its cu-tree
    # arrays and decides on uninitialised memory (valgrind), so its output changed from run to run and
    # it sometimes crashed. Intra-only is deterministic in any process. frame-threads=1 keeps the
    # output identical on any machine; info=0 drops a 1.5 kB settings SEI. x265 needs sizes in
    # multiples of 8 of at least 16 (an odd height corrupts its heap).
    "x265": VideoCodec(
        "libx265", "hevc", "gray", 21, range(0, 52),
        {"preset": "medium", "x265-params": "keyint=1:info=0:log-level=none:frame-threads=1"}, 8, 16,
    ),
    # SVT-AV1 codes only 4:2:0: the values go in Y, chroma is neutral. At 4x4 and a low crf it fails (ENOMEM).
    "svt-av1": VideoCodec("libsvtav1", "libdav1d", "yuv420p", 30, range(1, 64), {"preset": "8"}, 2, 8),
    "ffv1": VideoCodec("ffv1", "ffv1", "gray", 0, range(0, 1), {"coder": "1", "context": "1"}, lossless=True),
}


def padded_size(codec: VideoCodec, height: int, width: int) -> tuple[int, int]:
    pad = lambda n: max(codec.minimum, -(-n // codec.multiple) * codec.multiple)  # noqa: E731
    return pad(height), pad(width)


def encode(job: dict, frames: np.ndarray) -> list[bytes]:
    import av

    codec = VIDEO_CODECS[job["codec"]]
    height, width = padded_size(codec, job["height"], job["width"])
    frames = np.pad(frames, ((0, 0), (0, height - frames.shape[1]), (0, width - frames.shape[2])), mode="edge")
    context = av.CodecContext.create(codec.encoder, "w")
    context.width, context.height, context.pix_fmt = width, height, codec.pix_fmt
    context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
    context.options = {**codec.options, **({} if codec.lossless else {"crf": str(job["crf"])})}
    if codec.pix_fmt == "yuv420p":
        chroma = np.full((height // 2, width), 128, dtype=np.uint8)  # U then V, each height/2 x width/2
    packets = []
    for index, plane in enumerate(frames):
        data = plane if codec.pix_fmt == "gray" else np.concatenate([plane, chroma])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=codec.pix_fmt)
        frame.pts = index
        packets += [bytes(packet) for packet in context.encode(frame)]
    packets += [bytes(packet) for packet in context.encode(None)]
    return [bytes(context.extradata or b""), *packets]


def decode(job: dict, blobs: list[bytes]) -> np.ndarray:
    import av

    codec = VIDEO_CODECS[job["codec"]]
    count, height, width = job["frames"], job["height"], job["width"]
    padded = padded_size(codec, height, width)
    context = av.CodecContext.create(codec.decoder, "r")
    context.width, context.height, context.pix_fmt = padded[1], padded[0], codec.pix_fmt  # ffv1 needs them
    if blobs[0]:
        context.extradata = blobs[0]
    out = np.empty((count, height, width), dtype=np.uint8)
    decoded = 0
    for packet in [*(av.Packet(blob) for blob in blobs[1:]), None]:
        for frame in context.decode(packet):
            if decoded == count:
                raise ValueError(f"more than the {count} frames expected")
            if (frame.height, frame.width) != padded or frame.format.name != codec.pix_fmt:
                found = f"{frame.width}x{frame.height} {frame.format.name}"
                raise ValueError(f"a {found} frame where {padded[1]}x{padded[0]} was expected")
            plane = frame.planes[0]
            luma = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
            out[decoded] = luma[:height, :width]
            decoded += 1
    if decoded != count:
        raise ValueError(f"{decoded} frames where {count} were expected")
    return out


def main() -> None:
    stdin = sys.stdin.buffer.read()
    (length,) = LENGTH.unpack_from(stdin)
    request = json.loads(stdin[LENGTH.size : LENGTH.size + length])
    position = LENGTH.size + length
    results, blobs = [], []
    for job in request["jobs"]:
        parts = []
        for size in job["lengths"]:
            parts.append(stdin[position : position + size])
            position += size
        try:
            if request["op"] == "encode":
                frames = np.frombuffer(parts[0], dtype=np.uint8).reshape(job["frames"], job["height"], job["width"])
                out = encode(job, frames)
            else:
                out = [decode(job, parts).tobytes()]
        except Exception as err:  # noqa: BLE001 - reported to the caller, which names the section
            if request["op"] == "encode":
                raise
            results.append({"error": f"{type(err).__name__}: {err}"})
            continue
        results.append({"lengths": [len(blob) for blob in out]})
        blobs += out
    header = json.dumps({"jobs": results}).encode()
    sys.stdout.buffer.write(LENGTH.pack(len(header)) + header + b"".join(blobs))


if __name__ == "__main__":
    main()
