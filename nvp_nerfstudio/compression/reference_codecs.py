"""Standard video codecs on RGB frames through PyAV: the reference curves of nvp-rd.

Run as a program, one fresh child process per encode (rate_distortion.py does that): libx265's
inter coding writes past its arrays and reads uninitialised memory on small frames (see
videocodec.py), so no encode shares a heap with another, nor with the caller. The child reads one
JSON job on stdin,

    {"frames": "in.npy", "output": "out.npy", "codec": "x265", "pix_fmt": "yuv420p", "crf": 28, "preset": "medium"}

encodes the uint8 (T, H, W, 3) frames of in.npy, decodes the bitstream back to RGB into out.npy
and writes JSON {"extradata": bytes, "packets": [bytes, ...], "encode_seconds", "decode_seconds"}
on stdout; on failure, one line on stderr and exit status 1. The bitstream is the codec's extradata
and packets, with no container around them.

Frames are padded to even sizes by repeating the last row and column (4:2:0 needs them, and
libx265 misbehaves on odd sizes), and for x265 to at least 64 x 64 (below that its cu-tree pass
writes past its arrays: valgrind, 44 x 36; none at 64 x 64, 64 x 128, 88 x 72, 176 x 144); the
decoded frames are cropped back, the padding's bits count.
RGB <-> YUV is swscale's default both ways (BT.601, limited range).

Imports only the standard library, numpy and av, so the child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class ReferenceCodec:
    encoder: str
    decoder: str
    pix_fmts: tuple[str, ...]
    crfs: range
    options: dict = field(default_factory=dict)
    """Encoder options besides crf and preset."""
    minimum: int = 2
    """Frames are padded to at least this many pixels a side."""


CODECS = {
    # x265's info=0 drops its 1.5 kB settings SEI: text, not picture (the .nvp's x265 streams drop it too).
    "x264": ReferenceCodec("libx264", "h264", ("yuv420p", "yuv444p"), range(0, 52)),
    "x265": ReferenceCodec("libx265", "hevc", ("yuv420p", "yuv444p"), range(0, 52), {"x265-params": "log-level=error:info=0"}, 64),
    # SVT-AV1 codes 4:2:0 only.
    "svt-av1": ReferenceCodec("libsvtav1", "libdav1d", ("yuv420p",), range(1, 64)),
}


def encode(job: dict, frames: np.ndarray) -> tuple[bytes, list[bytes]]:
    """Extradata and packets of the frames at the job's codec, pixel format, crf and preset."""
    import av

    codec = CODECS[job["codec"]]
    height, width = (max(codec.minimum, n + n % 2) for n in frames.shape[1:3])
    context = av.CodecContext.create(codec.encoder, "w")
    context.width, context.height, context.pix_fmt = width, height, job["pix_fmt"]
    context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
    context.options = {**codec.options, "crf": str(job["crf"]), "preset": str(job["preset"])}
    packets = []
    for index, rgb in enumerate(frames):
        padded = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(padded, format="rgb24").reformat(format=job["pix_fmt"])
        frame.pts = index
        packets += [bytes(packet) for packet in context.encode(frame)]
    packets += [bytes(packet) for packet in context.encode(None)]
    return bytes(context.extradata or b""), packets


def decode(job: dict, extradata: bytes, packets: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """The RGB frames (T, H, W, 3) of a bitstream, cropped to the source's size."""
    import av

    context = av.CodecContext.create(CODECS[job["codec"]].decoder, "r")
    if extradata:
        context.extradata = extradata
    out = np.empty(shape, dtype=np.uint8)
    decoded = 0
    for packet in [*(av.Packet(data) for data in packets), None]:
        for frame in context.decode(packet):
            if decoded == len(out):
                raise ValueError(f"the decoder returned more than the {len(out)} frames encoded")
            out[decoded] = frame.to_ndarray(format="rgb24")[: shape[1], : shape[2]]
            decoded += 1
    if decoded != len(out):
        raise ValueError(f"the decoder returned {decoded} of the {len(out)} frames encoded")
    return out


def main() -> None:
    import av

    job = json.loads(sys.stdin.buffer.read())
    codec = CODECS[job["codec"]]
    missing = [name for name in (codec.encoder, codec.decoder) if name not in av.codecs_available]
    if missing:
        sys.exit(f"this PyAV build (av {av.__version__}) has no {' or '.join(missing)}")
    frames = np.load(job["frames"], mmap_mode="r")
    start = time.perf_counter()
    try:
        extradata, packets = encode(job, frames)
        encoded = time.perf_counter()
        decoded = decode(job, extradata, packets, frames.shape)
        done = time.perf_counter()
    except (av.FFmpegError, ValueError) as err:
        sys.exit(f"{type(err).__name__}: {err}")
    np.save(job["output"], decoded)
    result = {
        "extradata": len(extradata), "packets": [len(packet) for packet in packets],
        "encode_seconds": encoded - start, "decode_seconds": done - encoded,
    }
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
