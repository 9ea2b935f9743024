"""`peerwatt dashboard`: serve the web dashboard with waitress, and manage its accounts.

    peerwatt dashboard -c dashboard.toml
    peerwatt dashboard --data node-data --port 8080
    peerwatt dashboard user add -c dashboard.toml alice --meter <key id>   (password prompted or on stdin)
    peerwatt dashboard user add -c dashboard.toml admin --admin
    peerwatt dashboard user list -c dashboard.toml
    peerwatt dashboard user remove -c dashboard.toml alice
    peerwatt dashboard adopt -c dashboard.toml   (an older instance folder: docs/dashboard.md)

The account commands read the data and instance folders from the dashboard.toml the dashboard
runs with (or take --data, and --instance, as the dashboard does without a config).

dashboard.toml: see peerwatt/dashboard_config.py (and docs/dashboard.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from peerwatt.dashboard_config import DashboardSettings, load_settings
from peerwatt.errors import UserError
from peerwatt.settings import check_broker_identity, check_tls_files


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
                "RECORD_COMMUNITY": False,  # serve() does, once the start succeeded
            },
        )
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot use the dashboard's folder: {exc.strerror} ({exc.filename})") from None


def stop_serving(signum: int, frame: object) -> None:
    """SIGTERM while serving: raised as KeyboardInterrupt, the one exception (with SystemExit)
    that waitress lets out of its socket handlers. peerwatt's own Terminated, raised while the
    main thread was inside one of them, was taken by waitress's bare ``except:`` for a request's
    error, and the dashboard went on serving (a hang in loaded test runs)."""
    raise KeyboardInterrupt


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
        if host is not None or port is not None:
            raise UserError(
                f"--host and --port are the server's: `peerwatt dashboard {ctx.invoked_subcommand}` "
                "takes -c dashboard.toml (or --data and --instance)"
            )
        # `peerwatt dashboard -c dashboard.toml user add ...`: the folders the subcommand uses
        # (they were taken and ignored: the accounts went into the default instance folder)
        ctx.obj = {"config": config_file, "data": data_dir, "instance": instance}
        return
    if config_file is not None:
        settings = load_settings(config_file)
        if settings.broker is not None:
            check_tls_files(settings.broker, str(config_file))
            # the broker takes the certificate's CN as account and client id: a meter's, node's or
            # operator's would push that owner off the broker
            check_broker_identity(
                settings.broker,
                str(config_file),
                own=settings.broker_client_id,
                signer=f"broker_client_id is {settings.broker_client_id!r}",
                strict=False,
            )
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
    _check_listen(
        settings, "--host" if host is not None or config_file is None else f"listen in {config_file}"
    )
    serve(settings)


def _url_host(host: str) -> str:
    """A host as it stands in a URL or before ":port" (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _check_listen(settings: DashboardSettings, source: str) -> None:
    """An address the dashboard cannot listen on is one line before anything is opened or
    created: a host that is no address (999.1.1.1, a name that does not resolve: waitress raised
    "Invalid host/port specified." with a traceback, after the instance folder was made), one of
    another machine, an IPv4 address written as IPv6 (::ffff:127.0.0.1, which waitress cannot
    bind), a port this user may not use (below 1024 without root), or a port in use (a trial
    bind, as waitress binds: SO_REUSEADDR, and IPv6 sockets IPv6 only). The host is escaped for
    the terminal (a newline in it made two lines)."""
    import errno
    import ipaddress
    import socket

    from dashboard.text import for_terminal

    where = for_terminal(f"{_url_host(settings.host)}:{settings.port}")
    source = for_terminal(source)
    this_machine = f"give {source} an address of this machine, e.g. 127.0.0.1, ::1 or 0.0.0.0 (every address)"
    try:
        mapped = getattr(ipaddress.ip_address(settings.host), "ipv4_mapped", None)
    except ValueError:  # a name, "*", or no address at all (getaddrinfo says which below)
        mapped = None
    if mapped is not None:
        raise UserError(
            f"cannot listen on {where} (an IPv4 address written as IPv6): give {source} {mapped} "
            "(the IPv4 address itself)"
        )
    host = None if settings.host == "*" else settings.host  # waitress: "*" is every address
    try:
        found = socket.getaddrinfo(
            host, settings.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot listen on {where} ({for_terminal(reason)}): {this_machine}") from None
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as trial:
                if family == socket.AF_INET6:  # as waitress does
                    trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                trial.bind(address)
        except OSError as exc:
            reason = for_terminal(exc.strerror or exc)
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"cannot listen on {where} ({reason}); "
                    "choose another with --port or stop the program using it"
                ) from None
            if exc.errno == errno.EACCES:  # the port, not the address
                first = _first_unprivileged_port()
                raise UserError(
                    f"cannot listen on {where} ({reason}): port {settings.port} is one only root may "
                    f"listen on (below {first} here); choose a port from {first} up with --port (e.g. "
                    "8080), or serve behind a reverse proxy on port 80/443"
                ) from None
            raise UserError(f"cannot listen on {where} ({reason}): {this_machine}") from None


def _first_unprivileged_port() -> int:
    """The first port a user who is not root may listen on (Linux's sysctl; 1024 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def _listening(server, host: str) -> str:
    """The URL(s) waitress listens on: a host of several addresses ("*", a name of an IPv4 and an
    IPv6 address) is one socket each (waitress's MultiSocketServer, which has no effective_port
    but its effective_listen)."""
    several = getattr(server, "effective_listen", None)
    if not several:
        return f"http://{_url_host(host)}:{server.effective_port}/"
    return " and ".join(f"http://{_url_host(str(h))}:{p}/" for h, p in several)


def serve(settings: DashboardSettings) -> None:
    """Index what is new, then serve with waitress until Ctrl-C."""
    from chain.store import StoreError
    from dashboard.accounts import AccountsFileError
    from dashboard.indexdb import IndexFileError
    from peerwatt.dashboard_server import serve as waitress_server

    app = _open_app(settings)
    try:
        report = app.extensions["peerwatt"].indexer.sync()
    except (IndexFileError, AccountsFileError) as exc:  # the dashboard's own files: the line says what to do
        raise UserError(str(exc)) from None
    except StoreError as exc:  # a ledger row that does not decode (damaged or tampered with)
        raise UserError(f"{exc} (`peerwatt verify --data {settings.data}` checks the whole store)") from None
    click.echo(f"indexed {report.blocks} new block(s) in {report.seconds:.1f} s")
    try:
        server = waitress_server(app, settings.host, settings.port, settings.threads)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {_url_host(settings.host)}:{settings.port} ({exc.strerror or exc}); "
            "choose another with --port or stop the program using it"
        ) from None
    except ValueError as exc:  # waitress: "Invalid host/port specified." (checked before, in one line)
        raise UserError(f"cannot listen on {_url_host(settings.host)}:{settings.port} ({exc})") from None
    app.extensions["peerwatt"].record_community()  # started: the instance folder is this community's
    stop = threading.Event()
    threading.Thread(target=_keep_indexing, args=(app, stop), name="indexer", daemon=True).start()
    bus = _follow_agents(app, settings)
    from dashboard.text import for_terminal

    click.echo(  # the name is the community's choice: no bidi or control character reaches the terminal
        f"dashboard for {for_terminal(app.extensions['peerwatt'].ledger.community.name)} on "
        f"{for_terminal(_listening(server, settings.host))} (Ctrl-C to stop)"
    )
    signal.signal(signal.SIGTERM, stop_serving)
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


def _folder_options(func):
    """The folders an account command works on: the dashboard's own config (-c dashboard.toml:
    its data and instance, read as `peerwatt dashboard -c` reads them), or --data (and --instance).
    Found in a QA pass: accounts made with --data alone, as the docs showed, went into the default
    instance folder while the dashboard.toml the dashboard ran with named another, and every login
    failed; `user add -c dashboard.toml` was no option."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="The dashboard.toml the dashboard runs with (its data and instance folders).",
        ),
        click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The node's data folder."),
        click.option(
            "--instance",
            type=click.Path(path_type=Path),
            default=None,
            help="Accounts and index folder (default: dashboard.toml's instance, or <data>/../dashboard).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _folders(
    config_file: Path | None, data_dir: Path | None, instance: Path | None
) -> tuple[Path, Path | None]:
    """(data folder, instance folder or None for the default) of an account command: its own
    options, else those given before the subcommand (`peerwatt dashboard -c dashboard.toml user
    add ...`); --data and --instance override the config's, as for the dashboard itself."""
    given = click.get_current_context().find_object(dict) or {}
    config_file = config_file or given.get("config")
    data_dir = data_dir or given.get("data")
    instance = instance or given.get("instance")
    if config_file is not None:
        settings = load_settings(config_file)
        return data_dir or settings.data, instance or settings.instance
    if data_dir is None:
        raise UserError("give -c dashboard.toml or --data DIR (the node's data folder)")
    return data_dir, instance


