"""trusted_proxies under the real server (QA): waitress 3 clears X-Forwarded-For and the other
proxy headers unless told a trusted_proxy, so under `peerwatt dashboard` the header never
reached the app and every login behind the proxy counted against the proxy's address (20 wrong
logins from one client locked out a right login from another). The unit tests used Flask's test
client and never saw it. These go through waitress on loopback, as `peerwatt dashboard` serves."""

from __future__ import annotations

import http.client
import re
import threading
import urllib.parse

import pytest

from peerwatt.dashboard_server import run_until_closed, serve
from tests.dashboard.conftest import PASSWORDS, make_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """One client with its own cookie, through a real socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, body: str = "", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            h = dict(headers or {})
            if self.cookie:
                h["Cookie"] = self.cookie
            if body:
                h["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=h)
            response = conn.getresponse()
            text = response.read().decode()
            cookie = response.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            return response.status, text
        finally:
            conn.close()

    def login(self, name: str, password: str, forwarded_for: str) -> int:
        _, page = self.request("GET", "/login")
        token = CSRF_RE.search(page).group(1)
        form = urllib.parse.urlencode({"username": name, "password": password, "csrf_token": token})
        status, _ = self.request("POST", "/login", form, {"X-Forwarded-For": forwarded_for})
        return status


@pytest.fixture
def waitress_app(built, tmp_path):
    """Serve an app (made with the given config) with waitress on 127.0.0.1, as the CLI does."""
    servers = []

    def start(**config) -> int:
        app = make_app(built, tmp_path / f"i{len(servers)}", LOGIN_RATE_PER_ADDRESS=3, **config)
        server = serve(app, "127.0.0.1", 0, threads=2)
        closing = threading.Event()
        thread = threading.Thread(target=run_until_closed, args=(server, closing), daemon=True)
        thread.start()
        servers.append((server, closing, thread))
        return server.effective_port

    yield start
    for server, closing, thread in servers:
        closing.set()
        server.close()
        thread.join(10)


def test_forwarded_for_from_a_trusted_proxy_reaches_the_app_under_waitress(waitress_app):
    port = waitress_app(TRUSTED_PROXIES=["127.0.0.1"])
    attacker = Browser(port)
    for i in range(3):  # the address limit (3 here)
        assert attacker.login(f"guess{i}", "wrong password", "203.0.113.7") == 401
    assert attacker.login("admin", PASSWORDS["admin"], "203.0.113.7") == 429  # that client is locked
    # another client behind the same proxy is not (the old server: 429, the proxy's address locked)
    assert Browser(port).login("admin", PASSWORDS["admin"], "198.51.100.1") == 302


def test_forwarded_for_is_still_ignored_without_a_trusted_proxy_under_waitress(waitress_app):
    port = waitress_app()  # no trusted proxy: the header is the client's word
    attacker = Browser(port)
    for i in range(3):
        assert attacker.login(f"guess{i}", "wrong password", f"192.0.2.{i}") == 401
    assert Browser(port).login("admin", PASSWORDS["admin"], "198.51.100.1") == 429


def test_proxy_headers_pass_only_from_a_trusted_peer():
    from dashboard.proxies import ProxyHeaders, parse_trusted

    seen = {}

    def app(environ, start_response):
        seen.update({k: v for k, v in environ.items() if "FORWARDED" in k})

    headers = {
        "HTTP_X_FORWARDED_FOR": "198.51.100.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_FORWARDED": "x",
    }
    wrapped = ProxyHeaders(app, parse_trusted(["10.0.0.0/8"]))
    wrapped({"REMOTE_ADDR": "10.1.2.3", **headers}, None)
    assert seen == headers
    seen.clear()
    for peer in ("192.0.2.9", "", "not an address"):
        wrapped({"REMOTE_ADDR": peer, **headers}, None)
        assert seen == {}
