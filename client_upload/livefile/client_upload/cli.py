"""``livefile upload``: upload a file (or follow a live one), printing the reference at once.

Standard output gets the reference as its first line, the moment the server sends it, and the
final result as JSON at the end; progress goes to standard error (when it is a terminal, or
with ``--progress``). Exit status: 0 when the upload completed, 1 when it failed, 2 for usage
errors, 130 when interrupted (the upload is then aborted and the resource FAILED).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from livefile.api.errors import LivefileError
from livefile.client_upload.client import AsyncUploadClient
from livefile.client_upload.live_file import Rotation
from livefile.client_upload.upload import UploadResult
from livefile.impl_common.references import DEFAULT_SERVER
from livefile.impl_common.transcoding import TranscodingError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ProgressLine:
    """``sent / stored`` on one rewritten line of standard error, at most five times a second."""

    INTERVAL = 0.2

    def __init__(self) -> None:
        self._last = 0.0
        self.shown = False

    def __call__(self, sent: int, acknowledged: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.INTERVAL:
            self._last = now
            self._show(sent, acknowledged)

    def _show(self, sent: int, acknowledged: int) -> None:
        sys.stderr.write(f"\rsent {sent / 1e6:10.1f} MB, stored {acknowledged / 1e6:10.1f} MB")
        sys.stderr.flush()
        self.shown = True

    def end(self, result: UploadResult | None = None) -> None:
        """Show the final figures (if any) and end the line."""
        if result is not None:
            self._show(result.size, result.size)
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False


class LiveEnd:
    """The end of a live upload: the first SIGINT/SIGTERM, or ``idle_timeout`` seconds without
    growth. A second signal gives up: the upload is aborted."""

    def __init__(self, path: Path, idle_timeout: float | None) -> None:
        self.path = path
        self.idle_timeout = idle_timeout
        self.stopped = False
        self._size = -1
        self._grew_at = time.monotonic()
        self._task = asyncio.current_task()

    def stop(self) -> None:
        if self.stopped and self._task is not None:
            self._task.cancel()
        self.stopped = True

    def __call__(self) -> bool:
        if self.stopped:
            return True
        if self.idle_timeout is None:
            return False
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:  # rotated away, not re-created yet: no growth
            size = self._size
        if size != self._size:
            self._size, self._grew_at = size, time.monotonic()
        return time.monotonic() - self._grew_at >= self.idle_timeout


def _print_reference(reference: str) -> None:
    print(reference, flush=True)


async def _upload(args: argparse.Namespace, progress: ProgressLine | None) -> UploadResult:
    path = Path(args.file)
    client = AsyncUploadClient(
        args.server,
        context_id=args.context,
        timeout=args.timeout,
        token=args.token,
        checksum_algorithm=args.checksum,
        max_idle_connections=0,  # one upload: nothing to keep its connection for
    )
    if not args.live:
        return await client.upload_file(
            path,
            filename=args.filename,
            mime_type=args.mime_type,
            supports_line_access=args.lines,
            charset=args.charset,
            on_reference=_print_reference,
            progress=progress,
        )
    end = LiveEnd(path, args.idle_timeout)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, end.stop)
    return await client.upload_live_file(
        path,
        until=end,
        filename=args.filename,
        mime_type=args.mime_type,
        supports_line_access=args.lines,
        charset=args.charset,
        on_reference=_print_reference,
        progress=progress,
        on_rotation=_report_rotation,
    )


def _report_rotation(rotation: Rotation) -> None:
    print(f"livefile: {rotation.describe()}", file=sys.stderr, flush=True)


def _result_json(result: UploadResult) -> str:
    return json.dumps(
        {
            "reference": result.reference,
            "resourceId": result.resource_id,
            "size": result.size,
            "checksum": result.checksum,
            "checksumAlgorithm": result.checksum_algorithm.value,
            "status": result.status.to_wire(),
        }
    )


def upload(args: argparse.Namespace) -> int:
    """The ``upload`` command's handler."""
    if not Path(args.file).is_file():
        return _fail(f"{args.file}: no such file", EXIT_USAGE)
    if args.idle_timeout is not None and not args.live:
        return _fail("--idle-timeout needs --live", EXIT_USAGE)
    show_progress = args.progress or (sys.stderr.isatty() and not args.quiet)
    progress = ProgressLine() if show_progress else None
    try:
        result = asyncio.run(_upload(args, progress))
    except (LivefileError, TranscodingError, OSError) as exc:
        return _fail(f"upload failed: {type(exc).__name__}: {exc}", EXIT_FAILED, progress)
    except ValueError as exc:  # a bad server URL or bad metadata, refused before connecting
        return _fail(str(exc).splitlines()[0], EXIT_USAGE, progress)
    except asyncio.CancelledError:  # a second signal during a live upload
        return _fail("upload interrupted and aborted", EXIT_INTERRUPTED, progress)
    if progress is not None:
        progress.end(result)
    print(_result_json(result), flush=True)
    return 0


def _fail(message: str, status: int, progress: ProgressLine | None = None) -> int:
    if progress is not None:
        progress.end()
    print(f"livefile: {message}", file=sys.stderr, flush=True)
    return status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefile upload`` (an entry point of the ``livefile.commands`` group)."""
    parser = subparsers.add_parser(
        "upload",
        help="upload a file; print its reference at once",
        description="Upload FILE to a livefile server. The reference is printed first, the"
        " final result (JSON) last.",
    )
    parser.add_argument("file", help="the file to upload")
    parser.add_argument(
        "--server",
        default=os.environ.get("LIVEFILE_SERVER", DEFAULT_SERVER),
        help=f"server URL: ws(s)://, http(s):// or HOST:PORT (LIVEFILE_SERVER,"
        f" default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="follow a file that is still being written, until Ctrl-C/SIGTERM (a second one"
        " aborts)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="with --live: also end after SECONDS without growth",
    )
    parser.add_argument("--context", help="upload context id (streamingUploadContextId)")
    parser.add_argument(
        "--token",
        default=os.environ.get("LIVEFILE_TOKEN"),
        help="access token (JWT) if the server requires one; LIVEFILE_TOKEN keeps it out"
        " of the process list",
    )
    parser.add_argument("--filename", help="name to store (default: the file's name)")
    parser.add_argument("--mime-type", help="MIME type (default: guessed from the name)")
    parser.add_argument(
        "--lines", action="store_true", help="a text file with line access (supportsLineAccess)"
    )
    parser.add_argument("--charset", help="the text's charset; stored as UTF-8 (e.g. latin-1)")
    parser.add_argument(
        "--checksum",
        choices=["crc32c", "crc32", "sha256", "md5"],
        default="crc32c",
        help="end-to-end check of the bytes (default crc32c, the fastest)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per wait")
    parser.add_argument("--progress", action="store_true", help="show progress on stderr")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.set_defaults(handler=upload)
