"""The ``scheduler`` command: parse the arguments, configure logging once, dispatch.

Exit codes shared by every subcommand: 0 success, 1 the command's negative answer
(``validate``: invalid input), 2 usage or I/O error. Nothing ends in a traceback:
an unexpected error prints one line (the traceback is logged at debug level).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import __version__
from .commands import admin, completion, nextruns, run, validate
from .logs import configure_logging

log = logging.getLogger(__name__)

COMMANDS = (run, validate, admin, nextruns, completion)
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scheduler", description="A declarative, cluster-aware task scheduler.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="default: info for run, else warning"
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="json: one object per line")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    configure_logging(args.log_level or getattr(args, "log_level_default", "warning"), args.log_format)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`scheduler validate dir | head`): no more output, no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        print(
            f"scheduler: internal error: {type(exc).__name__}: {exc} (run with --log-level debug for details)",
            file=sys.stderr,
        )
        return EXIT_USAGE
