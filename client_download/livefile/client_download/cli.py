"""``livefile get``, ``tail``, ``lines`` and ``status``: the download SDK on the command line.

Every command exits 0 only when the resource ended COMPLETED (``status`` and ``lines`` when the
request succeeded), so that a script never takes a truncated file for a complete one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

from livefile.api.errors import LivefileError, ResourceFailedError
from livefile.client_download.client import AsyncDownloadClient

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except ResourceFailedError as exc:
            print(f"livefile: {exc}", file=sys.stderr)
            return 1
        except (LivefileError, ValueError, OSError) as exc:
            print(f"livefile: {exc}", file=sys.stderr)
            return 1

    return handler


async def _get(args: argparse.Namespace) -> int:
    async with AsyncDownloadClient(args.reference, timeout=args.timeout) as download:
        if args.output and args.output != "-":
            await download.save(args.output)
        else:
            await _copy(download, sys.stdout.buffer)
    return 0


async def _copy(download: AsyncDownloadClient, sink: BinaryIO) -> None:
    async for piece in download.iter_bytes():
        sink.write(piece)
        sink.flush()


async def _tail(args: argparse.Namespace) -> int:
    async with AsyncDownloadClient(args.reference, timeout=args.timeout) as download:
        if args.lines is None:
            await _copy(download, sys.stdout.buffer)
            return 0
        # Like tail -f: start N complete lines before the current end, then follow.
        available = download.status.number_of_lines
        if available is None:
            print("livefile: the resource has no line access; use tail without -n", file=sys.stderr)
            return 2
        start = max(0, available - args.lines)
        async for line in download.iter_lines(start):
            sys.stdout.write(line)
            sys.stdout.flush()
    return 0


async def _lines(args: argparse.Namespace) -> int:
    async with AsyncDownloadClient(args.reference, timeout=args.timeout) as download:
        for line in await download.lines(args.start, args.count):
            sys.stdout.write(line)
    sys.stdout.flush()
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with AsyncDownloadClient(args.reference, timeout=args.timeout) as download:
        print(json.dumps(download.status.to_wire()))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, help_text: str, command: Command) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("reference", help="the resource's reference (ws:// or http:// URL)")
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="seconds to wait for the server at each step (default 30)",
        )
        parser.set_defaults(handler=_run(command))
        return parser

    get = add("get", "download a resource, following it to its end", _get)
    get.add_argument("-o", "--output", help="file to write (default: standard output)")
    tail = add("tail", "print a resource as it grows, until it ends (like tail -f)", _tail)
    tail.add_argument(
        "-n",
        "--lines",
        type=int,
        metavar="N",
        help="print lines, starting N complete lines before the current end",
    )
    lines = add("lines", "print lines of a text resource", _lines)
    lines.add_argument("--start", type=int, default=0, help="first line (from 0)")
    lines.add_argument("--count", type=int, default=100, help="number of lines")
    add("status", "print the current status as JSON", _status)
