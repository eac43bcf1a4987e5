"""``livefile upload``: upload a file (or follow a live one, or a pipe), printing the reference
at once.

Standard output gets the reference as its first line, the moment the server sends it, and the
final result as JSON at the end. Standard error gets a progress bar when it is a terminal (or
with ``--progress``; never with ``--quiet``) and a line for each log rotation. ``-`` (or a pipe
such as ``/dev/stdin``) is read and sent as its bytes arrive, so the resource can be followed
while the command that writes the pipe still runs. Exit status: 0 when the upload completed,
1 when it failed, 2 for usage errors, 130 when interrupted (the upload is then aborted and the
resource FAILED).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from livefile.api.errors import LivefileError
from livefile.api.messages import DerivedReference
from livefile.api.transfers import TransferStarted
from livefile.client_upload.client import AsyncUploadClient, guess_mime_type
from livefile.client_upload.live_file import Rotation
from livefile.client_upload.progress import UploadProgress
from livefile.client_upload.upload import DEFAULT_RESUME_FOR, Progress, UploadResult
from livefile.impl_common.progress_bars import wants_progress
from livefile.impl_common.references import DEFAULT_SERVER
from livefile.impl_common.transcoding import TranscodingError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PIPE_READ_SIZE = 1024 * 1024
DerivedKind = Literal["repack", "image"]


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


def _print_derived(derived: DerivedReference) -> None:
    """A derived resource (``--repack``, ``--image``): its reference on a line of its own, after the
    upload's, so that ``head -1`` still gives the upload's."""
    print(derived.reference.uri, flush=True)


async def _upload(args: argparse.Namespace, source: Source, notes: Notes) -> UploadResult:
    client = AsyncUploadClient(
        args.server,
        context_id=args.context,
        timeout=args.timeout,
        token=args.token,
        checksum_algorithm=args.checksum,
        max_idle_connections=0,  # one upload: nothing to keep its connection for
        resume_for=args.resume_for,
    )
    if source.fd is not None:  # a pipe (or standard input): read as the bytes arrive
        name = args.filename
        return await client.upload_stream(
            _pipe_chunks(source.fd),
            filename=name,
            mime_type=args.mime_type or guess_mime_type(name),
            supports_line_access=args.lines,
            charset=args.charset,
            on_reference=_print_reference,
            progress=notes.progress,
            repack=args.repack,
            image=args.image,
            on_derived=_print_derived,
        )
    path = Path(args.file)
    if not args.live:
        return await client.upload_file(
            path,
            filename=args.filename,
            mime_type=args.mime_type,
            supports_line_access=args.lines,
            charset=args.charset,
            on_reference=_print_reference,
            progress=notes.progress,
            repack=args.repack,
            image=args.image,
            on_derived=_print_derived,
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
        progress=notes.progress,
        repack=args.repack,
        image=args.image,
        on_derived=_print_derived,
        on_rotation=notes.rotation,
    )


def _pipe_chunks(fd: int) -> Iterator[bytes]:
    """What the pipe holds, each piece as soon as it is there (``os.read`` does not wait for
    a full buffer), until its writer closes it."""
    while chunk := os.read(fd, PIPE_READ_SIZE):
        yield chunk


@dataclass(frozen=True)
class Source:
    """What ``FILE`` names: a regular file (``fd`` None, read by path) or a pipe to read."""

    fd: int | None
    size: int | None  # known only for a regular file that is not followed


def _source(args: argparse.Namespace) -> Source | str:
    """The source to upload, or why it cannot be (a usage error)."""
    if args.file == "-":
        try:
            fd = sys.stdin.fileno()
            mode = os.fstat(fd).st_mode
        except (AttributeError, OSError, ValueError):  # started with standard input closed
            return "-: there is no standard input"
        if not args.filename:
            return "--filename is required to upload standard input (-)"
        if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            return "-: standard input is not a regular file or pipe"
        return Source(fd, None)
    try:
        found = os.stat(args.file)
    except FileNotFoundError:
        return f"{args.file}: no such file"
    except OSError as exc:
        return f"{args.file}: {exc.strerror}"
    if stat.S_ISDIR(found.st_mode):
        return f"{args.file}: is a directory"
    if stat.S_ISREG(found.st_mode):
        return Source(None, None if args.live else found.st_size)
    if not stat.S_ISFIFO(found.st_mode):
        return f"{args.file}: is not a regular file or pipe"
    if not args.filename:
        return f"--filename is required to upload a pipe ({args.file})"
    try:
        return Source(os.open(args.file, os.O_RDONLY | os.O_CLOEXEC), None)
    except OSError as exc:
        return f"{args.file}: {exc.strerror}"


class Notes:
    """What the command says on standard error while it runs: the progress bar (or nothing)
    and rotations, which must not break the bar's line."""

    def __init__(self, bar: UploadProgress | None) -> None:
        self.bar = bar
        self.progress: Progress | None = bar

    def rotation(self, rotation: Rotation) -> None:
        self.say(rotation.describe())

    def say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.note(f"livefile: {message}")
        else:
            print(f"livefile: {message}", file=sys.stderr, flush=True)

    def end(self, result: UploadResult | None = None) -> None:
        if self.bar is not None:
            self.bar.end(result)
            self.bar = None


