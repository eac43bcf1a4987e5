"""Reading a server's ``GET /metrics`` (Prometheus text format 0.0.4) in tests."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP = re.compile(rf"# HELP ({_NAME}) (.+)")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)")
_LABEL = r'[a-zA-Z_]\w*="[^"\\]*"'
_SAMPLE = re.compile(rf"({_NAME})(\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? (\S+)")


@dataclass(frozen=True)
class Scrape:
    """One answer of ``/metrics``: each sample by its series (``name`` or
    ``name{label="value"}``), and each metric name's TYPE."""

    content_type: str
    samples: dict[str, float]
    types: dict[str, str]

    def __getitem__(self, series: str) -> float:
        return self.samples[series]


def parse_exposition(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Parse the text format strictly: every sample is preceded by its metric's HELP and TYPE,
    every series appears once, every value is a number. Raises ValueError otherwise."""
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a line feed")
    for number, line in enumerate(text.splitlines(), 1):
        if help_line := _HELP.fullmatch(line):
            helped.add(help_line.group(1))
        elif type_line := _TYPE.fullmatch(line):
            types[type_line.group(1)] = type_line.group(2)
        elif sample := _SAMPLE.fullmatch(line):
            name, labels, value = sample.group(1), sample.group(2) or "", sample.group(3)
            family = _family(name, types)
            if family not in helped or family not in types:
                raise ValueError(f"line {number}: {name} has no HELP or TYPE before it")
            series = name + labels
            if series in samples:
                raise ValueError(f"line {number}: {series} appears twice")
            samples[series] = float(value)
        else:
            raise ValueError(f"line {number} is not in the text format: {line!r}")
    return samples, types


def _family(name: str, types: dict[str, str]) -> str:
    """The metric a sample belongs to: a histogram's ``_bucket``, ``_sum`` and ``_count``
    samples belong to the histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        family = name.removesuffix(suffix)
        if family != name and types.get(family) == "histogram":
            return family
    return name


def scrape(http_url: str, token: str | None = None) -> Scrape:
    request = urllib.request.Request(f"{http_url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples, types = parse_exposition(text)
    return Scrape(content_type, samples, types)


async def scrape_async(http_url: str) -> Scrape:
    return await asyncio.to_thread(scrape, http_url)


async def wait_for_metrics(
    http_url: str, predicate: Callable[[Scrape], bool], timeout: float = 30.0
) -> Scrape:
    """Poll ``/metrics`` until ``predicate`` holds (the server offers no event to await for its
    own bookkeeping); AssertionError with the last scrape after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        current = await scrape_async(http_url)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics did not reach the expected state: {current.samples}")
        await asyncio.sleep(0.1)  # polling interval, not synchronisation
