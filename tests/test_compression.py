"""The .nvp codec: exact round trips with lossless codecs, bounded loss with lossy ones, and a
container that turns every damaged or truncated file into one CompressedFileError."""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import CompressedFileError, Container, Section
from nvp_nerfstudio.compression.field_codec import (
    CodecOptions,
    VideoInfo,
    compress,
    config_from_dict,
    config_to_dict,
    decode,
    decompress,
    grids,
    levels,
    other_tensors,
    quantised,
)
from nvp_nerfstudio.compression.geometry import entry_index
from nvp_nerfstudio.compression.videocodec import VIDEO_CODECS
from nvp_nerfstudio.compression.videos import VideoJob, encode_videos
from nvp_nerfstudio.data.video import FrameSelection
from nvp_nerfstudio.encodings.grid import GridEncoding
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.metrics import bits_per_pixel, psnr
from nvp_nerfstudio.rendering import render_frame

SHAPE = VideoShape(num_frames=8, height=24, width=32)
# Rounding with the codec's ranges (reachable entries) against the spec's (every entry): measured 73 dB.
SPEC_ROUNDING_FLOOR = 55.0
INFO = VideoInfo("nvp", 25.0, FrameSelection(start=2, stride=3, max_frames=8, downscale=2))
LOSSLESS = CodecOptions(image_codec="png", video_codec="ffv1", hash_coder="lzma", mlp_bits=32)
# A user-overridden NVP: small MLP and grids, so its file is a few kB and every byte of it can be damaged in turn.
# Its 3D grid has one dense level (a video section) and one hashed level (an entropy-coded section).
TINY_CONFIG = replace(
    METHODS["nvp"].field,
    keyframes=replace(METHODS["nvp"].field.keyframes, num_levels=3),
    positional=replace(METHODS["nvp"].field.positional, num_levels=2, log2_hashmap_size=12),
    positional_cells_per_frame=8.0,
    mlp=replace(METHODS["nvp"].field.mlp, hidden_dim=8, num_layers=2),
)


def perturbed(config, shape: VideoShape = SHAPE, seed: int = 0):
    """A field with random parameters, so that quantisation and the codecs have real work to do."""
    torch.manual_seed(seed)
    field = config.setup(shape=shape).eval()
    with torch.no_grad():
        for param in field.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return field


def frames(field) -> torch.Tensor:
    times = [i / (SHAPE.num_frames - 1) for i in range(SHAPE.num_frames)]
    return torch.stack([render_frame(field, t, SHAPE.height, SHAPE.width) for t in times])


def decode_bytes(data: bytes):
    return decode(container.from_bytes(data, "clip.nvp"), "clip.nvp")


def rebuilt(meta_changes: dict, data: bytes) -> bytes:
    """The file with its header edited and every checksum made valid again: damage a CRC cannot see."""
    stored = container.from_bytes(data, "clip.nvp")
    return container.to_bytes(Container({**stored.meta, **meta_changes}, stored.sections))


@pytest.fixture(scope="module")
def nvp_field():
    return perturbed(METHODS["nvp"].field)


@pytest.fixture(scope="module")
def tiny_file() -> bytes:
    return container.to_bytes(compress(perturbed(TINY_CONFIG), INFO, CodecOptions(mlp_bits=16)))


def test_container_round_trip() -> None:
    sections = [Section("a", "raw", b""), Section("b level 1", "image:png", bytes(range(256)) * 3)]
    stored = Container({"answer": 42, "nested": {"list": [1, 2.5, None]}}, sections)
    assert container.from_bytes(container.to_bytes(stored), "x.nvp") == stored
    parts = [b"", b"x" * 127, b"y" * 128, b"z" * 20000]
    assert container.unpack_parts(container.pack_parts(parts) + b"tail", 4) == (parts, b"tail")
    assert container.unpack_list(container.pack_list(parts)) == (parts, b"")