def _result_json(result: UploadResult) -> str:
    return json.dumps(
        {
            "reference": result.reference,
            "resourceId": result.resource_id,
            "size": result.size,
            "checksum": result.checksum,
            "checksumAlgorithm": result.checksum_algorithm.value,
            "status": result.status.to_wire(),
            # Only with --repack or --image: the output of a plain upload stays as it was.
            **({"derived": [d.to_wire() for d in result.derived]} if result.derived else {}),
        }
    )


def upload(args: argparse.Namespace) -> int:
    """The ``upload`` command's handler."""
    if args.idle_timeout is not None and not args.live:
        return _fail("--idle-timeout needs --live", EXIT_USAGE)
    source = _source(args)
    if isinstance(source, str):
        return _fail(source, EXIT_USAGE)
    if args.idle_timeout is not None and source.fd is not None:
        return _fail(
            "--idle-timeout is for files: a pipe is read until its writer ends", EXIT_USAGE
        )
    show_progress = wants_progress(args.progress, args.quiet)
    notes = Notes(UploadProgress(source.size) if show_progress else None)
    try:
        result = asyncio.run(_upload(args, source, notes))
    except (LivefileError, TranscodingError, OSError) as exc:
        return _fail(f"upload failed: {type(exc).__name__}: {exc}", EXIT_FAILED, notes)
    except ValueError as exc:  # a bad server URL or bad metadata, refused before connecting
        return _fail(str(exc).splitlines()[0], EXIT_USAGE, notes)
    except asyncio.CancelledError:  # a second signal during a live upload
        return _fail("upload interrupted and aborted", EXIT_INTERRUPTED, notes)
    notes.end(result)
    print(_result_json(result), flush=True)
    return 0


