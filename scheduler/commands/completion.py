"""``scheduler completion bash|zsh``: the shell completion script, generated from the parser itself.

shtab writes it from the argparse parser, so every subcommand, option and choice
(``-o wide``, ``-s FAILED``...) completes as the installed version parses it,
with nothing to keep in step by hand. Install it with, for bash,
``scheduler completion bash > /etc/bash_completion.d/scheduler`` (or
``source <(scheduler completion bash)`` in ``~/.bashrc``), and for zsh
``scheduler completion zsh > "${fpath[1]}/_scheduler"``.
"""

from __future__ import annotations

import argparse
from typing import Any

SHELLS = ("bash", "zsh")


def register(subparsers: Any) -> None:
    help = "print the shell completion script for bash or zsh"
    parser = subparsers.add_parser(
        "completion", help=help, description=help + " (see the README for where to install it)"
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(handler=completion)


def completion(args: argparse.Namespace) -> int:
    import shtab  # only this command needs it: the other commands start without it

    from ..cli import build_parser  # the whole parser, built as ``main`` builds it (cli imports this module)

    print(shtab.complete(build_parser(), shell=args.shell).rstrip("\n"))
    return 0