def rounded_as_specified(field, hash_bits: int, dense_bits: int = 8):
    """The field with each grid level rounded as the format specifies it, written here from the spec and not from
    the codec's quantiser: per (level, channel) 2^bits - 1 even steps over the level's [min, max], dense_bits
    (the format's 8), or hash_bits on a hashed level. Ranges are over every entry (the codec's are over the reachable ones only)."""
    reference = copy.deepcopy(field)
    with torch.no_grad():
        for grid in (module for module in reference.modules() if isinstance(module, GridEncoding)):
            features = grid.params.numel() // grid.layout.num_entries
            for offset, size, hashed in zip(grid.layout.offsets, grid.layout.level_sizes, grid.layout.hashed):
                block = grid.params[offset * features : (offset + size) * features].view(size, features)
                low, high = block.amin(0), block.amax(0)
                step = (high - low) / (2 ** (hash_bits if hashed else dense_bits) - 1)
                block.copy_(low + torch.round((block - low) / step) * step)
    return reference


def test_lossless_codecs_give_back_the_quantised_field_exactly(nvp_field) -> None:
    field, info = decode_bytes(container.to_bytes(compress(nvp_field, INFO, LOSSLESS)))
    reference = quantised(nvp_field, LOSSLESS)
    assert info == INFO and field.shape == SHAPE
    for (key, value), expected in zip(field.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, expected), key
    assert torch.equal(frames(field), frames(reference))
    # Against the format's rounding written independently (its ranges differ a little): the same picture.
    assert psnr(frames(field), frames(rounded_as_specified(nvp_field, LOSSLESS.hash_bits))) > SPEC_ROUNDING_FLOOR
    # 8-bit latents change the picture, but not by much: the quantised field is the right reference.
    assert psnr(frames(reference), frames(nvp_field)) > 30


@pytest.mark.parametrize(
    "options",
    [
        CodecOptions(),  # the defaults: webp + ffv1 + lzma + float16
        CodecOptions(image_codec="jpeg", video_codec="x265", hash_coder="zlib"),
        CodecOptions(image_codec="avif", video_codec="svt-av1"),
        CodecOptions(image_codec="jpeg2000", mlp_bits=32),
    ],
)
def test_lossy_codecs_stay_close_and_are_deterministic(nvp_field, options: CodecOptions) -> None:
    data = container.to_bytes(compress(nvp_field, INFO, options))
    assert container.to_bytes(compress(nvp_field, INFO, options)) == data
    field, _ = decode_bytes(data)
    # A bound that does not come from the codecs: a lossy file keeps the picture at least as close to the
    # uncompressed field's as latents rounded to 4 bits would (measured here: 62.5-68.6 dB against 57.3 dB).
    original = frames(nvp_field)
    four_bit_latents = psnr(frames(rounded_as_specified(nvp_field, hash_bits=4, dense_bits=4)), original)
    assert psnr(frames(field), original) > four_bit_latents


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"nvp", "nvp-large"}))  # NVP-L: NVP's layout, more channels
def test_every_method_round_trips_losslessly(name: str) -> None:
    field = perturbed(METHODS[name].field)
    decoded, _ = decode_bytes(container.to_bytes(compress(field, replace(INFO, method=name), LOSSLESS)))
    assert type(decoded) is type(field)
    assert torch.equal(frames(decoded), frames(quantised(field, LOSSLESS)))


