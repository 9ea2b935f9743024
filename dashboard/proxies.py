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


def _hop(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An ``X-Forwarded-For`` entry as proxies write it: an address, an IPv4 address with a port
    (``203.0.113.11:4711``), an IPv6 address in brackets, with or without a port
    (``[2001:db8::5]``, ``[2001:db8::5]:4711``). None for anything else (such an entry fell back
    to the proxy's address, and everybody behind the proxy shared one address lock)."""
    text = text.strip()
    if text.startswith("["):
        inside, closed, rest = text[1:].partition("]")
        address = _address(inside) if closed and _port(rest) else None
        return address if address is not None and address.version == 6 else None
    if text.count(":") == 1:  # IPv4:port (an IPv6 address has at least two colons)
        host, _, port = text.partition(":")
        address = _address(host) if _port(":" + port) else None
        return address if address is not None and address.version == 4 else None
    return _address(text)


def _port(text: str) -> bool:
    """Nothing, or ":" and a port number (what may follow an address in X-Forwarded-For)."""
    digits = text[1:]
    return text == "" or (text[0] == ":" and digits.isascii() and digits.isdigit() and len(digits) <= 5)


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
        address = _hop(hop)
        if address is None:
            return remote_addr
        if not _trusted(address, trusted):
            return str(address)
    # every hop is one of our proxies: the left-most one is as close to the client as we get
    first = _hop(hops[0]) if hops else None
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
