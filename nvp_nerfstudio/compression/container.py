"""The .nvp file format: a checksummed header, then checksummed sections, every size checked on read.

Layout (little endian):

    b"NVPC" | version u8 | header length u32 | header CRC32 u32 | header | section payloads...

The header is raw-deflated JSON: the caller's metadata plus the section table, a list of
[name, kind, length, CRC32] in file order. Payloads follow back to back, nothing after the last.
Reading checks every length against the bytes that remain before it slices or decompresses
anything, and every CRC before any payload is decoded, so a truncated or damaged file fails
with one `CompressedFileError` naming the bad part instead of decoding garbage.

Core module: standard library only.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvp_nerfstudio.data.output import written_atomically

MAGIC = b"NVPC"
VERSION = 1
PREFIX = struct.Struct("<4sBII")  # magic, version, header length, header CRC32
MAX_HEADER_JSON = 1 << 24  # a header inflates to at most this; larger is a damaged or hostile file
MAX_VARINT_BYTES = 10


class CompressedFileError(ValueError):
    """A .nvp file that cannot be decoded; the message names the file, the bad part and what to do."""


class CodecError(ValueError):
    """A payload its codec cannot decode into what the header promises; the decoder names the section."""


def corrupt(source: str, problem: str) -> CompressedFileError:
    return CompressedFileError(f"{source} is corrupt: {problem}; re-run nvp-compress")


@dataclass(frozen=True)
class Section:
    name: str
    """Human-readable, unique in a file: 'positional level 3'."""
    kind: str
    """How the payload is coded: 'image:jpeg', 'video:x265', 'entropy:lzma', 'float16', ..."""
    payload: bytes


@dataclass(frozen=True)
class Container:
    meta: dict[str, Any]
    """Everything the decoder needs besides the payloads (JSON types only)."""
    sections: list[Section]

    def section(self, name: str) -> Section:
        return next(section for section in self.sections if section.name == name)


def to_bytes(container: Container) -> bytes:
    table = [[s.name, s.kind, len(s.payload), zlib.crc32(s.payload)] for s in container.sections]
    text = json.dumps({**container.meta, "sections": table}, separators=(",", ":"), sort_keys=True)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the CRC already guards it
    header = deflate.compress(text.encode()) + deflate.flush()
    prefix = PREFIX.pack(MAGIC, VERSION, len(header), zlib.crc32(header))
    return b"".join([prefix, header, *(s.payload for s in container.sections)])


def from_bytes(data: bytes, source: str) -> Container:
    """Parse and verify a whole file (sizes, checksums, header structure); payloads are not decoded."""
    if len(data) < PREFIX.size or data[:4] != MAGIC:
        raise CompressedFileError(f"{source} is not an .nvp file (no NVPC signature): pass a file written by nvp-compress")
    _, version, header_length, header_crc = PREFIX.unpack_from(data)
    if version != VERSION:
        raise CompressedFileError(
            f"{source} has .nvp format version {version}; this nvp-nerfstudio reads version {VERSION}: "
            "decode it with the version that wrote it, or re-run nvp-compress"
        )
    position = PREFIX.size
    if header_length > len(data) - position:
        raise corrupt(source, f"the header claims {header_length} bytes but only {len(data) - position} follow (truncated file?)")
    header = data[position : position + header_length]
    if zlib.crc32(header) != header_crc:
        raise corrupt(source, "the header fails its checksum")
    position += header_length
    meta = _parse_header(header, source)
    sections = []
    for name, kind, length, crc in meta.pop("sections"):
        if length > len(data) - position:
            raise corrupt(source, f"section {name!r} is truncated ({len(data) - position} of {length} bytes)")
        payload = data[position : position + length]
        if zlib.crc32(payload) != crc:
            raise corrupt(source, f"section {name!r} fails its checksum")
        sections.append(Section(name, kind, payload))
        position += length
    if position != len(data):
        raise corrupt(source, f"{len(data) - position} unexpected bytes follow the last section")
    return Container(meta, sections)


def _parse_header(header: bytes, source: str) -> dict[str, Any]:
    inflate = zlib.decompressobj(-15)
    try:
        text = inflate.decompress(header, MAX_HEADER_JSON)
        meta = json.loads(text) if inflate.eof and not inflate.unconsumed_tail and not inflate.unused_data else None
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        meta = None
    table = meta.get("sections") if isinstance(meta, dict) else None
    entry_types = (str, str, int, int)
    if not isinstance(table, list) or not all(
        isinstance(entry, list) and len(entry) == 4 and all(type(v) is t for v, t in zip(entry, entry_types)) and entry[2] >= 0
        for entry in table
    ):
        raise corrupt(source, "the header does not parse as an .nvp header")
    if len({entry[0] for entry in table}) != len(table):
        raise corrupt(source, "the header names a section twice")
    return meta


def read(path: str | os.PathLike) -> Container:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CompressedFileError(f"cannot read {path}: {err.strerror}") from None
    return from_bytes(data, str(path))


def write(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename: never a half file, never a clobbered old one."""
    with written_atomically(Path(path)) as temporary:
        temporary.write_bytes(data)


def pack_parts(parts: list[bytes]) -> bytes:
    """Several blobs in one payload: their lengths as LEB128 varints, then the blobs."""
    return b"".join([*(_varint(len(part)) for part in parts), *parts])


def unpack_parts(payload: bytes, count: int) -> tuple[list[bytes], bytes]:
    """Inverse of pack_parts for `count` blobs; returns them and whatever follows the last one."""
    lengths, position = [], 0
    for _ in range(count):
        length, position = _read_varint(payload, position)
        lengths.append(length)
    if sum(lengths) > len(payload) - position:
        raise CodecError(f"its parts claim {sum(lengths)} bytes but only {len(payload) - position} follow")
    parts = []
    for length in lengths:
        parts.append(payload[position : position + length])
        position += length
    return parts, payload[position:]


def pack_list(parts: list[bytes]) -> bytes:
    """pack_parts with the number of blobs in front."""
    return _varint(len(parts)) + pack_parts(parts)


def unpack_list(payload: bytes) -> tuple[list[bytes], bytes]:
    count, position = _read_varint(payload, 0)
    if count > len(payload) - position:  # every blob needs at least its length byte
        raise CodecError(f"it claims {count} parts in {len(payload)} bytes")
    return unpack_parts(payload[position:], count)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(payload: bytes, position: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
        if position >= len(payload):
            break
        byte = payload[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
    raise CodecError("its part lengths are cut short")