def test_per_frame_grid_is_coded_as_an_8_bit_video_as_the_paper() -> None:
    field = perturbed(METHODS["nvp-paper"].field)
    stored = compress(field, replace(INFO, method="nvp-paper"), LOSSLESS)
    section = stored.section("positional")
    assert section.kind == "video:ffv1"
    assert "positional.grid" not in [key for key, _ in other_tensors(field)]
    decoded, _ = decode_bytes(container.to_bytes(stored))
    grid, restored = field.positional.grid.detach(), decoded.positional.grid
    step = (grid.amax((0, 1, 2)) - grid.amin((0, 1, 2))) / 255  # per channel
    assert ((restored - grid).abs() <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("latent_coder", ["range", "bytes"])
def test_hashed_levels_round_trip_exactly_at_fewer_bits(latent_coder: str) -> None:
    field = perturbed(TINY_CONFIG)
    assert [level.form for level in levels(field)][-2:] == ["video", "entropy"]
    options = replace(LOSSLESS, hash_bits=5, latent_coder=latent_coder)
    decoded, _ = decode_bytes(container.to_bytes(compress(field, INFO, options)))
    assert torch.equal(frames(decoded), frames(quantised(field, options)))
    assert not torch.equal(frames(decoded), frames(quantised(field, LOSSLESS)))


def test_size_accounting_is_the_file_size(tmp_path: Path, tiny_file: bytes) -> None:
    path = tmp_path / "clip.nvp"
    container.write(path, tiny_file)
    assert os.path.getsize(path) == len(tiny_file)
    assert bits_per_pixel(len(tiny_file), SHAPE) == os.path.getsize(path) * 8 / (8 * 24 * 32)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert torch.equal(frames(decompress(path)), frames(decode_bytes(tiny_file)[0]))


def test_header_restores_an_overridden_field_config(tiny_file: bytes) -> None:
    field, _ = decode_bytes(tiny_file)
    assert field.config == TINY_CONFIG
    for method in METHODS.values():
        assert config_from_dict(method.field, json.loads(json.dumps(config_to_dict(method.field)))) == method.field


def lattice(grid, count: int) -> torch.Tensor:
    """Points in [0, 1]^D (grid input, before axis scaling), dense enough to touch every cell of every level, and random ones."""
    finest = float(grid.layout.scales[-1])
    axes = [torch.linspace(0, 1, math.ceil(2 * scale * finest) + 2) for scale in grid.axis_scale.tolist()]
    return torch.cat([torch.cartesian_prod(*axes), torch.rand(count, len(axes))])


def test_coded_entries_are_exactly_those_the_grids_read() -> None:
    """Per level, the entries points in [0, 1]^D read through the grid's own indexing are among the coded ones
    (for dense levels: are exactly the coded ones), and the entries left out never affect the output."""
    shape = VideoShape(num_frames=40, height=13, width=57)  # anisotropic: most of each level is never read
    field = perturbed(METHODS["nvp"].field, shape)
    field_levels = levels(field)
    for _, grid in grids(field):
        points = lattice(grid, 2000)
        indices, _ = grid.corner_indices_and_weights(points * grid.axis_scale)
        for level in (level for level in field_levels if level.grid is grid):
            read = set((indices[:, level.index].reshape(-1) - level.geometry.offset).tolist())
            coded = set(level.geometry.entries.tolist())
            assert read == coded if not level.geometry.hashed else read <= coded, level.name
    # Our vertex index function agrees with the grid's.
    grid = field.positional
    points = lattice(grid, 2000) * grid.axis_scale
    pos = torch.addcmul(torch.full((len(points), 1, 3), 0.5), points[:, None], grid.scales[None, :, None])
    indices, _ = grid.corner_indices_and_weights(points)
    for level in range(grid.config.num_levels):
        vertices = (torch.floor(pos[:, level]).long()[:, None] + grid.corners).reshape(-1, 3).numpy()
        ours = entry_index(vertices, grid.layout.resolutions[level], grid.layout.level_sizes[level], grid.layout.hashed[level])
        assert (ours == (indices[:, level] - grid.layout.offsets[level]).reshape(-1).numpy()).all()
    # NaN in every entry left out leaves every output finite: those entries are never read.
    with torch.no_grad():
        for level in field_levels:
            table, layout = level.grid.table, level.grid.layout
            rows = torch.from_numpy(level.geometry.offset + level.geometry.entries)
            kept = table[rows].clone()
            table[layout.offsets[level.index] : layout.offsets[level.index] + layout.level_sizes[level.index]] = float("nan")
            table[rows] = kept
    assert torch.isfinite(field(lattice(field.positional, 5000))).all()


def test_every_truncation_and_every_flipped_byte_is_caught(tiny_file: bytes) -> None:
    assert len(tiny_file) < 20000  # small enough to try every position
    for length in range(len(tiny_file)):
        with pytest.raises(CompressedFileError):
            decode_bytes(tiny_file[:length])
    for position in range(len(tiny_file)):
        damaged = bytearray(tiny_file)
        damaged[position] ^= 0xFF
        with pytest.raises(CompressedFileError):
            decode_bytes(bytes(damaged))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_damaged_files_raise_compressed_file_error_only(tiny_file: bytes, data) -> None:
    position = data.draw(st.integers(0, len(tiny_file) - 1))
    damaged = bytearray(tiny_file)
    damaged[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    with pytest.raises(CompressedFileError, match="corrupt|not an .nvp file|format version"):
        decode_bytes(bytes(damaged[:cut] if data.draw(st.booleans()) else damaged))


def test_errors_name_the_damaged_section(tiny_file: bytes) -> None:
    stored = container.from_bytes(tiny_file, "clip.nvp")
    position = len(tiny_file) - sum(len(s.payload) for s in stored.sections)
    for section in stored.sections:
        damaged = bytearray(tiny_file)
        damaged[position + len(section.payload) // 2] ^= 1
        message = f"clip.nvp is corrupt: section '{section.name}' fails its checksum; re-run nvp-compress"
        with pytest.raises(CompressedFileError, match=message):
            decode_bytes(bytes(damaged))
        position += len(section.payload)
    with pytest.raises(CompressedFileError, match="the header fails its checksum"):
        decode_bytes(tiny_file[:20] + bytes([tiny_file[20] ^ 4]) + tiny_file[21:])


def test_absurd_sizes_fail_before_allocating(tiny_file: bytes) -> None:
    header_length = struct.unpack_from("<I", tiny_file, 5)[0]
    huge_header = tiny_file[:5] + struct.pack("<I", 0xFFFFFFFF) + tiny_file[9:]
    with pytest.raises(CompressedFileError, match="claims 4294967295 bytes"):
        decode_bytes(huge_header)
    # A section table with a checksummed header that claims 2**60 bytes.
    meta = json.loads(zlib.decompress(tiny_file[13 : 13 + header_length], -15))
    meta["sections"][-1][2] = 1 << 60
    header = zlib.compress(json.dumps(meta).encode(), 9, -15)
    crafted = container.PREFIX.pack(container.MAGIC, container.VERSION, len(header), zlib.crc32(header)) + header
    with pytest.raises(CompressedFileError, match="is truncated"):
        decode_bytes(crafted + tiny_file[13 + header_length :])
    start = time.perf_counter()
    with pytest.raises(CompressedFileError, match="GiB but only"):  # a 16M x 16M x 16M video: refused on the meta device
        largest = (1 << 24) - 1
        decode_bytes(rebuilt({"video": {"frames": largest, "height": largest, "width": largest, "fps": 25}}, tiny_file))
    assert time.perf_counter() - start < 10
    with pytest.raises(CompressedFileError, match="out of range"):
        decode_bytes(rebuilt({"video": {"frames": 1 << 40, "height": 24, "width": 32, "fps": 25}}, tiny_file))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"method": "nerfacto"}, "does not know"),
        ({"field": {"no_such_option": 1}}, "no option 'no_such_option'"),
        ({"field": {"keyframe_resolution": "high"}}, "stored as str"),
        ({"selection": {"start": -1}}, "start frame must be >= 0"),
        ({"tensors": 0}, "another layout"),
        ({"field": {"keyframes": {"num_levels": 4}}}, "do not match"),
    ],
)
def test_inconsistent_headers_are_refused(tiny_file: bytes, changes: dict, message: str) -> None:
    with pytest.raises(CompressedFileError, match=message):
        decode_bytes(rebuilt(changes, tiny_file))