def _fail(message: str, status: int, notes: Notes | None = None) -> int:
    if notes is not None:
        notes.end()
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
    parser.add_argument(
        "file",
        help="the file to upload; - for standard input (or a pipe such as /dev/stdin), read"
        " and sent as it arrives, which needs --filename",
    )
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
    parser.add_argument(
        "--filename", help="name to store (default: the file's name; required for a pipe)"
    )
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
    parser.add_argument(
        "--repack",
        action="store_true",
        help="also repack the archive into one normalized ZIP, a second resource that grows"
        " while this one uploads; its reference is printed on the second line",
    )
    parser.add_argument(
        "--image",
        action="store_true",
        help="also normalize the image to WebP, a second resource whose metadata carries its"
        " width, height and BlurHash; its reference is printed on a line after the upload's",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per wait")
    parser.add_argument(
        "--resume-for",
        type=float,
        default=DEFAULT_RESUME_FOR,
        metavar="SECONDS",
        help="when the connection is lost or the server restarts, reconnect and resume the"
        f" upload for up to this long (default {DEFAULT_RESUME_FOR:g}; 0: fail at once)",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar on stderr even when it is not a terminal",
    )
    shown.add_argument("--quiet", action="store_true", help="no progress bar, even on a terminal")
    parser.set_defaults(handler=upload)

    _derive_command(
        subparsers,
        "repack",
        help="repack an archive into a ZIP resource; print its reference",
        description="Ask the server to repack RESOURCE (a reference, or an id with --server),"
        " which may still be uploading, into one normalized ZIP: a new resource whose"
        " reference is printed at once; follow it with livefile get or tail.",
    )
    _derive_command(
        subparsers,
        "image",
        help="convert an image into a WebP resource; print its reference",
        description="Ask the server to normalize the image RESOURCE (a reference, or an id with"
        " --server) to WebP: a new resource whose reference is printed at once, made once the"
        " image is COMPLETED (follow it with livefile get or tail); its metadata then carries"
        " the width, height and BlurHash (GET /resources/ID).",
    )

    fetch = subparsers.add_parser(
        "fetch",
        help="have the server fetch a URL into a resource; print its reference",
        description="Ask the server to fetch URL (http or https) into a new resource, whose"
        " reference is printed at once: follow it with livefile get or tail while it arrives."
        " The references of --repack and --image follow, one a line.",
    )
    fetch.add_argument("url", help="the http(s) URL the server fetches")
    _request_arguments(
        fetch, server="server URL", token="access token with upload scope (LIVEFILE_TOKEN)"
    )
    fetch.add_argument("--filename", help="name to store (default: the URL's last segment)")
    fetch.add_argument("--mime-type", help="MIME type (default: guessed from the name)")
    fetch.add_argument(
        "--lines",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="line access (default: for text/* types)",
    )
    fetch.add_argument("--repack", action="store_true", help="also repack it into a ZIP")
    fetch.add_argument("--image", action="store_true", help="also convert it to WebP")
    fetch.set_defaults(handler=request_fetch)


def _request_arguments(parser: argparse.ArgumentParser, *, server: str, token: str) -> None:
    """``--server``, ``--token`` and ``--timeout`` of the commands that make one request."""
    parser.add_argument(
        "--server",
        default=os.environ.get("LIVEFILE_SERVER", DEFAULT_SERVER),
        help=f"{server} (LIVEFILE_SERVER, default {DEFAULT_SERVER})",
    )
    parser.add_argument("--token", default=os.environ.get("LIVEFILE_TOKEN"), help=token)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")


def _derive_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    what: DerivedKind,
    *,
    help: str,
    description: str,
) -> None:
    """``livefile repack`` or ``livefile image``: one request deriving a resource from another."""
    parser = subparsers.add_parser(what, help=help, description=description)
    parser.add_argument("resource", help="a reference, or a resource id with --server")
    _request_arguments(
        parser,
        server="server URL for a bare id",
        token="access token with upload scope that can also read the resource, e.g. admin"
        " (LIVEFILE_TOKEN); without one, a reference's own token is sent",
    )
    parser.set_defaults(handler=functools.partial(request_derived, what=what))


def request_derived(args: argparse.Namespace, what: DerivedKind) -> int:
    """The handler of ``repack`` and ``image``: the derived resource's reference, printed."""

    async def ask() -> DerivedReference:
        client = AsyncUploadClient(args.server, timeout=args.timeout, token=args.token)
        derive = client.repack if what == "repack" else client.image
        return await derive(args.resource)

    try:
        derived = asyncio.run(ask())
    except LivefileError as exc:
        return _fail(f"{what} refused: {type(exc).__name__}: {exc}", EXIT_FAILED)
    except ValueError as exc:
        return _fail(str(exc).splitlines()[0], EXIT_USAGE)
    print(derived.reference.uri, flush=True)
    return 0


def request_fetch(args: argparse.Namespace) -> int:
    """The ``fetch`` command's handler."""

    async def ask() -> TransferStarted:
        client = AsyncUploadClient(args.server, timeout=args.timeout, token=args.token)
        return await client.fetch(
            args.url,
            filename=args.filename,
            mime_type=args.mime_type,
            supports_line_access=args.lines,
            repack=args.repack,
            image=args.image,
        )

    try:
        started = asyncio.run(ask())
    except LivefileError as exc:
        return _fail(f"fetch refused: {type(exc).__name__}: {exc}", EXIT_FAILED)
    except ValueError as exc:
        return _fail(str(exc).splitlines()[0], EXIT_USAGE)
    print(started.reference.uri, flush=True)
    for derived in started.derived:
        print(derived.reference.uri, flush=True)
    return 0
