"""`peerwatt dashboard`: serve the web dashboard with waitress, and manage its accounts.

    peerwatt dashboard -c dashboard.toml
    peerwatt dashboard --data node-data --port 8080
    peerwatt dashboard user add --data node-data alice --meter <key id>   (password prompted or on stdin)
    peerwatt dashboard user add --data node-data admin --admin
    peerwatt dashboard user list --data node-data
    peerwatt dashboard user remove --data node-data alice

dashboard.toml (relative paths are relative to the file's folder):

    data = "node-data"              # the node's data folder (its ledger is opened read-only)
    instance = "dashboard-data"     # accounts and index; default <data>/../dashboard
    listen = "127.0.0.1:8080"
    secure_cookies = false          # set true when served over HTTPS (behind a proxy)
    session_hours = 8
    threads = 4
    currency_symbol = "€"
    currency_subunit = "ct"
    trusted_proxies = []            # e.g. ["127.0.0.1"]: X-Forwarded-For is believed only from these
    broker_client_id = "dashboard"  # the dashboard's broker account (read-only: status/+)
    neighbour_names = "names"       # the community's choice: "names" or "pseudonyms"

    [broker]                        # optional: show each household its agent's health
    url = "mqtts://broker.oak-street.example:8883"
    ca_file = "community-ca.crt"    # and cert_file/key_file, or username/password_file, as for nodes
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from peerwatt.errors import UserError

CONFIG_KEYS = {
    "data",
    "instance",
    "listen",
    "secure_cookies",
    "session_hours",
    "threads",
    "currency_symbol",
    "currency_subunit",
    "trusted_proxies",
    "broker",
    "broker_client_id",
    "neighbour_names",
}


@dataclass(frozen=True)
class DashboardSettings:
    data: Path
    instance: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    secure_cookies: bool = False
    session_hours: int = 8
    threads: int = 4
    currency_symbol: str = "\u20ac"
    currency_subunit: str = "ct"
    trusted_proxies: tuple[str, ...] = ()
    broker: Any = None  # peerwatt.bus.BrokerConfig of the optional [broker] table
    broker_client_id: str = "dashboard"
    neighbour_names: str = "names"


def load_settings(path: Path) -> DashboardSettings:
    """Read dashboard.toml; UserError names the key and the fix."""
    from peerwatt.config import broker_config, read_toml, take

    data = read_toml(path)
    where = str(path)
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    base = path.parent
    host, port = _listen(take(data, "listen", str, where, "127.0.0.1:8080"), where)
    instance = take(data, "instance", str, where, None)
    hours = take(data, "session_hours", int, where, 8)
    threads = take(data, "threads", int, where, 4)
    if not 1 <= hours <= 24 * 30 or not 1 <= threads <= 64:
        raise UserError(f"{where}: session_hours must be 1..720 and threads 1..64")
    proxies = take(data, "trusted_proxies", list, where, [])
    from dashboard.proxies import ProxyConfigError, parse_trusted

    try:
        parse_trusted(proxies)
    except ProxyConfigError as exc:
        raise UserError(f"{where}: {exc}") from None
    names = take(data, "neighbour_names", str, where, "names")
    if names not in ("names", "pseudonyms"):
        raise UserError(f'{where}: neighbour_names must be "names" or "pseudonyms"')
    return DashboardSettings(
        data=base / take(data, "data", str, where),
        instance=None if instance is None else base / instance,
        host=host,
        port=port,
        secure_cookies=take(data, "secure_cookies", bool, where, False),
        session_hours=hours,
        threads=threads,
        currency_symbol=take(data, "currency_symbol", str, where, "\u20ac"),
        currency_subunit=take(data, "currency_subunit", str, where, "ct"),
        trusted_proxies=tuple(proxies),
        broker=broker_config(data, where, base) if "broker" in data else None,
        broker_client_id=take(data, "broker_client_id", str, where, "dashboard"),
        neighbour_names=names,
    )


def _listen(text: str, where: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{where}: listen must look like 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _open_app(settings: DashboardSettings):
    from chain.store import StoreError
    from dashboard.app import create_app

    try:
        return create_app(
            settings.data,
            instance_dir=settings.instance,
            config={
                "SESSION_COOKIE_SECURE": settings.secure_cookies,
                "SESSION_HOURS": settings.session_hours,
                "CURRENCY_SYMBOL": settings.currency_symbol,
                "CURRENCY_SUBUNIT": settings.currency_subunit,
                "TRUSTED_PROXIES": settings.trusted_proxies,
                "NEIGHBOUR_NAMES": settings.neighbour_names,
                "INDEX_SYNC": "off",  # a background thread keeps the index up to date
            },
        )
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot use the dashboard's folder: {exc.strerror} ({exc.filename})") from None


def _keep_indexing(app, stop: threading.Event) -> None:
    import logging

    indexer = app.extensions["peerwatt"].indexer
    while not stop.wait(2.0):
        try:
            indexer.sync()
        except Exception:  # keep serving; the next round retries
            logging.getLogger("peerwatt.dashboard").exception("indexing the ledger failed")


@click.group(invoke_without_command=True)
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="dashboard.toml")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The node's data folder.")
@click.option("--instance", type=click.Path(path_type=Path), help="Accounts and index folder.")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default 8080).")
@click.pass_context
def dashboard(
    ctx: click.Context,
    config_file: Path | None,
    data_dir: Path | None,
    instance: Path | None,
    host: str | None,
    port: int | None,
) -> None:
    """Serve the web dashboard over a node's ledger (read-only), or manage its users."""
    if ctx.invoked_subcommand is not None:
        return
    if config_file is not None:
        settings = load_settings(config_file)
    elif data_dir is not None:
        settings = DashboardSettings(data=data_dir)
    else:
        raise UserError("give -c dashboard.toml or --data DIR (the node's data folder)")
    overrides = {
        k: v
        for k, v in {"data": data_dir, "instance": instance, "host": host, "port": port}.items()
        if v is not None
    }
    settings = DashboardSettings(**{**settings.__dict__, **overrides})
    serve(settings)


