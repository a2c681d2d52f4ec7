"""What every command shares: its process set up for fields (the allocator's trade, memory.py), and a user's
mistake (a missing or damaged input, an unwritable output, a bad flag) reported as one error line, not a
traceback or a box.

Core module: no nerfstudio.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Iterator, Literal, Optional, TypeVar

import tyro
from tyro import _errors as tyro_errors

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


@contextlib.contextmanager
def one_line_parse_errors() -> Iterator[None]:
    """tyro.cli within it ends a bad command line with `error: ...; see PROG --help`, one line, where tyro draws a
    box. (tyro's hook for this is private: pyproject.toml pins the tyro it was written against; an event it does
    not know keeps tyro's box.)"""

    def handle(event: tyro_errors.ParseErrorEvent) -> None:
        problem = parse_problem(event)
        if problem is not None:
            raise SystemExit(f"error: {problem}; see {os.path.basename(event.prog.split()[0])} --help")

    with tyro_errors.on_parse_error(handle):
        yield


def parse_problem(event: tyro_errors.ParseErrorEvent) -> Optional[str]:
    if isinstance(event, tyro_errors.UnrecognizedArgs):
        return f"unrecognized option{'s' * (len(event.tokens) > 1)} {' '.join(event.tokens)}"
    if isinstance(event, tyro_errors.MissingArgs):
        unrecognized = f"; unrecognized {' '.join(event.unrecognized_tokens)}" if event.unrecognized_tokens else ""
        return "missing " + ", ".join(missing.arg.display_name() for missing in event.missing_arguments) + unrecognized
    if isinstance(event, tyro_errors.MissingSubcommand):
        found = f", not {event.found_token!r}" if event.found_token is not None else ""
        return f"expected a command, one of {', '.join(event.subcommand_spec.parser_from_name)}{found}"
    if isinstance(event, tyro_errors.InvalidChoice):
        return f"{event.argument.display_name()} {event.value!r} is not one of {', '.join(event.choices)}"
    if isinstance(event, tyro_errors.BadValue):
        given = f"does not take {event.offending_value!r}" if event.offending_value is not None else "needs more values"
        return f"{event.argument.display_name()} {given}"
    if isinstance(event, tyro_errors.InstantiationFailure):
        # tyro's message: why the value fits no type, then, for a union such as None | int, each type's own error
        # ("- <class 'int'>: invalid literal for int() with base 10: 'abc'"): the last type's says what is wrong.
        lines = [line.strip() for line in event.message.strip().splitlines() if line.strip()]
        errors = [line.split(">: ", 1)[1] for line in lines if line.startswith("- <class") and ">: " in line]
        detail = (errors[-1] if errors else lines[0]).rstrip(".")
        return f"{event.argument.display_name()}: {detail}" if event.argument is not None else detail
    return None


def parse(config_type: Callable[..., Config]) -> Config:
    """tyro.cli(config_type), a bad command line ending in one error line."""
    with one_line_parse_errors():
        return tyro.cli(config_type)
