"""Absolute URLs of routes named by one path parameter, without a route search per request.

Starlette's ``url_for`` walks the app's routes on every call (tens of them here, each raising
``NoMatchFound``): it was a sixth of the server's time per tus creation. The path of a route is
found once per way of reaching the server (scheme, ``Host``, root path), with a placeholder
standing in for the parameter, and reused.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

_PLACEHOLDER = "0" * 32
_MOST_PREFIXES = 1024


def url_for_id(connection: HTTPConnection, name: str, parameter: str, value: str) -> str:
    """``connection.url_for(name, **{parameter: value})`` for a route whose path ends with that
    parameter (e.g. ``/files/{upload_id}``)."""
    scope = connection.scope
    # What the absolute URL depends on besides the route: how the client reached the server.
    key = (name, scope["scheme"], connection.headers.get("host"), scope.get("root_path", ""))
    state = connection.app.state  # this app's routes
    prefixes: dict[tuple[str, str, str | None, str], str] | None = getattr(
        state, "route_prefixes", None
    )
    if prefixes is None:
        prefixes = state.route_prefixes = {}
    prefix = prefixes.get(key)
    if prefix is None:
        if len(prefixes) >= _MOST_PREFIXES:  # Host headers are the client's to choose
            prefixes.clear()
        router = scope.get("router") or connection.app.router  # none before routing
        path = router.url_path_for(name, **{parameter: _PLACEHOLDER})
        sample = str(path.make_absolute_url(connection.base_url))
        if not sample.endswith(_PLACEHOLDER):
            raise ValueError(f"route {name!r} does not end with {{{parameter}}}")
        prefix = prefixes[key] = sample.removesuffix(_PLACEHOLDER)
    return prefix + value
