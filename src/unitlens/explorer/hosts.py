"""``HostCheck``: the explorer answers only requests addressed to itself, which keeps it safe from DNS rebinding.

A web page on ``evil.example`` can point its own name at 127.0.0.1 and then read ``http://evil.example:8765/``
from the user's browser as if it were its own site: the browser connects to the explorer, but sends
``Host: evil.example:8765``. So a request is answered only when its ``Host`` header names the server by the
address the client connected to (the socket's local address, which for a server bound to 0.0.0.0 is the
interface the request came in on), by ``localhost``, ``127.0.0.1`` or ``[::1]``, or by the ``--host`` it was
started with, each with the server's port (no port: 80). Anything else gets a 403 that says which names work.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def host_name(address: str) -> str:
    """An address as a ``Host`` header spells it: lower case, IPv6 in brackets, IPv4-mapped IPv6 as IPv4."""
    address = address.lower()
    if address.startswith("::ffff:") and "." in address:
        address = address[len("::ffff:"):]
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def split_host(header: str) -> tuple[str, int | None] | None:
    """``"name:port"`` -> (name, port); no port -> (name, 80); None when it is not a host and port."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header.partition("]")
        name, port = name + "]", rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return None
    else:
        name, colon, port_text = header.partition(":")
        port = port_text if colon else None
    if not name or (port is not None and not (port.isascii() and port.isdigit())):
        return None
    return name, int(port) if port is not None else 80


class HostCheck:
    """ASGI middleware: a 403 for every HTTP request whose ``Host`` is not this server (see the module);
    ``names``: further names to answer to (the address the server was asked to listen on)."""

    def __init__(self, app: ASGIApp, names: tuple[str, ...] = ()):
        self.app = app
        self.names = {host_name(n) for n in (*LOCAL_NAMES, *names) if n}

    def answers(self, scope: Scope) -> tuple[bool, list[str]]:
        """Whether the request's ``Host`` names this server, and the ``name:port`` values that would."""
        server = scope.get("server")
        names = set(self.names)
        port = None
        if server:
            names.add(host_name(str(server[0])))
            port = server[1]
        given = split_host(host_header(scope))
        ok = given is not None and given[0] in names and (port is None or given[1] == port)
        return ok, sorted(f"{n}:{port}" if port is not None else n for n in names)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            ok, names = self.answers(scope)
            if not ok:
                body = json.dumps({"error": f"this explorer does not answer requests for host "
                                            f"'{host_header(scope)}': open it as http://{names[0]}/ (it answers to "
                                            f"{', '.join(names)})", "kind": "Forbidden"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def host_header(scope: Scope) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
