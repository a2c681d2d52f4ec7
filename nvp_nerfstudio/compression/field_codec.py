"""Compress a trained video field into one self-describing .nvp file, and rebuild it from that file alone.

Every GridEncoding in the field's module tree is quantised to 8 bits per (grid, level, channel)
with a float32 [min, max] range, keeping only the entries input in [0, 1] can reach (geometry.py).
Its 2D dense levels become one grayscale image per channel, its 3D dense levels one grayscale video
per channel (t-slices as frames), and every other level (hashed: no spatial order) goes through
constriction's range coder under a model fitted to its codes (latent_coder.py), or a general-purpose
coder. A grid trained for rate (rate.py, nvp-c) is not requantised: each level stores its float32 steps
and its rounded symbols, range-coded under its trained models. A per-frame grid (nvp-paper) is one more
3D dense level. Everything else in the field's state (the MLPs) is stored as float16 or float32, or at 8 bits
as int8 with a scale per row (stored_tensors.py); a field trained for rate stores the MLP it renders. The
header holds the method name and the field config as trained, so the decoder rebuilds exactly that
field, then fills it from the sections.

Core module: no nerfstudio.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import numpy as np
import psutil
import torch
from torch import Tensor

from nvp_nerfstudio.compression import container, entropy, latent_coder
from nvp_nerfstudio.compression.container import CodecError, CompressedFileError, Container, Section, corrupt
from nvp_nerfstudio.compression.entropy import EntropyCoder
from nvp_nerfstudio.compression.geometry import LevelGeometry, level_geometry
from nvp_nerfstudio.compression.images import IMAGE_CODECS, ImageCodecName, decode_image, encode_image
from nvp_nerfstudio.compression.latent_model import fit, packed_level
from nvp_nerfstudio.compression.quantise import dequantise, quantise
from nvp_nerfstudio.compression.stored_tensors import as_stored, from_row_codes, row_coded, row_codes, stored_dtype, stored_size
from nvp_nerfstudio.compression.videocodec import VIDEO_CODECS
from nvp_nerfstudio.compression.videos import VideoJob, decode_videos, encode_videos
from nvp_nerfstudio.data.fingerprint import SourceFingerprint
from nvp_nerfstudio.data.video import FrameSelection, VideoInputError
from nvp_nerfstudio.encodings.grid import GridEncoding
from nvp_nerfstudio.encodings.per_frame import PerFrameGrid
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.rate import as_trained

RANGES_SECTION = "quantisation ranges"
OTHERS_SECTION = "other tensors"
MLP_BITS = (8, 16, 32)


@dataclass(frozen=True)
class CodecOptions:
    """How each part of the field is coded. Defaults measured on NVP-S / bikes (README, Compression)."""

    # WebP at 90 takes 27 % fewer keyframe bytes than JPEG at 95 for 0.03 dB. NVP's dense 3D levels are
    # small (its hash table caps them): lossless FFV1 is smaller than intra-only x265 at crf 21, which
    # loses 0.95 dB (videocodec.py says why x265 is intra-only). Hashed levels are most of the file and
    # no image or video codec applies to them: 6 bits instead of 8 make the file 4.27x smaller than raw
    # 8-bit latents for 0.09 dB (8 bits: 3.44x), 5 bits 4.86x for 0.20 dB (nvp-rd, bikes 320x136; lzma
    # then coded the hashed levels, the range coder now takes 4.7 % off the 6-bit file).

    image_codec: ImageCodecName = "webp"
    """Codec of the levels of 2D dense grids (NVP's keyframes); png is lossless."""
    image_quality: Optional[int] = None
    """0-100 (jpeg, webp, avif) or target PSNR in dB (jpeg2000); None: the codec's default."""
    video_codec: Literal["x265", "svt-av1", "ffv1"] = "ffv1"
    """Codec of the dense levels of 3D grids (t-slices as frames); ffv1 is lossless."""
    video_crf: Optional[int] = None
    """Constant rate factor of x265 (0-51) or svt-av1 (0-63); None: the codec's default."""
    hash_coder: EntropyCoder = "lzma"
    """Coder of the MLP, and with latent_coder bytes of hashed levels (no spatial order) and of grids of other than 2 or 3 dimensions."""
    latent_coder: Literal["range", "bytes"] = "range"
    """Coder of those levels' codes. range: a logistic per channel, centred by a prediction from the entry's earlier
    channels, fitted to the codes, stored with them and driving constriction's range coder (latent_coder.py);
    bytes: the codes as bytes through hash_coder. NVP-S / bikes, hashed levels: range 7.9 % smaller than lzma at
    6 bits, 2.7 % at 8 (NVP's channels are correlated; lzma sees it only byte by byte)."""
    hash_bits: int = 6
    """Bits per value of the entropy-coded (hashed) levels (the paper's latents: 8); fewer trade quality for size."""
    mlp_bits: Optional[Literal[8, 16, 32]] = None
    """Width of everything that is not a grid (the MLPs): 16 or 32, floats; 8, each weight matrix as 8-bit integers
    with a float32 scale per row (vectors stay float16). None: for a field trained for rate, the width its rate
    term counted (RateConfig.mlp_bits, 8 by default: nvp-c's MLP was 47 % of a 60 kB file on bikes 320x136 at
    16); 16 for the others."""

    def resolved(self) -> "CodecOptions":
        """The same options with the codecs' defaults filled in, as the header records them; ValueError when out of range."""
        image, video = IMAGE_CODECS[self.image_codec], VIDEO_CODECS[self.video_codec]
        quality = image.default_quality if self.image_quality is None else self.image_quality
        crf = video.default_crf if self.video_crf is None else self.video_crf
        if quality not in image.qualities:
            limits = f"{image.qualities.start}..{image.qualities.stop - 1}"
            raise ValueError(f"image quality {quality} is outside {self.image_codec}'s {limits}")
        if crf not in video.crfs:
            raise ValueError(f"video crf {crf} is outside {self.video_codec}'s {video.crfs.start}..{video.crfs.stop - 1}")
        if not 1 <= self.hash_bits <= 8:
            raise ValueError(f"hash bits must be 1..8, got {self.hash_bits}")
        return replace(self, image_quality=quality, video_crf=crf)

    def for_field(self, field: VideoField) -> "CodecOptions":
        """The options resolved, with the MLP's width this field gets where none was asked for."""
        rate = getattr(field, "rate", None)
        return replace(self.resolved(), mlp_bits=self.mlp_bits or (rate.config.mlp_bits if rate is not None else 16))


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder needs about the video besides the field: its method, frame rate and source frames."""

    method: str
    fps: float
    selection: FrameSelection
    source: Optional[SourceFingerprint] = None
    """The trained frames' fingerprint, which --reference scoring checks (None: a file written before them)."""


# ---------------------------------------------------------------- the field's parts


def grids(field: VideoField) -> list[tuple[str, GridEncoding]]:
    return [(name, module) for name, module in field.named_modules() if isinstance(module, GridEncoding)]


def per_frame_grids(field: VideoField) -> list[tuple[str, PerFrameGrid]]:
    return [(name, module) for name, module in field.named_modules() if isinstance(module, PerFrameGrid)]


def raw_8bit_bytes(field: VideoField) -> int:
    """Every grid value at one byte and everything else (the MLPs) at float32: the latents before any codec."""
    grid_values = sum(grid.params.numel() for _, grid in grids(field)) + sum(grid.grid.numel() for _, grid in per_frame_grids(field))
    return grid_values + 4 * sum(value.numel() for _, value in other_tensors(field))


def other_tensors(field: VideoField) -> list[tuple[str, Tensor]]:
    """Every entry of the state dict that is not a grid's parameter vector, in state-dict order."""
    grid_keys = {f"{name}.params" for name, _ in grids(field)} | {f"{name}.grid" for name, _ in per_frame_grids(field)}
    return [(key, value) for key, value in field.state_dict().items() if key not in grid_keys]


@dataclass(frozen=True)
class Level:
    grid: GridEncoding
    grid_name: str
    index: int
    geometry: LevelGeometry

    @property
    def name(self) -> str:
        """Its section's name: 'keyframes.xy level 3'."""
        return f"{self.grid_name} level {self.index}"

    @property
    def form(self) -> Literal["image", "video", "entropy", "latent"]:
        """`latent`: a grid trained for rate (rate.py), whose symbols are range-coded under its trained models."""
        if self.grid.quantiser is not None:
            return "latent"
        dims = self.grid.layout.num_dims
        return "image" if self.geometry.crop and dims == 2 else "video" if self.geometry.crop and dims == 3 else "entropy"

    @property
    def channels(self) -> int:
        return self.grid.config.features_per_level

    def bits(self, options: CodecOptions) -> int:
        """Image and video codecs take 8-bit samples; only entropy-coded levels may use fewer bits."""
        return options.hash_bits if self.form == "entropy" else 8

    def kind(self, options: CodecOptions) -> str:
        entropy_codec = "range" if options.latent_coder == "range" else options.hash_coder
        codec = {"image": options.image_codec, "video": options.video_codec, "entropy": entropy_codec, "latent": "range"}[self.form]
        return f"{self.form}:{codec}"

    def rows(self) -> Tensor:
        """The coded entries' rows of the grid's table, in coding order."""
        return torch.from_numpy(self.geometry.offset + self.geometry.entries).to(self.grid.params.device)

    def values(self) -> Tensor:
        """The coded entries [entries, channels] as stored (before any quantiser), on the CPU."""
        return self.grid.stored_table.detach()[self.rows()].cpu()

    def steps(self) -> Tensor:
        """A latent level's quantisation step per channel, float32 as the trained field's evaluation computes it."""
        return self.grid.quantiser.steps()[self.index].detach().cpu()

    def symbols(self) -> np.ndarray:
        """A latent level's coded entries as integer symbols: the stored values over the step, rounded."""
        return torch.round(self.values() / self.steps()).to(torch.int64).numpy()

    def write(self, values: Tensor) -> None:
        """Set the coded entries; the unreachable rest of the level becomes zero."""
        table, start = self.grid.stored_table.data, self.geometry.offset
        table[start : start + self.grid.layout.level_sizes[self.index]] = 0
        table[self.rows()] = values.to(table)


@dataclass(frozen=True)
class PerFrameLevel:
    """The reference code's per-frame grid (nvp-paper) as one dense 3D level, coded as the paper codes it:
    each feature channel a grayscale video of its frames' cell grids."""

    grid: PerFrameGrid
    name: str
    form = "video"

    @property
    def geometry(self) -> LevelGeometry:
        frames, height, width, _ = self.grid.grid.shape
        return LevelGeometry(0, False, (width, height, frames), np.arange(frames * height * width))

    @property
    def channels(self) -> int:
        return self.grid.config.features

    def bits(self, options: CodecOptions) -> int:
        return 8

    def kind(self, options: CodecOptions) -> str:
        return f"video:{options.video_codec}"

    def values(self) -> Tensor:
        return self.grid.grid.detach().reshape(-1, self.channels).cpu()

    def write(self, values: Tensor) -> None:
        self.grid.grid.data.copy_(values.reshape(self.grid.grid.shape))


def bake(field: VideoField) -> None:
    """A field whose rate-aware grids hold their coded values (symbols x step): they read them as they are."""
    for _, grid in grids(field):
        if grid.quantiser is not None:
            grid.quantiser.baked = True


def levels(field: VideoField) -> list[Level | PerFrameLevel]:
    return [
        Level(grid, name, index, level_geometry(grid, index))
        for name, grid in grids(field)
        for index in range(grid.config.num_levels)
    ] + [PerFrameLevel(grid, name) for name, grid in per_frame_grids(field)]


def quantised_levels(field: VideoField, options: CodecOptions) -> Iterator[tuple[Level, Tensor, Tensor]]:
    """Each level quantised to a range (all but latent levels) with its codes [entries, channels] and float32
    ranges [channels, 2]."""
    for level in levels(field):
        if level.form != "latent":
            yield (level, *quantise(level.values(), level.bits(options)))


def quantised(field: VideoField, options: CodecOptions = CodecOptions()) -> VideoField:
    """A copy of the field as lossless codecs would give it back: quantised grids, the other tensors at mlp_bits."""
    options = options.for_field(field)
    copied = copy.deepcopy(field)
    with torch.no_grad():
        copies = {copied_level.name: copied_level for copied_level in levels(copied)}
        for level, codes, ranges in quantised_levels(field, options):
            copies[level.name].write(dequantise(codes, ranges, level.bits(options)))
        for level in (level for level in levels(field) if level.form == "latent"):
            copies[level.name].write(torch.from_numpy(level.symbols()).float() * level.steps())
        bake(copied)
        state = {key: as_stored(value, options.mlp_bits) for key, value in as_trained(field, other_tensors(field), options.mlp_bits)}
        copied.load_state_dict(state, strict=False)
    return copied


# ---------------------------------------------------------------- config <-> header


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON types, nested dataclasses included (the class `_target` is implied)."""
    return {
        f.name: config_to_dict(value) if is_dataclass(value) else list(value) if isinstance(value, tuple) else value
        for f in fields(config)
        if f.name != "_target"
        for value in [getattr(config, f.name)]
    }


def config_from_dict(default: Any, values: dict[str, Any]) -> Any:
    """`default` with the stored values replaced in, recursively; raises ValueError on unknown keys or types."""
    if not isinstance(values, dict):
        raise ValueError(f"{type(default).__name__} is stored as {type(values).__name__}, not an object")
    known = {f.name for f in fields(default)} - {"_target"}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{type(default).__name__} has no option {sorted(unknown)[0]!r}")
    changes = {}
    for name, value in values.items():
        current = getattr(default, name)
        if is_dataclass(current):
            value = config_from_dict(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, float) and type(value) is int:
            value = float(value)
        if current is not None and value is not None and type(value) is not type(current):
            raise ValueError(f"option {name!r} is stored as {type(value).__name__}, not {type(current).__name__}")
        changes[name] = value
    return replace(default, **changes)


def tensor_schema(tensors: list[tuple[str, Tensor]]) -> int:
    """CRC32 of the names, shapes and dtypes of the other tensors: a decoder with another field layout refuses the file."""
    text = ";".join(f"{key}:{tuple(value.shape)}:{value.dtype}" for key, value in tensors)
    return zlib.crc32(text.encode())


# ---------------------------------------------------------------- encoding


def compress(field: VideoField, info: VideoInfo, options: CodecOptions = CodecOptions()) -> Container:
    """The field as a container: header and sections. `container.to_bytes` gives the file."""
    if info.method not in METHODS or type(field.config) is not type(METHODS[info.method].field):
        raise ValueError(f"the field is not one of method {info.method!r}'s: choose one of {', '.join(METHODS)}")
    options = options.for_field(field)
    ranges, planned, jobs, videos = [], [], [], []
    for level in (level for level in levels(field) if level.form == "latent"):
        payload = packed_level(level.symbols(), level.grid.quantiser.model.level_model(level.index))
        planned.append((level, level.steps().numpy().astype("<f4").tobytes() + payload))
    for level, codes, level_ranges in quantised_levels(field, options):
        ranges.append(level_ranges)
        crop_size = level.geometry.crop_size
        # Entries outside the crop (tiny-cuda-nn's wrap-around) are few: they go raw after the crop's parts.
        crop, extra = codes[:crop_size].numpy(), codes[crop_size:].numpy().tobytes()
        if level.form == "entropy" and options.latent_coder == "range":
            planned.append((level, latent_coder.pack(codes.numpy(), fit(codes.numpy()))))
        elif level.form == "entropy":
            planned.append((level, entropy.encode(codes.numpy().tobytes(), options.hash_coder, level.channels)))
        elif level.form == "image":
            width, height = level.geometry.crop
            images = crop.reshape(height, width, level.channels)
            parts = [encode_image(images[..., c], options.image_codec, options.image_quality) for c in range(level.channels)]
            planned.append((level, container.pack_parts(parts) + extra))
        else:
            width, height, frames = level.geometry.crop
            clips = crop.reshape(frames, height, width, level.channels)
            jobs += [VideoJob(options.video_codec, options.video_crf, frames, height, width)] * level.channels
            videos += [clips[..., c] for c in range(level.channels)]
            planned.append((level, extra))  # the streams go in front once the child has coded them
    streams = iter(encode_videos(jobs, videos))
    sections = [Section(RANGES_SECTION, "float32", b"".join(r.numpy().astype("<f4").tobytes() for r in ranges))]
    order = {level.name: number for number, level in enumerate(levels(field))}
    for level, payload in sorted(planned, key=lambda item: order[item[0].name]):
        if level.form == "video":
            payload = container.pack_parts([next(streams) for _ in range(level.channels)]) + payload
        sections.append(Section(level.name, level.kind(options), payload))
    others = as_trained(field, other_tensors(field), options.mlp_bits)
    packed = entropy.encode(_pack_tensors(others, options.mlp_bits), options.hash_coder)
    sections.append(Section(OTHERS_SECTION, f"{others_kind(options.mlp_bits)}:{options.hash_coder}", packed))
    meta = {
        "method": info.method,
        "field": config_to_dict(field.config),
        "video": {
            "frames": field.shape.num_frames, "height": field.shape.height, "width": field.shape.width, "fps": info.fps,
            "shots": list(field.shape.shot_starts),
        },
        "selection": asdict(info.selection),
        "codecs": {
            "image": options.image_codec, "image_quality": options.image_quality, "video": options.video_codec,
            "video_crf": options.video_crf, "hash": options.hash_coder, "mlp_bits": options.mlp_bits,
        },
        "quantisation": {"bits": 8, "hash_bits": options.hash_bits, "ranges": RANGES_SECTION},
        "tensors": tensor_schema(others),
        **({"source": info.source.to_dict()} if info.source is not None else {}),
    }
    return Container(meta, sections)


def others_kind(bits: int) -> str:
    return "int8" if bits == 8 else f"float{bits}"


def _byte_planes(values: Tensor) -> bytes:
    """A tensor's bytes as byte planes (all first bytes, then all second bytes, ...): the planes
    of float exponents are far more predictable than interleaved floats (float16 MLP: -14 % by lzma)."""
    return values.reshape(-1).view(torch.uint8).reshape(-1, values.element_size()).T.contiguous().numpy().tobytes()


def _from_byte_planes(data: Tensor, dtype: torch.dtype, count: int) -> Tensor:
    return data.reshape(dtype.itemsize, count).T.contiguous().reshape(-1).view(dtype)


def _pack_tensors(tensors: list[tuple[str, Tensor]], bits: int) -> bytes:
    parts = []
    for _, value in tensors:
        if row_coded(value, bits):
            parts += [_byte_planes(part) for part in row_codes(value.detach().cpu())]
        else:
            parts.append(_byte_planes(value.detach().cpu().to(stored_dtype(value, bits))))
    return b"".join(parts)


# ---------------------------------------------------------------- decoding


def decompress(path: str | Path) -> VideoField:
    """The field stored in a .nvp file (on the CPU, in eval mode), rebuilt from that file alone."""
    return decode(container.read(path), str(path))[0]


def decode(stored: Container, source: str) -> tuple[VideoField, VideoInfo]:
    """Rebuild the field of a verified container; any inconsistency raises CompressedFileError naming its section."""
    config, shape, info, hash_bits = _parse_meta(stored.meta, source)
    _check_memory(config, shape, source)
    with torch.random.fork_rng():  # every value is overwritten; don't disturb the caller's random stream
        field = config.setup(shape=shape).eval()
    field_levels = levels(field)
    expected = [RANGES_SECTION, *(level.name for level in field_levels), OTHERS_SECTION]
    if [section.name for section in stored.sections] != expected:
        raise corrupt(source, f"its sections do not match a {info.method} field of this shape")
    sections = {section.name: section for section in stored.sections}
    ranges = _decode_ranges(sections[RANGES_SECTION], [level for level in field_levels if level.form != "latent"], source)
    codes, pending, jobs, streams = {}, [], [], []
    for level in field_levels:
        try:
            decoded = _decode_level(level, sections[level.name], hash_bits)
        except CodecError as err:
            raise corrupt(source, f"section {level.name!r} {err}") from None
        if isinstance(decoded, (np.ndarray, Tensor)):
            codes[level.name] = decoded
        else:  # a video level: all streams go to one child process
            parts, extra = decoded
            width, height, frames = level.geometry.crop
            jobs += [VideoJob(sections[level.name].kind.partition(":")[2], 0, frames, height, width)] * level.channels
            streams += parts
            pending.append((level, extra))
    videos = iter(decode_videos(jobs, streams))
    for level, extra in pending:
        channels = [next(videos) for _ in range(level.channels)]
        for video in channels:
            if isinstance(video, CodecError):
                raise corrupt(source, f"section {level.name!r} {video}")
        codes[level.name] = _join(channels, extra)
    with torch.no_grad():
        ranged = iter(ranges)
        for level in field_levels:
            if level.form == "latent":
                level.write(codes[level.name])
            else:
                bits = hash_bits if level.form == "entropy" else 8
                level.write(dequantise(torch.from_numpy(codes[level.name]), next(ranged), bits))
        bake(field)
        _load_tensors(field, sections[OTHERS_SECTION], stored.meta, source)
    return field, info


def _parse_meta(meta: dict, source: str) -> tuple[VideoFieldConfig, VideoShape, VideoInfo, int]:
    try:
        method = meta["method"]
        if method not in METHODS:
            raise ValueError(f"it names method {method!r}, which this nvp-nerfstudio does not know")
        config = config_from_dict(METHODS[method].field, meta["field"])
        video, codecs, selection = meta["video"], meta["codecs"], meta["selection"]
        shape = VideoShape(video["frames"], video["height"], video["width"], tuple(video.get("shots", (0,))))
        if not all(type(n) is int and 1 <= n < 1 << 24 for n in (shape.num_frames, shape.height, shape.width)):
            raise ValueError(f"its video size {shape} is out of range")
        starts = shape.shot_starts
        if not (starts[:1] == (0,) and all(type(n) is int for n in starts) and list(starts) == sorted(set(starts)) and starts[-1] < shape.num_frames):
            raise ValueError("its shot list is malformed")
        if not isinstance(video["fps"], (int, float)) or not isinstance(selection, dict) or not isinstance(codecs, dict):
            raise ValueError("its video description is malformed")
        info = VideoInfo(method, float(video["fps"]), FrameSelection(**selection), SourceFingerprint.from_dict(meta.get("source")))
        if codecs.get("mlp_bits") not in MLP_BITS or not isinstance(meta["tensors"], int):
            raise ValueError("its tensor description is malformed")
        hash_bits = meta["quantisation"]["hash_bits"]
        if hash_bits not in range(1, 9):
            raise ValueError(f"its hash bits {hash_bits!r} are not 1..8")
    except (KeyError, TypeError, ValueError, VideoInputError) as err:  # VideoInputError: a bad frame selection
        problem = err.args[0] if isinstance(err, ValueError) and err.args else f"a header entry is missing or malformed ({err!r})"
        raise corrupt(source, f"the header: {problem}") from None
    return config, shape, info, hash_bits


def _check_memory(config: VideoFieldConfig, shape: VideoShape, source: str) -> None:
    """Refuse a field larger than free memory before allocating it (a damaged or hostile header could ask for any size)."""
    try:
        with torch.device("meta"):
            probe = config.setup(shape=shape)
    except Exception as err:  # noqa: BLE001 - whatever a stored config breaks while building, the header is bad
        raise corrupt(source, f"the header's field config does not build a field ({type(err).__name__}: {err})") from None
    needed = sum(value.numel() * value.element_size() for value in probe.state_dict().values())
    available = psutil.virtual_memory().available
    if needed > available:
        raise CompressedFileError(
            f"{source} describes a field of {needed / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB of memory is free: "
            "decode it on a larger machine (or the file is damaged: re-run nvp-compress)"
        )


def _decode_ranges(section: Section, field_levels: list[Level], source: str) -> list[Tensor]:
    counts = [level.channels for level in field_levels]
    if section.kind != "float32" or len(section.payload) != sum(counts) * 2 * 4:
        raise corrupt(source, f"section {section.name!r} does not hold one float32 [min, max] per level channel")
    values = torch.from_numpy(np.frombuffer(section.payload, dtype="<f4").astype(np.float32).reshape(-1, 2))
    if not torch.isfinite(values).all() or (values[:, 1] < values[:, 0]).any():
        raise corrupt(source, f"section {section.name!r} holds a range that is not finite and ordered")
    return list(values.split(counts))


def _decode_level(level: Level, section: Section, hash_bits: int) -> np.ndarray | Tensor | tuple[list[bytes], np.ndarray]:
    """A level's codes [entries, channels] (a latent level's values: symbols x step); for a video level, its
    streams and extra codes to decode in a batch."""
    form, _, codec = section.kind.partition(":")
    known = {"image": IMAGE_CODECS, "video": VIDEO_CODECS, "entropy": (*entropy.ENTROPY_CODERS, "range"), "latent": ("range",)}[level.form]
    if form != level.form or codec not in known:
        raise CodecError(f"has kind {section.kind!r} where a {level.form} codec was expected")
    geometry, channels = level.geometry, level.channels
    if form == "latent":
        steps = np.frombuffer(section.payload[: 4 * channels], dtype="<f4").astype(np.float32)
        if len(steps) != channels or not (np.isfinite(steps).all() and (steps > 0).all()):
            raise CodecError("does not start with a positive, finite float32 step per channel")
        symbols = latent_coder.unpack(section.payload[4 * channels :], channels, len(geometry.entries))
        return torch.from_numpy(symbols).float() * torch.from_numpy(steps)
    if form == "entropy":
        if codec == "range":
            codes = latent_coder.unpack(section.payload, channels, len(geometry.entries))
        else:
            data = entropy.decode(section.payload, codec, len(geometry.entries) * channels, channels)
            codes = np.frombuffer(bytearray(data), dtype=np.uint8).reshape(-1, channels)
        if codes.size and (codes.min() < 0 or codes.max() >= 2**hash_bits):
            raise CodecError(f"holds codes outside the {hash_bits}-bit range")
        return codes.astype(np.uint8)
    parts, extra = container.unpack_parts(section.payload, channels)
    extra_count = len(geometry.entries) - geometry.crop_size
    if len(extra) != extra_count * channels:
        raise CodecError(f"holds {len(extra)} bytes of entries outside the crop where {extra_count * channels} were expected")
    extra = np.frombuffer(extra, dtype=np.uint8).reshape(extra_count, channels)
    if form == "video":
        return parts, extra
    width, height = geometry.crop
    return _join([decode_image(part, codec, height, width) for part in parts], extra)


def _join(channels: list[np.ndarray], extra: np.ndarray) -> np.ndarray:
    """Codes [entries, channels] from each channel's crop (any shape, raster order) and the extra entries."""
    return np.concatenate([np.stack([channel.reshape(-1) for channel in channels], axis=-1), extra])


