"""Serving the dashboard with waitress (production WSGI server) for the demo and `peerwatt dashboard`."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

from chain.keys import key_id


def serve(app: Any, host: str, port: int, threads: int = 4) -> Any:
    """A waitress server bound to host:port (call ``.run()``, and ``.close()`` to stop).

    Waitress clears X-Forwarded-For (and the other proxy headers) from every peer but its one
    ``trusted_proxy``, so with the dashboard's ``TRUSTED_PROXIES`` (networks, several proxies) the
    header would never reach the app: the clearing is done by ``dashboard.proxies.ProxyHeaders``
    instead, which passes the headers from those proxies only."""
    from waitress import create_server

    from dashboard.proxies import ProxyHeaders

    services = getattr(app, "extensions", {}).get("peerwatt")
    trusted = getattr(services, "trusted_proxies", ())
    return create_server(
        ProxyHeaders(app, trusted), host=host, port=port, threads=threads, clear_untrusted_proxy_headers=False
    )


def run_until_closed(server: Any, closing: threading.Event) -> None:
    """``server.run()`` in a thread until another thread sets ``closing`` and closes the server.
    Waitress's loop may then be in select() on the sockets just closed: the EBADF (or a negative
    descriptor's ValueError) it raises is the end of serving, not an error (it failed the demo's
    test once, as an exception in the dashboard thread)."""
    try:
        server.run()
    except (OSError, ValueError):
        if not closing.is_set():
            raise


def make_dashboard(data_dir: Path, instance_dir: Path, port: int, homes: list[Any], clock: Any):
    """The demo's dashboard over the sequencer's store, with an admin and one login per household.
    Returns (server, logins, the board of the agents' status for the caller to feed from a bus)."""
    from dashboard.agent_status import AgentStatusBoard
    from dashboard.app import create_app

    app = create_app(data_dir, instance_dir=instance_dir, config={"CLOCK": clock.now})
    services = app.extensions["peerwatt"]
    board = AgentStatusBoard(services.ledger.community.id)  # real time: agents heartbeat in real s
    services.agent_status = board
    accounts = app.extensions["peerwatt"].accounts
    logins = []
    admin_pw = "demo-" + secrets.token_urlsafe(6)
    accounts.add_user("admin", admin_pw, role="admin")
    logins.append(("admin", admin_pw, "sees every household"))
    for home in homes:
        password = "demo-" + secrets.token_urlsafe(6)
        accounts.add_user(home.name, password, role="household", meters=[key_id(home.key.public_key())])
        logins.append(
            (home.name, password, f"{home.household.pv_kwp:g} kWp PV" if home.household.pv_kwp else "no PV")
        )
    return serve(app, "127.0.0.1", port), logins, board
