"""``lmforge``: builds the command line from the registry (:mod:`lmforge.cli.registry`), parses
it, runs the chosen command and maps its errors to exit codes, all in one place:

==========================  =========================================================  ====
``LMForgeError``            ``lmforge COMMAND: error: MESSAGE`` (bad input, meant for a  2
                            person: it names the file, line or field and the fix)
``OSError``                 ``lmforge COMMAND: error: PATH: OS MESSAGE``                 2
``KeyboardInterrupt``       ``lmforge COMMAND: interrupted``                             130
any other exception         ``lmforge COMMAND: internal error: TYPE: MESSAGE (...)``     1
bad arguments (argparse)    argparse's usage and message                                 2
==========================  =========================================================  ====

Each is one line on stderr, without a traceback; with ``LMFORGE_DEBUG=1`` in the environment
the exception propagates instead, traceback and all.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..errors import LMForgeError
from .output import guard_outputs, warn
from .registry import Command, commands

DESCRIPTION = ("Build, train, evaluate, inspect and use transformer models on your own machine. "
               "`lmforge quickstart` trains a small GPT in a few minutes.")


def build_parser(cmds: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The ``lmforge`` parser with one sub-parser per registered command (or per ``cmds``);
    the parsed arguments carry the chosen :class:`Command` as ``args.cli_command``."""
    p = argparse.ArgumentParser(prog="lmforge", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in commands() if cmds is None else cmds:
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.add_arguments(sp)
        sp.set_defaults(cli_command=cmd)
    return p


def debugging() -> bool:
    """``LMFORGE_DEBUG`` is set (to anything but empty or 0): let exceptions propagate."""
    return os.environ.get("LMFORGE_DEBUG", "") not in ("", "0")


def error_line(command: str, err: BaseException) -> tuple[str, int]:
    """The one stderr line and the exit code for an exception that ended ``command``."""
    where = f"lmforge {command}"
    if isinstance(err, LMForgeError):
        return f"{where}: error: {err}", 2
    if isinstance(err, KeyboardInterrupt):
        return f"{where}: interrupted", 130
    if isinstance(err, OSError):
        message = err.strerror or str(err)
        path = f"{err.filename}: " if err.filename is not None else ""
        return f"{where}: error: {path}{message}", 2
    return (f"{where}: internal error: {type(err).__name__}: {err} "
            "(run with LMFORGE_DEBUG=1 for the traceback)", 1)


def main(argv: list[str] | None = None) -> int:
    """Run ``lmforge`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.
    Argument errors exit through argparse (``SystemExit(2)``), as usual."""
    args = build_parser().parse_args(argv)
    try:
        guard_outputs(args)
        code = args.cli_command.run(args)
    except (Exception, KeyboardInterrupt) as err:
        if debugging():
            raise
        line, code = error_line(args.command, err)
        warn(line)
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