def _accounts(data_dir: Path, instance: Path | None, *, create: bool = True):
    """The instance folder's accounts. Without ``create``, a folder with no accounts database is
    a one-line error (nothing made)."""
    from chain.store import StoreError
    from dashboard.accounts import Accounts
    from dashboard.services import default_instance_dir

    folder = instance or default_instance_dir(data_dir)
    if not create and not (folder / "dashboard.sqlite").is_file():
        raise UserError(
            f"no dashboard accounts in {folder} (there is no {folder / 'dashboard.sqlite'}): add one with "
            "`peerwatt dashboard user add`, or give the dashboard.toml the dashboard runs with (-c) or its "
            "--instance folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        accounts = Accounts(folder / "dashboard.sqlite")
    except OSError as exc:
        raise UserError(f"cannot use {folder}: {exc.strerror}") from None
    except StoreError as exc:
        raise UserError(str(exc)) from None
    return accounts


def _checked_accounts(data_dir: Path, instance: Path | None, ledger):
    """The instance folder's accounts, checked to be the ledger's community's, and what to
    record in it once the caller's work is done (dashboard.services.check_instance)."""
    from chain.store import StoreError
    from dashboard.services import check_instance

    accounts = _accounts(data_dir, instance)
    try:
        return accounts, check_instance(accounts.path.parent, accounts, ledger)
    except StoreError as exc:
        accounts.close()
        raise UserError(str(exc)) from None


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    if not line:
        raise UserError("no password on stdin (pipe one line, or run in a terminal to be asked)")
    return line.rstrip("\r\n")


@user.command("add")
@_folder_options
@click.option("--meter", "meters", multiple=True, help="Key id of a meter of this household (repeatable).")
@click.option("--admin", is_flag=True, help="An administrator: sees every household.")
@click.argument("name")
def user_add(
    config_file: Path | None,
    data_dir: Path | None,
    instance: Path | None,
    meters: tuple[str, ...],
    admin: bool,
    name: str,
) -> None:
    """Create an account; the password is asked for (or read from stdin)."""
    from chain.store import StoreError
    from dashboard.accounts import AccountError, check_password
    from dashboard.ledger import LedgerReader
    from dashboard.services import record_instance

    if admin == bool(meters):
        raise UserError("give either --admin or at least one --meter KEYID")
    data_dir, instance = _folders(config_file, data_dir, instance)
    try:
        ledger = LedgerReader(data_dir)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    enrolled = ledger.meters()
    for meter in meters:
        if meter not in enrolled:
            ledger.close()
            raise UserError(
                f"meter {meter} is not enrolled in community {ledger.community.id} "
                "(see the key ids in the genesis or the dashboard's ledger page)"
            )
        if not enrolled[meter].get("active", True):  # (a QA pass: a revoked meter was taken)
            ledger.close()
            raise UserError(
                f"meter {meter} was revoked by community {ledger.community.id} (it is not enrolled any "
                "more): a household account names meters enrolled now"
            )
    from dashboard.services import default_instance_dir

    # an instance folder of another community is refused before the password is asked for; a new
    # one is made only once there is a password
    accounts = pending = None
    try:
        if ((instance or default_instance_dir(data_dir)) / "dashboard.sqlite").exists():
            accounts, pending = _checked_accounts(data_dir, instance, ledger)
        password = _read_password()
        if accounts is None:
            accounts, pending = _checked_accounts(data_dir, instance, ledger)
    except BaseException:
        if accounts is not None:
            accounts.close()
        raise
    finally:
        ledger.close()
    try:
        check_password(password)
        accounts.add_user(name, password, role="admin" if admin else "household", meters=list(meters))
        record_instance(accounts.path.parent, accounts, pending)  # only once it is added
    except AccountError as exc:
        raise UserError(str(exc)) from None
    finally:
        accounts.close()
    click.echo(f"added {'admin' if admin else 'household'} user {name}")


@user.command("list")
@_folder_options
def user_list(config_file: Path | None, data_dir: Path | None, instance: Path | None) -> None:
    """List the accounts."""
    accounts = _accounts(*_folders(config_file, data_dir, instance), create=False)
    for name, role, meters in accounts.users():
        click.echo(f"{name}\t{role}\t{' '.join(meters)}")
    accounts.close()


@user.command("remove")
@_folder_options
@click.argument("name")
def user_remove(config_file: Path | None, data_dir: Path | None, instance: Path | None, name: str) -> None:
    """Remove an account (its sessions end at once)."""
    from dashboard.accounts import AccountError

    accounts = _accounts(*_folders(config_file, data_dir, instance), create=False)
    try:
        accounts.remove_user(name)
    except AccountError as exc:
        raise UserError(str(exc)) from None
    finally:
        accounts.close()
    click.echo(f"removed user {name}")


@dashboard.command("adopt")
@_folder_options
def adopt(config_file: Path | None, data_dir: Path | None, instance: Path | None) -> None:
    """Record that an instance folder made by an older version (which recorded no community)
    holds the accounts of the community of --data: check them with `user list` first."""
    data_dir, instance = _folders(config_file, data_dir, instance)
    from chain.store import StoreError
    from dashboard.ledger import LedgerReader
    from dashboard.services import (
        InstanceNotRecorded,
        PendingCommunity,
        check_instance,
        index_genesis,
        record_instance,
    )
    from dashboard.text import for_terminal

    try:
        ledger = LedgerReader(data_dir)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        accounts = _accounts(data_dir, instance, create=False)
    except BaseException:
        ledger.close()
        raise
    folder = accounts.path.parent
    community = ledger.community
    try:
        try:
            record = check_instance(folder, accounts, ledger) is not None
        except InstanceNotRecorded:
            record = True  # what the operator confirms
        except StoreError as exc:  # recorded for another community, or its index was built from one
            built_from = accounts.meta("genesis") is None and index_genesis(folder / "index.sqlite")
            hint = (
                f" (its index.sqlite was built from genesis {built_from[:16]}: if you are sure, delete "
                "it, it is rebuilt from the ledger, and adopt again)"
                if built_from
                else ""
            )
            raise UserError(f"{exc}{hint}") from None
        named = f"community {for_terminal(community.id)} (genesis {community.genesis_hash[:16]})"
        if not record:
            click.echo(f"the instance folder {for_terminal(folder)} is already that of {named}")
            return
        record_instance(folder, accounts, PendingCommunity(community.genesis_hash, community.id, False))
        click.echo(
            f"the instance folder {for_terminal(folder)} is now that of {named}, "
            f"with its {len(accounts.users())} account(s)"
        )
    finally:
        accounts.close()
        ledger.close()
