"""nvp-compress: a trained run's field as one .nvp file (8-bit latents through image, video and entropy coders).

The file is all a decoder needs (nvp-decompress): no checkpoint, no training data. Its size is the
number that counts, header, quantisation ranges and MLP included; bpp = its bits per source pixel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro
from rich.console import Console
from rich.table import Table

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import Container
from nvp_nerfstudio.compression.field_codec import CodecOptions, compress
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.metrics import bits_per_pixel
from nvp_nerfstudio.plugin.runs import check_run, load_field

CONSOLE = Console()


@dataclass
class CompressConfig:
    load_config: Path
    """config.yml of a trained run (outputs/CLIP/nvp/TIMESTAMP/config.yml)."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """The .nvp file to write (replaced only once the new one is complete)."""
    codecs: tyro.conf.OmitArgPrefixes[CodecOptions] = CodecOptions()


def breakdown(stored: Container, total: int, shape: VideoShape) -> Table:
    """Bytes of every section, and of the header (metadata and section table) as what remains."""
    table = Table("section", "kind", "bytes", "share", "bpp", title="nvp-compress: bytes by section")
    payloads = sum(len(section.payload) for section in stored.sections)
    rows = [("header", "deflated JSON", total - payloads), *((s.name, s.kind, len(s.payload)) for s in stored.sections)]
    for name, kind, size in rows:
        table.add_row(name, kind, f"{size:,}", f"{100 * size / total:.1f} %", f"{bits_per_pixel(size, shape):.4f}")
    table.add_section()
    table.add_row("total (file size)", "", f"{total:,}", "100 %", f"{bits_per_pixel(total, shape):.4f}")
    return table


@command()
def main(config: CompressConfig) -> None:
    check_run(config.load_config)
    if config.output.is_dir() or not config.output.parent.is_dir():
        raise SystemExit(f"error: cannot write {config.output}: give a file path in an existing folder, e.g. clip.nvp")
    field, info, checkpoint = load_field(config.load_config)
    start = time.perf_counter()
    try:
        stored = compress(field, info, config.codecs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    data = container.to_bytes(stored)
    container.write(config.output, data)
    seconds = time.perf_counter() - start
    CONSOLE.print(breakdown(stored, len(data), field.shape))
    shape = field.shape
    CONSOLE.print(
        f"Wrote {config.output}: {len(data):,} bytes, {bits_per_pixel(len(data), shape):.4f} bpp "
        f"({shape.num_frames} frames of {shape.width}x{shape.height}) in {seconds:.1f} s, from {checkpoint}"
    )


def entrypoint() -> None:
    main(parse(CompressConfig))


if __name__ == "__main__":
    entrypoint()
