"""Encode and decode grayscale videos in a child process (see videocodec.py for why).

Core module: standard library and numpy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvp_nerfstudio.compression import videocodec
from nvp_nerfstudio.compression.container import CodecError, pack_list, unpack_list

WORKER = Path(videocodec.__file__)


@dataclass(frozen=True)
class VideoJob:
    codec: str
    crf: int
    frames: int
    height: int
    width: int


def encode_videos(jobs: list[VideoJob], videos: list[np.ndarray]) -> list[bytes]:
    """Each uint8 [frames, height, width] video as one stream: extradata and packets, with their sizes."""
    raw = [[np.ascontiguousarray(video, dtype=np.uint8).tobytes()] for video in videos]
    return [pack_list(blobs) for blobs in _run("encode", jobs, raw)]


def decode_videos(jobs: list[VideoJob], streams: list[bytes]) -> list[np.ndarray | CodecError]:
    """The uint8 videos, or for a stream that does not decode into its job's shape, the CodecError saying why."""
    inputs: list[list[bytes] | CodecError] = []
    for stream in streams:
        try:
            blobs, tail = unpack_list(stream)
            if tail or not blobs:
                raise CodecError("its video stream has stray bytes")
            inputs.append(blobs)
        except CodecError as err:
            inputs.append(err)
    valid = [i for i, blobs in enumerate(inputs) if not isinstance(blobs, CodecError)]
    results = _run("decode", [jobs[i] for i in valid], [inputs[i] for i in valid])
    out: list[np.ndarray | CodecError] = list(inputs)  # errors stay in place
    for i, result in zip(valid, results):
        job = jobs[i]
        if isinstance(result, str):
            out[i] = CodecError(f"its {job.codec} stream does not decode ({result})")
        else:
            out[i] = np.frombuffer(result[0], dtype=np.uint8).reshape(job.frames, job.height, job.width)
    return out


def _run(op: str, jobs: list[VideoJob], blobs: list[list[bytes]]) -> list[list[bytes] | str]:
    if not jobs:
        return []
    request = {"op": op, "jobs": [{**job.__dict__, "lengths": [len(b) for b in parts]} for job, parts in zip(jobs, blobs)]}
    header = json.dumps(request).encode()
    stdin = videocodec.LENGTH.pack(len(header)) + header + b"".join(b for parts in blobs for b in parts)
    child = subprocess.run([sys.executable, str(WORKER)], input=stdin, capture_output=True)
    if child.returncode != 0:
        message = child.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        if op == "decode":
            return [f"the video decoder died ({message[0]})"] * len(jobs)
        raise RuntimeError(f"the video encoder died: {message[0]}")
    (length,) = videocodec.LENGTH.unpack_from(child.stdout)
    response = json.loads(child.stdout[videocodec.LENGTH.size : videocodec.LENGTH.size + length])
    position = videocodec.LENGTH.size + length
    results: list[list[bytes] | str] = []
    for result in response["jobs"]:
        if "error" in result:
            results.append(result["error"])
            continue
        parts = []
        for size in result["lengths"]:
            parts.append(child.stdout[position : position + size])
            position += size
        results.append(parts)
    return results

