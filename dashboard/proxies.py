"""The client's address for the login limits, behind a reverse proxy or not.

Behind a reverse proxy every request comes from the proxy's address, so a per-address limit on
that address locks everybody out at once. The proxy names the real client in
``X-Forwarded-For``, but any client can send that header too. So the header is honoured only
when the request's peer (``REMOTE_ADDR``) is one of the configured trusted proxies
(``TRUSTED_PROXIES``: addresses or networks; none by default), and the client is the right-most
address in it that is not itself a trusted proxy (what our own proxy appended; anything left of
it was written by the client).

werkzeug's ``ProxyFix`` does not fit: it trusts a fixed number of header entries from any peer,
so a dashboard reachable both directly and through its proxy would let a direct client pick its
own address.

Under waitress: waitress 3 clears every proxy header (``X-Forwarded-For``, ``-Host``,
``-Proto``, ``-Port``, ``-By``, ``Forwarded``) unless the peer is its one ``trusted_proxy`` (an
exact address, no networks), so the header never reached the app. ``ProxyHeaders`` does that
clearing instead, with the dashboard's trusted proxies: the headers pass only from a trusted peer
(peerwatt/dashboard_server.py serves with it and waitress's own clearing off).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyConfigError(ValueError):
    """A trusted proxy entry that is not an IP address or network (one line)."""


def parse_trusted(entries: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies as networks ("127.0.0.1", "10.0.0.0/8", "::1")."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=True))
        except ValueError:
            raise ProxyConfigError(
                f"trusted proxy {str(entry)[:64]!r} is not an IP address or network"
                " (e.g. 127.0.0.1 or 10.0.0.0/8)"
            ) from None
    return tuple(out)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(remote_addr: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The address to count failed logins against (see the module docstring).

    ``forwarded_for`` is every ``X-Forwarded-For`` header of the request, in order. A header that
    names no usable client leaves the proxy's own address: never an address made up from it."""
    if not remote_addr:
        return "?"
    peer = _address(remote_addr)
    if peer is None or not _trusted(peer, trusted):
        return remote_addr
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return remote_addr
        if not _trusted(address, trusted):
            return str(address)
    # every hop is one of our proxies: the left-most one is as close to the client as we get
    first = _address(hops[0]) if hops else None
    return str(first) if first is not None else remote_addr


# the headers waitress clears from untrusted peers (waitress.proxy_headers.PROXY_HEADERS)
PROXY_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_BY",
    "HTTP_FORWARDED",
)


class ProxyHeaders:
    """WSGI middleware: the proxy headers reach the app only from a trusted proxy; from any other
    peer they are removed (what waitress does, but with networks and several proxies)."""

    def __init__(self, app, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    def __call__(self, environ, start_response):
        peer = _address(environ.get("REMOTE_ADDR") or "")
        if peer is None or not _trusted(peer, self.trusted):
            for header in PROXY_HEADERS:
                environ.pop(header, None)
        return self.app(environ, start_response)
