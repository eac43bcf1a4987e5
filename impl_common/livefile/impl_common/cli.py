"""The ``livefile`` command: a host for the subcommands each installed module registers.

A module adds subcommands through the entry-point group ``livefile.commands``: each entry point is
a function ``register(subparsers)`` that adds its parsers and sets ``handler`` to a function taking
the parsed arguments and returning the exit status. A machine with only the upload client
therefore has ``livefile upload`` and nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

Handler = Callable[[argparse.Namespace], int]
ENTRY_POINT_GROUP = "livefile.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livefile",
        description="Live resources: files downloadable while they are still being uploaded.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        entry_point.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output left (``livefile upload … | head -1``): end quietly, as
        # other tools do, and keep Python from failing again while flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
