"""The dashboard's Flask app factory: configuration, security, services and blueprints.

``create_app(data_dir)`` opens the node's ledger read-only, the dashboard's own accounts
database and its derived index (both in the instance folder, by default ``<data_dir>/../dashboard``)
and registers the pages and the JSON API (``/api/v1``). It never writes the ledger.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from chain.private_files import private_file
from chain.store import StoreError
from dashboard import units
from dashboard.accounts import PASSWORD_METHOD, User
from dashboard.ledger import Unavailable
from dashboard.params import ParamError
from dashboard.proxies import parse_trusted
from dashboard.services import Services, default_instance_dir, open_services
from dashboard.text import isolate, isolate_text, readable_json
from dashboard.timeutil import fmt_age, fmt_interval, fmt_time

DEFAULTS: dict[str, Any] = {
    "SESSION_HOURS": 8,
    "SESSION_COOKIE_SECURE": False,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "peerwatt_session",
    "REMEMBER_COOKIE_DURATION": timedelta(seconds=0),
    "CURRENCY_SYMBOL": "\u20ac",
    "CURRENCY_SUBUNIT": "ct",
    "LOGIN_RATE_PER_USER": 5,  # failed logins before an account is locked
    "LOGIN_RATE_PER_ADDRESS": 20,  # failed logins before a client address is locked
    "LOGIN_RATE_WINDOW_S": 86400,  # failures are forgotten after this long without one
    "LOGIN_LOCK_S": 60,  # the first lock; each further failure doubles it
    "LOGIN_LOCK_MAX_S": 3600,  # the longest lock
    "TRUSTED_PROXIES": (),  # reverse proxies whose X-Forwarded-For names the client (dashboard/proxies.py)
    "INDEX_SYNC": "request",  # "request": catch up before requests; "off": the caller syncs
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "PASSWORD_METHOD": PASSWORD_METHOD,  # werkzeug method string: scrypt, n=2**15, r=8, p=1
    "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session (which expires)
    "CLOCK": time.time,  # ledger time for "last block N s ago" (the demo passes its accelerated clock)
    "AGENT_STATUS": None,  # an AgentStatusBoard fed from the broker's status topics, or None
    "NEIGHBOUR_NAMES": "names",  # the community's choice: "names" or "pseudonyms" (per-neighbour summary)
    "AGENT_HEARTBEAT_S": 60,  # the agents' heartbeat_s: a status older than 3 of them is stale
    # record the community in a new (or older) instance folder at the end of create_app; False:
    # the caller does, once its start succeeded (services.record_community(), as peerwatt dashboard)
    "RECORD_COMMUNITY": True,
}

log = logging.getLogger("peerwatt.dashboard")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _secret_key(instance_dir: Path) -> str:
    """The session-signing key: kept in the instance folder (mode 0600), made on first start,
    and made again when the file is deleted or empty (everybody is logged out; said once)."""
    path = instance_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    private_file(path)
    try:
        key = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise StoreError(
            f"{path} is not a key (not text): delete it, and a new one is made at start "
            "(everybody is logged out)"
        ) from None
    if key:
        return key
    key = secrets.token_hex(32)
    fresh = path.with_name(f".secret_key.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(fresh, path)
    log.warning("%s was empty: made a new session key (everybody is logged out)", path)
    return key


def create_app(
    data_dir: str | Path, *, instance_dir: str | Path | None = None, config: dict[str, Any] | None = None
) -> Flask:
    """The dashboard over the node store in ``data_dir`` (opened read-only)."""
    app = Flask(__name__, instance_path=str(Path(instance_dir or default_instance_dir(data_dir)).resolve()))
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    trusted = parse_trusted(app.config["TRUSTED_PROXIES"])  # ProxyConfigError before opening anything
    if app.config["NEIGHBOUR_NAMES"] not in ("names", "pseudonyms"):
        raise ValueError("NEIGHBOUR_NAMES must be 'names' or 'pseudonyms'")
    services = open_services(data_dir, app.instance_path, app.config)
    services.trusted_proxies = trusted
    services.agent_status = app.config["AGENT_STATUS"]
    app.config.setdefault("SECRET_KEY", None)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _secret_key(services.instance_dir)
    # the cookie is a browser-session cookie (views/auth.py); the server-side session in
    # dashboard.sqlite expires after SESSION_HOURS, and this caps anything made permanent
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_HOURS"])
    app.extensions["peerwatt"] = services

    _add_logins(app, services)
    from dashboard.views import auth, explorer, household, overview, statements, trades

    for blueprint in (auth.bp, overview.bp, trades.bp, household.bp, explorer.bp, statements.bp):
        app.register_blueprint(blueprint)
    _add_request_hooks(app, services)
    _add_error_pages(app, services)
    _add_template_filters(app, services)
    if app.config["RECORD_COMMUNITY"]:
        services.record_community()  # only now: a start that failed records no community
    return app


def _add_logins(app: Flask, services: Services) -> None:
    """CSRF on every form, and flask-login sessions over the dashboard's accounts."""
    CSRFProtect(app)
    login = LoginManager(app)
    login.login_view = "auth.login"
    login.login_message = "Please log in to see household data."
    login.session_protection = "basic"

    @login.user_loader
    def load_user(token: str) -> User | None:
        return services.accounts.session_user(token)

    @login.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for

        if request.path.startswith("/api/"):
            return jsonify(error="login required"), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _add_request_hooks(app: Flask, services: Services) -> None:
    """Keep the index up to date per request (when asked) and set the security headers."""

    @app.before_request
    def same_ledger() -> None:
        """Every page and API answers 503 while the data folder holds another ledger than the
        one this dashboard was started on, or none (LedgerReplaced, LedgerGone: the answer below)."""
        if not request.path.startswith("/static/"):
            services.ledger.store()

    @app.before_request
    def catch_up() -> None:
        if app.config["INDEX_SYNC"] == "request" and not request.path.startswith("/static/"):
            services.indexer.sync_if_due()

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _add_error_pages(app: Flask, services: Services) -> None:
    """Errors as one-line JSON under /api/, as the error page elsewhere (400 for bad parameters,
    503 while a file the dashboard serves from cannot be used)."""

    def error(status: int, message: str):
        if request.path.startswith("/api/"):
            return jsonify(error=message), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error(
            400, f"The form expired or was not sent by this site ({exc.description}); reload and try again."
        )

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable):
        """Another ledger, the ledger moved away, a damaged file, a full disk: 503 with the line
        that names no path (visitors read it); the log names the file, once while it lasts."""
        services.ledger.faults.fault(exc)
        return error(503, exc.public)

    @app.errorhandler(sqlite3.DatabaseError)
    def damaged(exc: sqlite3.DatabaseError):
        """A page read a damaged file (the ledger, the index or the accounts: which one is checked
        once): 503 as above. Any other SQLite error is a fault of the dashboard's own (500)."""
        fault = services.fault(exc)
        if fault is None:
            raise exc
        return unavailable(fault)

    @app.errorhandler(ParamError)
    def param_error(exc: ParamError):
        return error(400, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error(exc.code or 500, exc.description or exc.name)


def _add_template_filters(app: Flask, services: Services) -> None:
    """Units, money and local times for the templates (the community's currency and timezone)."""
    symbol, subunit = app.config["CURRENCY_SYMBOL"], app.config["CURRENCY_SUBUNIT"]
    tz = services.ledger.community.tz
    app.jinja_env.filters.update(
        energy=units.energy,
        price=lambda p: units.price(p, subunit),
        money=lambda m: units.money(m, symbol),
        short=units.short_id,
        time=lambda t, pattern="%Y-%m-%d %H:%M": fmt_time(t, tz, pattern),
        interval=lambda t: fmt_interval(t, services.ledger.params()["interval_s"], tz),
        age=fmt_age,
        interval_name=units.interval_name,  # the community's interval_s in words
        intervals_counted=units.intervals_counted,
        duration_adjective=units.duration_adjective,
        percent=lambda permille: "\u2013" if permille is None else f"{units.fixed(permille, 10, 1)} %",
        # what members chose (names, notes, args, an agent's words): isolated, controls shown
        isolate=isolate,
        isolate_text=isolate_text,
        readable_json=readable_json,
    )
    app.jinja_env.globals.update(community=services.ledger.community)
