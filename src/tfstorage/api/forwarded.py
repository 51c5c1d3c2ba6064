"""The client's view of a request that came through a reverse proxy.

Behind a load balancer the service sees the proxy's address, scheme and Host, so URLs it
builds for clients (presigned links) would name an instance nobody can reach. The proxy
says what the client used in the `X-Forwarded-For/-Proto/-Host` headers or RFC 7239
`Forwarded` (FORWARDED_HEADERS names the one it sets: only that family is read, since a
proxy that sets one usually passes a client's own copy of the other through); they are
believed only from a trusted peer (FORWARDED_ALLOW_IPS), since anyone else could send
them to forge links or their address in the audit log. With several proxies in a chain,
the value the nearest one added (the last) is the one taken.

This replaces uvicorn's `--proxy-headers`, which handles neither `X-Forwarded-Host` nor
`Forwarded`, and runs the same in every worker and in-process test.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_PAIR = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


def parse_trusted(value: str) -> tuple[bool, tuple[Network, ...]]:
    """FORWARDED_ALLOW_IPS: `*` (any peer), or comma-separated addresses and networks."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if "*" in items:
        return True, ()
    return False, tuple(ipaddress.ip_network(item, strict=False) for item in items)


class ForwardedHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: str, family: str = "x-forwarded") -> None:
        self.app = app
        self._any, self._networks = parse_trusted(trusted)
        self._names = _FAMILIES[family]
        # Each request asks about its peer, and parsing the address cost more than the
        # rest of this middleware: the answers are kept (a few peers: the proxies, or
        # the clients; bounded all the same).
        self._answers: dict[str, bool] = {}

    def _trusts(self, peer: str | None) -> bool:
        if self._any:
            return True
        if peer is None:
            return False
        known = self._answers.get(peer)
        if known is None:
            if len(self._answers) >= _MAX_PEERS_KEPT:
                self._answers.clear()
            known = self._answers[peer] = self._judge(peer)
        return known

    def _judge(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self._trusts(client[0] if client else None):
                scope = _apply(scope, self._names)
        await self.app(scope, receive, send)


_MAX_PEERS_KEPT = 4096
_FAMILIES: dict[str, frozenset[bytes]] = {
    "x-forwarded": frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}),
    "forwarded": frozenset({b"forwarded"}),
}


def _apply(scope: Scope, names: frozenset[bytes]) -> Scope:
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
    seen: dict[bytes, str] = {}
    for name, value in headers:
        if name in names:
            previous = seen.get(name)
            text = value.decode("latin-1")
            seen[name] = f"{previous},{text}" if previous else text
    if not seen:
        return scope
    client = proto = host = None
    if b"forwarded" in seen:
        element = _last_forwarded_element(seen[b"forwarded"])
        client, proto, host = element.get("for"), element.get("proto"), element.get("host")
    else:
        client = _last(seen.get(b"x-forwarded-for"))
        proto = _last(seen.get(b"x-forwarded-proto"))
        host = _last(seen.get(b"x-forwarded-host"))
    scope = dict(scope)
    if proto is not None and proto.lower() in ("http", "https"):
        scope["scheme"] = proto.lower() if scope["type"] == "http" else _ws(proto.lower())
    if host is not None and _HOST.match(host):
        scope["headers"] = [(n, v) for n, v in headers if n != b"host"]
        scope["headers"].append((b"host", host.encode("latin-1")))
    if client is not None:
        address = _client_address(client)
        if address is not None:
            scope["client"] = (address, 0)
    return scope


def _last(value: str | None) -> str | None:
    if not value:
        return None
    return value.rsplit(",", 1)[-1].strip() or None


def _last_forwarded_element(value: str) -> dict[str, str]:
    """The last element of RFC 7239 `Forwarded: for=...;proto=...;host=..., ...`."""
    element: dict[str, str] = {}
    for part in _split_elements(value)[-1:]:
        for match in _PAIR.finditer(part):
            name, raw = match.group(1).lower(), match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            element[name] = raw
    return element


def _split_elements(value: str) -> list[str]:
    elements: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append("".join(current))
            current = []
            continue
        current.append(char)
    elements.append("".join(current))
    return [e for e in elements if e.strip()]


def _client_address(value: str) -> str | None:
    """An IP from `for=` (`192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`);
    obfuscated or unknown identifiers are ignored."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _ws(proto: str) -> str:
    return "wss" if proto == "https" else "ws"
