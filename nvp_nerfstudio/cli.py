"""What every command shares: its process set up for fields (the allocator's trade, memory.py), and a user's
mistake (a missing or damaged input, an unwritable output) reported as one error line, not a traceback.

Core module: no nerfstudio.
"""

from __future__ import annotations

import functools
from typing import Callable, Literal, TypeVar

from nvp_nerfstudio.compression.container import CompressedFileError
from nvp_nerfstudio.data.output import OutputPathError
from nvp_nerfstudio.data.video import VideoInputError
from nvp_nerfstudio.memory import return_freed_memory, reuse_freed_memory

USER_ERRORS = (VideoInputError, OutputPathError, CompressedFileError)
Config = TypeVar("Config")
Result = TypeVar("Result")


def command(memory: Literal["reuse", "return"] = "reuse") -> Callable[[Callable[[Config], Result]], Callable[[Config], Result]]:
    """A command's main: the allocator set for speed (`reuse`: freed blocks are kept for the next step) or
    for a bounded peak (`return`: nvp-long's segments), and USER_ERRORS turned into `error: ...` on exit."""

    def decorate(main: Callable[[Config], Result]) -> Callable[[Config], Result]:
        @functools.wraps(main)
        def run(config: Config) -> Result:
            if memory == "reuse":
                reuse_freed_memory()
            else:
                return_freed_memory()
            try:
                return main(config)
            except USER_ERRORS as err:
                raise SystemExit(f"error: {err}") from None

        return run

    return decorate
