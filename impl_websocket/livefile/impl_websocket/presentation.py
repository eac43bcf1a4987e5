"""How a browser is told to present a resource's bytes: its ``Content-Type`` and whether
``Content-Disposition`` says ``inline`` (shown in the tab) or ``attachment`` (saved).

One decision, made here for every content answer (the full route and both fast paths read it
from ``ResourceFacts``):

- a line-access resource is UTF-8 text (the server transcodes it on upload), so it is served as
  ``text/plain; charset=utf-8`` whatever type it was announced with;
- another resource keeps the type its uploader announced, except that a generic
  ``application/octet-stream`` with a common log or text extension (``.log``, ``.txt``,
  ``.md``, ``.csv``, ``.json``, ``.yaml``, ``.out``, ``.err`` …) gets that extension's type;
- text, images and PDF are ``inline``, anything else ``attachment``; ``?disposition=inline``
  or ``?disposition=attachment`` forces either;
- types that can run script in the server's origin (HTML, SVG, XML) are ``attachment`` by
  default and always carry ``Content-Security-Policy: sandbox``, so that even forced inline
  they cannot act on the reader's behalf; every answer carries ``X-Content-Type-Options:
  nosniff`` so that no browser guesses a more dangerous type than the one sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from livefile.api.model import ResourceMetadata

UTF8_TEXT = "text/plain; charset=utf-8"
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
# The types of common log and text files, by extension (lower case).
TEXT_EXTENSIONS = {
    ".log": "text/plain",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".out": "text/plain",
    ".err": "text/plain",
    ".stdout": "text/plain",
    ".stderr": "text/plain",
    ".trace": "text/plain",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".conf": "text/plain",
    ".toml": "text/plain",
    ".properties": "text/plain",
    ".diff": "text/plain",
    ".patch": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
}
# Types a browser runs script in when it shows them.
ACTIVE_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)
SHOWN_APPLICATION_TYPES = frozenset(
    {"application/pdf", "application/json", "application/x-ndjson", "application/yaml"}
)
NOSNIFF = ("X-Content-Type-Options", "nosniff")
SANDBOX = ("Content-Security-Policy", "sandbox")


class Disposition(StrEnum):
    INLINE = "inline"
    ATTACHMENT = "attachment"


@dataclass(frozen=True)
class Presentation:
    content_type: str
    disposition: Disposition
    active: bool  # a type that runs script: sent with a sandboxing CSP

    def headers(self) -> dict[str, str]:
        """The headers besides ``Content-Type`` and ``Content-Disposition``."""
        return dict([NOSNIFF, SANDBOX] if self.active else [NOSNIFF])


def presentation_of(metadata: ResourceMetadata) -> Presentation:
    if metadata.supports_line_access:
        return Presentation(UTF8_TEXT, Disposition.INLINE, False)
    content_type = metadata.mime_type
    base = media_type(content_type)
    if base in GENERIC_TYPES:
        extension = PurePosixPath(metadata.filename.lower()).suffix
        if extension in TEXT_EXTENSIONS:
            content_type = base = TEXT_EXTENSIONS[extension]
    active = base in ACTIVE_TYPES
    shown = not active and (base.startswith(("text/", "image/")) or base in SHOWN_APPLICATION_TYPES)
    disposition = Disposition.INLINE if shown else Disposition.ATTACHMENT
    return Presentation(content_type, disposition, active)


def media_type(content_type: str) -> str:
    """``text/plain`` of ``Text/Plain; charset=x``."""
    return content_type.split(";", 1)[0].strip().lower()


def forced_disposition(query_value: str | None) -> Disposition | None:
    """The ``disposition`` query parameter's value; ValueError for anything else."""
    if query_value is None:
        return None
    return Disposition(query_value)