@pytest.mark.parametrize("name", ["keyframes.xy level 1", "positional level 0", "positional level 1", "other tensors"])
def test_undecodable_payloads_with_valid_checksums_are_refused(tiny_file: bytes, name: str) -> None:
    stored = container.from_bytes(tiny_file, "clip.nvp")
    sections = [Section(s.name, s.kind, s.payload[:1] + b"\x07" * 40 if s.name == name else s.payload) for s in stored.sections]
    with pytest.raises(CompressedFileError, match=f"section '{name}'"):
        decode_bytes(container.to_bytes(Container(stored.meta, sections)))


@pytest.mark.parametrize("codec", ["x265", "svt-av1", "ffv1"])
def test_video_codecs_do_not_depend_on_uninitialised_memory(codec: str, monkeypatch) -> None:
    # glibc fills fresh heap blocks with the byte MALLOC_PERTURB_ names: a codec whose bytes change with
    # it decides on uninitialised memory (libx265's inter coding did, on frames this small).
    generator = np.random.default_rng(0)
    video = (generator.normal(0, 1, (16, 32, 32)).cumsum(1).cumsum(2) * 10 + 128).clip(0, 255).astype(np.uint8)
    job = VideoJob(codec, VIDEO_CODECS[codec].default_crf, *video.shape)
    streams = []
    for fill in ("85", "170"):
        monkeypatch.setenv("MALLOC_PERTURB_", fill)
        streams += encode_videos([job], [video])
    assert streams[0] == streams[1]
