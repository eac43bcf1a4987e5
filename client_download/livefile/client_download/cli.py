"""``livefile get``, ``tail``, ``lines`` and ``status``: the download SDK on the command line.

Exit status: 0 when the resource ended COMPLETED (for ``status`` and ``lines``: when the
request was answered); 1 when it ended FAILED or anything else went wrong (unknown resource,
lost connection, timeout, a refused request), with one line on standard error; 2 for a
reference that is not a livefile reference; 141 when the reader of standard output went away
(``livefile tail REF | head``). A script therefore never takes a truncated file for a whole one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

from livefile.api.errors import LivefileError
from livefile.client_download.client import AsyncDownloadClient
from livefile.client_download.progress import DownloadProgress
from livefile.impl_common.progress_bars import wants_progress
from livefile.impl_common.references import DEFAULT_SERVER, reference_or_id

EXIT_FAILED = 1
EXIT_USAGE = 2

Command = Callable[[AsyncDownloadClient, argparse.Namespace], Coroutine[Any, Any, None]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``get``, ``tail``, ``lines`` and ``status`` to the ``livefile`` command."""

    def add(name: str, help_text: str, command: Command) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "reference", help="the resource's reference: ws(s)://…/ws/streaming/download/ID"
            " or http(s)://…/resources/ID, or its bare ID (on --server)",
        )  # fmt: skip
        parser.add_argument(
            "--server",
            default=os.environ.get("LIVEFILE_SERVER", DEFAULT_SERVER),
            help="the server of a bare ID: ws(s)://, http(s):// or HOST:PORT (LIVEFILE_SERVER,"
            f" default {DEFAULT_SERVER}); a full reference names its own",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="limit for connecting and for each reply of the server (default 30)",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("LIVEFILE_TOKEN"),
            help="access token (JWT) if the server requires one; LIVEFILE_TOKEN keeps it out"
            " of the process list. A reference with its own ?token= is read with that token",
        )
        parser.set_defaults(handler=_handler(command))
        return parser

    get = add("get", "download a resource, following it while it grows, to its end", _get)
    get.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    shown = get.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar on stderr even when it is not a terminal",
    )
    shown.add_argument("--quiet", action="store_true", help="no progress bar, even on a terminal")

    tail = add("tail", "print a resource as it grows, until it ends", _tail)
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "-c",
        "--bytes",
        type=non_negative,
        metavar="N",
        help="start N bytes before the current end (default: from the first byte)",
    )
    start.add_argument(
        "-n",
        "--lines",
        type=non_negative,
        metavar="N",
        help="print lines, starting N complete lines before the current end"
        " (resources uploaded with line access)",
    )

    lines = add(
        "lines",
        "print lines of a resource uploaded with line access (numbered from 0); when more"
        " lines follow, or may still come, stderr says where the next page starts",
        _lines,
    )
    lines.add_argument(
        "--start",
        type=non_negative,
        default=0,
        help="first line, numbered from 0 (default 0); at most the number of lines so far",
    )
    lines.add_argument(
        "--count",
        type=non_negative,
        default=100,
        help="at most N lines (default 100): fewer when the resource has fewer",
    )

    add("status", "print the current status as JSON", _status)


async def _get(download: AsyncDownloadClient, args: argparse.Namespace) -> None:
    to_file = args.output and args.output != "-"
    sink = await asyncio.to_thread(open, args.output, "wb") if to_file else sys.stdout.buffer
    bar = DownloadProgress(download) if wants_progress(args.progress, args.quiet) else None
    try:
        async for piece in download.iter_bytes():
            # Written in place as the bytes arrive, so that the file can itself be followed.
            await _write(sink, piece)
            if bar is not None:
                bar.update(len(piece))
    finally:
        if bar is not None:
            bar.close()
        if to_file:
            await asyncio.to_thread(sink.close)


async def _tail(download: AsyncDownloadClient, args: argparse.Namespace) -> None:
    status = download.status
    if args.lines is None:
        start = 0 if args.bytes is None else max(0, status.current_size - args.bytes)
        async for piece in download.iter_bytes(start):
            await _write(sys.stdout.buffer, piece)
        return
    # Without line access, iter_lines refuses at once (RequestError UNSUPPORTED).
    async for line in download.iter_lines(max(0, (status.number_of_lines or 0) - args.lines)):
        await _write(sys.stdout.buffer, line.encode("utf-8"))


async def _lines(download: AsyncDownloadClient, args: argparse.Namespace) -> None:
    position, wanted = args.start, args.count
    while True:
        page = await download.lines_page(position, wanted)
        await _write(sys.stdout.buffer, "".join(page.lines).encode("utf-8"))
        position, wanted = page.next_start, wanted - len(page.lines)
        if not page.more or not page.lines or wanted <= 0:
            break
    if not page.complete:
        # On stderr, so that the lines themselves stay what stdout holds.
        total = page.number_of_lines if page.number_of_lines is not None else "?"
        state = "more follow" if page.more else "more may come: the resource is still growing"
        print(f"livefile: next page: --start {position} ({total} lines so far; {state})",
              file=sys.stderr)  # fmt: skip


async def _status(download: AsyncDownloadClient, args: argparse.Namespace) -> None:
    await _write(sys.stdout.buffer, json.dumps(download.status.to_wire()).encode() + b"\n")


async def _write(sink: BinaryIO, data: bytes) -> None:
    # In a thread, so that a slow reader of our output does not stop the event loop (which
    # answers the server's pings) while the server waits for us.
    await asyncio.to_thread(_write_and_flush, sink, data)


def _write_and_flush(sink: BinaryIO, data: bytes) -> None:
    sink.write(data)
    sink.flush()


def _handler(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            reference = reference_or_id(args.reference, args.server)
            download = AsyncDownloadClient(reference, timeout=args.timeout, token=args.token)
        except ValueError as exc:
            return _fail(exc, EXIT_USAGE)
        try:
            asyncio.run(_connected(download, command, args))
        except BrokenPipeError:
            raise  # nobody reads our output any more: the command host ends quietly (141)
        except (LivefileError, OSError) as exc:
            return _fail(exc, EXIT_FAILED)
        return 0

    return handler


async def _connected(
    download: AsyncDownloadClient, command: Command, args: argparse.Namespace
) -> None:
    async with download:
        await command(download, args)


def _fail(error: Exception, code: int) -> int:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"livefile: {message}", file=sys.stderr)
    return code


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value
