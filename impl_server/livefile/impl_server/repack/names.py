"""Entry names: turn an archive's path into a safe relative ZIP name, and refuse duplicates."""

from __future__ import annotations

import re

from livefile.impl_server.repack.model import RepackError

_DRIVE = re.compile(r"[A-Za-z]:")


def safe_entry_name(raw: str, max_bytes: int) -> str:
    """``raw`` as a relative, forward-slash name without empty or ``.`` segments, or
    ``RepackError("unsafe_path")``.

    A backslash counts as a separator: archives made on Windows use it, and a Windows extractor
    would treat ``..\\x`` as a parent reference. ``a/../b`` is refused rather than resolved, since
    an archive that needs it is at best odd and at worst probing.
    """
    if "\x00" in raw:
        raise RepackError("unsafe_path", f"entry name contains NUL: {raw!r}")
    path = raw.replace("\\", "/")
    if path.startswith("/"):
        raise RepackError("unsafe_path", f"absolute entry name: {raw!r}")
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if not segments:
        raise RepackError("unsafe_path", f"empty entry name: {raw!r}")
    if ".." in segments:
        raise RepackError("unsafe_path", f"entry name with '..': {raw!r}")
    if _DRIVE.match(segments[0]):
        raise RepackError("unsafe_path", f"entry name with a drive letter: {raw!r}")
    name = "/".join(segments)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise RepackError("unsafe_path", f"entry name is not valid Unicode: {raw!r}") from None
    if size > max_bytes:
        raise RepackError("unsafe_path", f"entry name longer than {max_bytes} bytes: {raw[:80]!r}…")
    return name


def single_file_name(source_name: str, max_bytes: int) -> str:
    """The name a lone file gets in the ZIP: the last segment of the client's name, since that
    name may hold any path."""
    base = source_name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")
    if base in ("", ".", ".."):
        base = "file"
    while len(base.encode("utf-8", "replace")) > max_bytes:
        base = base[: len(base) // 2]
    return base


class NameRegistry:
    """The names written so far; a second file under the same name, or a file where another
    file's directory is (``a`` and ``a/b``), would make the ZIP extract differently per tool."""

    def __init__(self) -> None:
        self._files: set[str] = set()
        self._dirs: set[str] = set()

    def claim(self, name: str) -> None:
        if name in self._files or name in self._dirs:
            raise RepackError("unsafe_path", f"duplicate entry name: {name!r}")
        parents = []
        end = name.find("/")
        while end != -1:
            parent = name[:end]
            if parent in self._files:
                raise RepackError("unsafe_path", f"{name!r} is inside file {parent!r}")
            parents.append(parent)
            end = name.find("/", end + 1)
        self._files.add(name)
        self._dirs.update(parents)
