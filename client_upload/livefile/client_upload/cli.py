"""``livefile upload``: upload a file (or follow a live one), printing the reference at once.

Standard output gets the reference as its first line, the moment the server sends it, and the
final status as JSON at the end; progress goes to standard error. Exit status: 0 when the
upload completed, 1 when it failed, 2 for usage errors.
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
from livefile.client_upload.client import AsyncUploadClient, guess_mime_type
from livefile.impl_common.transcoding import TranscodingError

DEFAULT_SERVER = "ws://127.0.0.1:8080"


class ProgressLine:
    """``sent / acknowledged`` on one rewritten line of standard error."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, sent: int, acknowledged: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            sys.stderr.write(f"\rsent {sent / 1e6:10.1f} MB, stored {acknowledged / 1e6:10.1f} MB")
            sys.stderr.flush()


def _print_reference(reference: str) -> None:
    print(reference, flush=True)


class LiveEnd:
    """The end of a live upload: SIGINT/SIGTERM, or no growth for ``idle_timeout`` seconds."""

    def __init__(self, path: Path, idle_timeout: float | None) -> None:
        self.path = path
        self.idle_timeout = idle_timeout
        self.stopped = False
        self._size = -1
        self._grew_at = time.monotonic()

    def stop(self) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        if self.stopped:
            return True
        if self.idle_timeout is None:
            return False
        size = self.path.stat().st_size
        if size != self._size:
            self._size, self._grew_at = size, time.monotonic()
        return time.monotonic() - self._grew_at >= self.idle_timeout


async def _upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    client = AsyncUploadClient(args.server, context_id=args.context, timeout=args.timeout)
    show_progress = args.progress or (sys.stderr.isatty() and not args.quiet)
    options = {
        "filename": args.filename or path.name,
        "mime_type": args.mime_type or guess_mime_type(args.filename or path.name),
        "supports_line_access": args.lines,
        "charset": args.charset,
        "on_reference": _print_reference,
        "progress": ProgressLine() if show_progress else None,
    }
    if args.live:
        end = LiveEnd(path, args.idle_timeout)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, end.stop)
        result = await client.upload_live_file(path, until=end, **options)
    else:
        result = await client.upload_file(path, **options)
    if show_progress:
        sys.stderr.write("\n")
    print(
        json.dumps(
            {
                "reference": result.reference,
                "checksum": result.checksum,
                "status": result.status.to_wire(),
            }
        ),
        flush=True,
    )
    return 0


def upload(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        print(f"livefile: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_upload(args))
    except (LivefileError, TranscodingError, OSError) as exc:
        print(f"\nlivefile: upload failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload a file; print its reference at once",
        description="Upload FILE to a livefile server. The reference is printed first, the"
        " final status (JSON) last.",
    )
    parser.add_argument("file", help="the file to upload")
    parser.add_argument(
        "--server",
        default=os.environ.get("LIVEFILE_SERVER", DEFAULT_SERVER),
        help=f"server URL (LIVEFILE_SERVER, default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="follow a file that is still being written, until Ctrl-C/SIGTERM",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="with --live: also end after SECONDS without growth",
    )
    parser.add_argument("--context", help="upload context id (streamingUploadContextId)")
    parser.add_argument("--filename", help="name to store (default: the file's name)")
    parser.add_argument("--mime-type", help="MIME type (default: guessed from the name)")
    parser.add_argument("--lines", action="store_true", help="a text file with line access")
    parser.add_argument("--charset", help="the text's charset; stored as UTF-8 (e.g. latin-1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per wait")
    parser.add_argument("--progress", action="store_true", help="show progress on stderr")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.set_defaults(handler=upload)
