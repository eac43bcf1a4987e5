"""Checks ``livefile serve`` makes before it starts, each failing with one line that names the
setting (flag and environment variable), the value and what is allowed.

A bad value is a usage error (exit status 2): a setting out of range or of the wrong type, a log
level that does not exist, a data directory that is a file or cannot be created, read or written
into. An address that is valid but cannot be listened on now (the port is taken, a privileged
port) is a fault of the moment like an unreachable Redis (exit status 1).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Mapping
from typing import Any

import annotated_types
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from livefile.impl_websocket.settings import Settings

USAGE = 2  # a value that can never work
UNAVAILABLE = 1  # a value that cannot work now
ENV_PREFIX = "LIVEFILE_"
# uvicorn's levels (uvicorn.config.LOG_LEVELS), which it looks up by their lower-case names.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
PROBE_NAME = ".livefile-write-probe"
TITLES = {"data_dir": "data directory"}  # how a message calls a setting, when not its name


def title(field: str) -> str:
    return TITLES.get(field, field.replace("_", " "))


class StartupProblem(Exception):
    """Why the server cannot start, as one line, with the exit status to end with."""

    def __init__(self, message: str, exit_status: int = USAGE) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class Origins:
    """Where each setting came from: a ``livefile serve`` flag or a ``LIVEFILE_*`` variable."""

    def __init__(self, flags: Mapping[str, str], given: Mapping[str, Any]) -> None:
        self.flags = flags  # setting name -> its flag, for the settings that have one
        self.given = given  # the settings given as flags, as typed

    def names(self, field: str) -> str:
        """``--port, LIVEFILE_PORT``: every way to set ``field``."""
        variable = ENV_PREFIX + field.upper()
        flag = self.flags.get(field)
        return f"{flag}, {variable}" if flag else variable

    def value(self, field: str, value: object) -> str:
        """How the user gave ``value``: ``--port 99999``, ``LIVEFILE_PORT=abc`` or the default."""
        shown = str(value)
        if field in self.given and field in self.flags:
            return f"{self.flags[field]} {shown}"
        variable = ENV_PREFIX + field.upper()
        if variable in os.environ:
            return f"{variable}={shown}"
        return f"the default {title(field)} {shown}"

    def problem(self, field: str, value: object, allowed: str) -> str:
        return (
            f"{self.value(field, value)} is not allowed:"
            f" the {title(field)} ({self.names(field)}) {allowed}"
        )


def load_settings(overrides: Mapping[str, Any], origins: Origins) -> Settings:
    """``Settings`` from the environment and ``overrides`` (the flags); a ``StartupProblem``
    naming every invalid one, one line each."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        seen: set[str] = set()
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in seen:  # a union reports each alternative; one line per setting
                continue
            seen.add(field)
            info = Settings.model_fields.get(field)
            allowed = describe(info) if info is not None else None
            text = f"must be {allowed}" if allowed else error["msg"].lower()
            lines.append(origins.problem(field, error.get("input"), text))
        raise StartupProblem("\n".join(lines)) from None


def describe(info: FieldInfo) -> str | None:
    """What a setting allows, from its type and bounds: ``an integer from 0 to 65535``."""
    annotation = info.annotation
    optional = False
    args = getattr(annotation, "__args__", ())
    if type(None) in args:
        optional = True
        others = [arg for arg in args if arg is not type(None)]
        annotation = others[0] if len(others) == 1 else None
    kinds = {int: "an integer", float: "a number", bool: "true or false"}
    kind = kinds.get(annotation) if isinstance(annotation, type) else None
    if kind is None:
        return None
    low: object = None
    high: object = None
    strict_low = False
    for constraint in info.metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = constraint.ge
        elif isinstance(constraint, annotated_types.Gt):
            low, strict_low = constraint.gt, True
        elif isinstance(constraint, annotated_types.Le):
            high = constraint.le
    if low is not None and high is not None and not strict_low:
        text = f"{kind} from {low} to {high}"
    elif low is not None:
        text = f"{kind} {'greater than' if strict_low else 'of at least'} {low}"
    elif high is not None:
        text = f"{kind} of at most {high}"
    else:
        text = kind
    return f"{text}, or unset" if optional else text


def check_log_level(settings: Settings, origins: Origins) -> None:
    if settings.log_level.lower() not in LOG_LEVELS:
        raise StartupProblem(
            origins.problem(
                "log_level", settings.log_level, "must be one of " + ", ".join(LOG_LEVELS)
            )
        )
    settings.log_level = settings.log_level.lower()  # uvicorn knows only the lower-case names


def check_job_concurrency(settings: Settings, origins: Origins) -> None:
    """No job slots is a front node, whose jobs the other workers run: only with Redis."""
    if settings.job_concurrency == 0 and not settings.redis_url:
        raise StartupProblem(
            origins.problem(
                "job_concurrency",
                0,
                "may be 0 only with --redis-url (other workers then run this one's jobs)",
            )
        )


def check_data_dir(settings: Settings, origins: Origins) -> None:
    """The data directory exists (or is created) and a file can be created, read and removed
    in it: what the server does there first. Root passes permission bits, and so does this
    probe: it tests what the server will be able to do, not what the mode bits say."""
    path = settings.data_dir.absolute()

    def problem(allowed: str) -> StartupProblem:
        return StartupProblem(origins.problem("data_dir", path, allowed))

    if path.exists() and not path.is_dir():
        raise problem("must be a directory, and this is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise problem(f"must be a directory that exists or can be created: {reason(exc)}") from None
    probe = path / f"{PROBE_NAME}-{os.getpid()}"
    try:
        os.listdir(path)
        descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.write(descriptor, b"livefile")
            os.pread(descriptor, 8, 0)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise problem(f"must be a directory the server can read and write: {reason(exc)}") from None


def check_listen_address(settings: Settings, origins: Origins) -> None:
    """The address can be bound now, as uvicorn binds it (SO_REUSEADDR): a port in use is
    reported here, in one line, rather than by uvicorn after the application has started."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
            names = f"{origins.names('host')} / {origins.names('port')}"
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise StartupProblem(
                    f"cannot listen on {where} ({names}): {reason(exc)}", UNAVAILABLE
                ) from None
            raise StartupProblem(
                f"cannot listen on {where} ({names}): {reason(exc)};"
                " the host must be an address of this machine",
                USAGE,
            ) from None


def reason(exc: OSError) -> str:
    """``Permission denied`` rather than ``[Errno 13] Permission denied: '/x'``."""
    text = exc.strerror or str(exc)
    return text[0].lower() + text[1:] if text else type(exc).__name__


def check(settings: Settings, origins: Origins) -> None:
    """Every check, in the order a user would fix them."""
    check_log_level(settings, origins)
    check_job_concurrency(settings, origins)
    check_data_dir(settings, origins)
    check_listen_address(settings, origins)
