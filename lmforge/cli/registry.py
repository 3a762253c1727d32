"""The registry of ``lmforge`` commands.

Each command lives in its own module under ``lmforge/cli/`` and declares what it adds to the
command line as ``COMMANDS``, a list of :class:`Command` records (usually one)::

    COMMANDS = [Command("info", "architecture, parameters, tokenizer, provenance",
                        add_arguments, run)]

:data:`COMMAND_MODULES` names those modules, in the order ``lmforge --help`` lists them;
adding a command is one new module and one line here (see docs/cli.md). Code outside the
package (a plugin, a test) can add one at run time with :func:`register`.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

COMMAND_MODULES: tuple[str, ...] = (
    "quickstart",
    "tokenizer",
    "train",
    "generate",
    "evaluate",     # lmforge eval
    "info",
    "convert",      # lmforge import, lmforge export
    "average",
    "quantize",     # lmforge quantize
    "classify",
    "embed",
    "translate",
    "chat",
    "serve",
    "explain",
    "attention",
    "forecast",
)


@dataclass(frozen=True)
class Command:
    """One ``lmforge NAME`` command.

    ``add_arguments(parser)`` declares its arguments on its own argparse sub-parser;
    ``run(args)`` does the work with the parsed arguments and returns the exit code (``None``
    means 0). Errors are left to :func:`lmforge.cli.main.main`, which maps them to exit codes.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None  # longer text for ``lmforge NAME --help`` (default: help)


_registered: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add ``command`` after the built-in ones (a later one of the same name replaces it)."""
    _registered[command.name] = command
    return command


def unregister(name: str) -> None:
    """Remove a command added with :func:`register` (no error if there is none)."""
    _registered.pop(name, None)


def commands() -> list[Command]:
    """Every command, in ``lmforge --help`` order: those of :data:`COMMAND_MODULES`, then the
    ones added with :func:`register`. Two commands of one name are a programming error."""
    found: dict[str, Command] = {}
    for module in COMMAND_MODULES:
        for cmd in importlib.import_module(f"{__package__}.{module}").COMMANDS:
            if cmd.name in found:
                raise RuntimeError(f"two lmforge commands are named {cmd.name!r}")
            found[cmd.name] = cmd
    return list({**found, **_registered}.values())