def _load_tensors(field: VideoField, section: Section, meta: dict, source: str) -> None:
    others = other_tensors(field)
    bits, coder = meta["codecs"]["mlp_bits"], section.kind.partition(":")[2]
    if tensor_schema(others) != meta["tensors"]:
        raise corrupt(source, "its other tensors were written for another layout of this field (another nvp-nerfstudio version?)")
    if section.kind != f"{others_kind(bits)}:{coder}" or coder not in entropy.ENTROPY_CODERS:
        raise corrupt(source, f"section {section.name!r} has kind {section.kind!r} where {others_kind(bits)} was expected")
    try:
        data = entropy.decode(section.payload, coder, sum(stored_size(value, bits) for _, value in others))
    except CodecError as err:
        raise corrupt(source, f"section {section.name!r} {err}") from None
    buffer, position, state = torch.from_numpy(np.frombuffer(bytearray(data), dtype=np.uint8)), 0, {}
    for key, value in others:
        dtype, size = stored_dtype(value, bits), stored_size(value, bits)
        part = buffer[position : position + size]
        if row_coded(value, bits):
            codes = _from_byte_planes(part[: value.numel()], torch.int8, value.numel()).reshape(len(value), -1)
            state[key] = from_row_codes(codes, _from_byte_planes(part[value.numel() :], torch.float32, len(value)), value)
        else:
            state[key] = _from_byte_planes(part, dtype, value.numel()).reshape(value.shape).to(value.dtype)
        position += size
    field.load_state_dict(state, strict=False)