def serve(settings: DashboardSettings) -> None:
    """Index what is new, then serve with waitress until Ctrl-C."""
    from peerwatt.dashboard_server import serve as waitress_server

    app = _open_app(settings)
    report = app.extensions["peerwatt"].indexer.sync()
    click.echo(f"indexed {report.blocks} new block(s) in {report.seconds:.1f} s")
    try:
        server = waitress_server(app, settings.host, settings.port, settings.threads)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            "choose another with --port or stop the program using it"
        ) from None
    stop = threading.Event()
    threading.Thread(target=_keep_indexing, args=(app, stop), name="indexer", daemon=True).start()
    bus = _follow_agents(app, settings)
    click.echo(
        f"dashboard for {app.extensions['peerwatt'].ledger.community.name} on "
        f"http://{settings.host}:{server.effective_port}/ (Ctrl-C to stop)"
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if bus is not None:
            bus.stop()
        server.close()


def _follow_agents(app, settings: DashboardSettings):
    """With a [broker]: subscribe to every agent's retained status (peerwatt/<community>/status/+)
    and keep the latest per meter for the household pages (dashboard/agent_status.py)."""
    if settings.broker is None:
        return None
    from dashboard.agent_status import AgentStatusBoard
    from peerwatt.bus import MqttBus

    services = app.extensions["peerwatt"]
    board = AgentStatusBoard(services.ledger.community.id)

    def connection(up: bool) -> None:
        board.connected = up

    try:
        bus = MqttBus(settings.broker, settings.broker_client_id, on_connection_change=connection)
    except ValueError as exc:
        raise UserError(f"[broker]: {exc}") from None
    bus.subscribe(board.pattern, board.handle)
    services.agent_status = board
    bus.start()
    click.echo(f"following the agents' status on {settings.broker.url}")
    return bus


# -- accounts -------------------------------------------------------------------------------


@dashboard.group()
def user() -> None:
    """Dashboard accounts (kept in the instance folder, never in the ledger)."""


def _accounts(data_dir: Path, instance: Path | None):
    from dashboard.accounts import Accounts
    from dashboard.services import default_instance_dir

    folder = instance or default_instance_dir(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Accounts(folder / "dashboard.sqlite")
    except OSError as exc:
        raise UserError(f"cannot use {folder}: {exc.strerror}") from None


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    if not line:
        raise UserError("no password on stdin (pipe one line, or run in a terminal to be asked)")
    return line.rstrip("\r\n")


@user.command("add")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--instance", type=click.Path(path_type=Path), default=None)
@click.option("--meter", "meters", multiple=True, help="Key id of a meter of this household (repeatable).")
@click.option("--admin", is_flag=True, help="An administrator: sees every household.")
@click.argument("name")
def user_add(data_dir: Path, instance: Path | None, meters: tuple[str, ...], admin: bool, name: str) -> None:
    """Create an account; the password is asked for (or read from stdin)."""
    from chain.store import StoreError
    from dashboard.accounts import AccountError, check_password
    from dashboard.ledger import LedgerReader

    if admin == bool(meters):
        raise UserError("give either --admin or at least one --meter KEYID")
    try:
        ledger = LedgerReader(data_dir)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    enrolled = ledger.meters()
    for meter in meters:
        if meter not in enrolled:
            raise UserError(
                f"meter {meter} is not enrolled in community {ledger.community.id} "
                "(see the key ids in the genesis or the dashboard's ledger page)"
            )
    ledger.close()
    password = _read_password()
    accounts = _accounts(data_dir, instance)
    try:
        check_password(password)
        accounts.add_user(name, password, role="admin" if admin else "household", meters=list(meters))
    except AccountError as exc:
        raise UserError(str(exc)) from None
    finally:
        accounts.close()
    click.echo(f"added {'admin' if admin else 'household'} user {name}")


@user.command("list")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--instance", type=click.Path(path_type=Path), default=None)
def user_list(data_dir: Path, instance: Path | None) -> None:
    """List the accounts."""
    accounts = _accounts(data_dir, instance)
    for name, role, meters in accounts.users():
        click.echo(f"{name}\t{role}\t{' '.join(meters)}")
    accounts.close()


@user.command("remove")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--instance", type=click.Path(path_type=Path), default=None)
@click.argument("name")
def user_remove(data_dir: Path, instance: Path | None, name: str) -> None:
    """Remove an account (its sessions end at once)."""
    from dashboard.accounts import AccountError

    accounts = _accounts(data_dir, instance)
    try:
        accounts.remove_user(name)
    except AccountError as exc:
        raise UserError(str(exc)) from None
    finally:
        accounts.close()
    click.echo(f"removed user {name}")
