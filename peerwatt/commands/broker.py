"""`peerwatt broker`: the community's Mosquitto setup — config, accounts and ACL, TLS, revocation.

``peerwatt broker config`` writes, for a community (its genesis, or the current chain state of a
node's store with ``--data``), a ``mosquitto.conf`` (the settings docs/bus.md explains), an ACL
with one block per node and meter account (peerwatt/broker/access.py, docs/privacy.md) and, with
``--auth password``, a hashed password file with one random password per account (the clear
passwords go to ``credentials/<user>.password``, mode 0600). ``peerwatt broker certs`` makes a
community CA, a broker certificate, one client certificate per account and the CA's revocation
list (``community-ca.crl``, ``--revoke``) with ``cryptography`` (ECDSA P-256). A meter revoked by
vote, or whose owner left, gets no account when they read ``--data``. The commands parse, call
peerwatt/broker/mosquitto.py and peerwatt/broker/certs.py (which the demo calls too) and print.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from peerwatt.broker.access import Account
from peerwatt.broker.certs import CA_CERT, CA_CRL, CA_KEY, CLIENTS_DIR, make_certs
from peerwatt.broker.mosquitto import (
    ACL_NAME,
    CREDENTIALS_DIR,
    DROPIN_DIR,
    PASSWD_NAME,
    check_not_community,
    community_folder_of,
    left_out_line,
    load_registry,
    restart_commands,
    select_accounts,
    write_config,
)
from peerwatt.errors import UserError


@click.group()
def broker() -> None:
    """Set up the community's Mosquitto broker: config, ACL, accounts and TLS certificates."""


_NODE_HELP = (
    "Node account NAME=sequencer, NAME=validator:KEYID, NAME=observer, NAME=operator or NAME=dashboard "
    "(repeatable; default: node-<key id> for each genesis validator)."
)
_DASHBOARD_HELP = (
    "Add the dashboard's read-only account `dashboard` (reads every agent's status/+, writes nothing; "
    "dashboard.toml's broker_client_id). --node NAME=dashboard names it otherwise."
)


_DATA_HELP = (
    "A node's data folder: take the validators, sequencer and meters in force now from its ledger "
    "(meters revoked by vote, or whose owner left, get no account). Instead of --genesis."
)
_EXCLUDE_HELP = "Leave out this account (a name, meter id or validator key id; repeatable)."


@broker.command()
@click.option("--genesis", "genesis_file", type=click.Path(path_type=Path), help="The community's genesis.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help=_DATA_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder to write to.")
@click.option(
    "--etc",
    "etc_dir",
    type=click.Path(path_type=Path),
    help="Where the files will live on the broker (default: --out).",
)
@click.option(
    "--certs",
    "certs_dir",
    type=click.Path(path_type=Path),
    help="TLS files folder (default: ETC/certs); without --etc it must hold the CA, broker.crt and .key.",
)
@click.option(
    "--persistence",
    "persistence_dir",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/mosquitto"),
    show_default=True,
)
@click.option(
    "--auth",
    type=click.Choice(["cert", "password"]),
    default="cert",
    show_default=True,
    help="cert: client certificates from `peerwatt broker certs` (recommended); password: a password file.",
)
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind", default=None, help="Address of the network listener (default: all).")
@click.option(
    "--local-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Plain listener on 127.0.0.1 (--auth password only; default 1883, 0: none).",
)
@click.option("--tls/--no-tls", default=True, show_default=True)
@click.option("--node", "node_specs", multiple=True, help=_NODE_HELP)
@click.option("--meter", "extra_meters", multiple=True, help="Meter id enrolled after genesis (repeatable).")
@click.option("--exclude", "exclude", multiple=True, help=_EXCLUDE_HELP)
@click.option("--dashboard", "dashboard", is_flag=True, help=_DASHBOARD_HELP)
@click.option("--user", "run_user", default="mosquitto", show_default=True, help="User Mosquitto runs as.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace mosquitto.conf and the drop-in even when they were changed since peerwatt wrote them.",
)
def config(
    genesis_file: Path | None,
    data_dir: Path | None,
    out_dir: Path,
    etc_dir: Path | None,
    certs_dir: Path | None,
    persistence_dir: Path,
    auth: str,
    port: int,
    bind: str | None,
    local_port: int | None,
    tls: bool,
    node_specs: tuple[str, ...],
    extra_meters: tuple[str, ...],
    exclude: tuple[str, ...],
    dashboard: bool,
    run_user: str,
    force: bool,
) -> None:
    """Write mosquitto.conf, peerwatt.acl, a systemd drop-in (and, with --auth password,
    peerwatt.passwd and credentials/) for a community: one account per node and per meter.
    A rerun replaces mosquitto.conf and the drop-in only while they are as it wrote them (--force:
    also when they were edited). A broker folder `peerwatt community init` made is refused: the
    community commands keep its accounts."""
    check_not_community(out_dir)
    community, registry = load_registry(genesis_file, data_dir)
    accounts = select_accounts(registry, node_specs, extra_meters, exclude, dashboard)
    result = write_config(
        out_dir,
        community,
        accounts,
        etc_dir=etc_dir,
        certs_dir=certs_dir,
        persistence_dir=persistence_dir,
        auth=auth,
        port=port,
        bind=bind,
        local_port=local_port,
        tls=tls,
        run_user=run_user,
        force=force,
    )
    nodes = [f"{a.name} ({a.role})" for a in accounts if a.role not in ("meter", "dashboard")]
    meters = sum(a.role == "meter" for a in accounts)
    dashboards = [a.name for a in accounts if a.role == "dashboard"]
    make_dir, run = result.start
    written = f", {PASSWD_NAME} and {CREDENTIALS_DIR}/" if auth == "password" else ""
    click.echo(f"wrote {result.conf}, {ACL_NAME}{written} and {result.dropin}")
    dash = f"; dashboard (reads status/+ only): {', '.join(dashboards)}" if dashboards else ""
    click.echo(f"accounts: {meters} meter(s); nodes: {', '.join(nodes) or 'none'}{dash}")
    left_out = left_out_line(registry)
    if left_out:
        click.echo(left_out)
    if auth == "cert":
        source = f"--data {data_dir}" if data_dir is not None else "--genesis ..."
        click.echo(
            f"issue their client certificates (and revoke those of accounts left out) with "
            f"`peerwatt broker certs {source} --out CERTS`"
        )
    if result.still:
        click.echo(f"then, on the broker: {result.still}")
    click.echo(f"start as root: {make_dir} && {run}")
    click.echo(
        f"or with systemd: mkdir -p /etc/systemd/system/{DROPIN_DIR} && cp {shlex.quote(str(result.dropin))} "
        f"/etc/systemd/system/{DROPIN_DIR}/ && systemctl daemon-reload && systemctl restart mosquitto"
    )
    etc = (etc_dir or out_dir).absolute()
    systemd, by_hand = restart_commands(etc)
    click.echo(
        "a running broker reads a new ACL, password file or CRL when restarted (not SIGHUP: Debian's "
        "Mosquitto 2.0.11 died on a reload, docs/bus.md):"
    )
    click.echo(f"restart, under systemd (the drop-in): {systemd}")
    click.echo(f"restart, started by hand: {by_hand}")


def _check_not_community_certs(out_dir: Path) -> None:
    """A certificates folder of a community made by `peerwatt community init` (its broker/certs/,
    or broker-etc/certs/ and a copy of it) is refused in one line naming the community command:
    its accounts are in community.toml (operators, meters given an account by add-meter, the
    dashboard, validators added later), which neither --genesis nor --data knows, and the copies
    for the broker machine and the validators' and households' folders would be left behind.
    Found in a QA pass: `broker certs --reissue <meter id>` there said "no such account"."""
    if out_dir.absolute().name != "certs":
        return
    where = community_folder_of(out_dir.absolute().parent)
    if where is None:
        return
    raise UserError(
        f"{out_dir} holds the certificates of a community made by `peerwatt community init`, whose "
        "accounts the community commands keep: a new certificate for one account is `peerwatt community "
        f"reissue --dir {where} ACCOUNT` (a meter id, node-<key id>, operator-<key id> or dashboard); "
        f"revoking meters the ledger revoked is `peerwatt community revoke --dir {where} --data NODE_DIR`"
    )


@broker.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--community", default=None, help="Named in the CA's subject (default: the genesis's).")
@click.option("--host", "hosts", multiple=True, help="Broker DNS name or IP (repeatable): its certificate.")
@click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(path_type=Path),
    help="Issue a client certificate per node and meter account (CN = account; a meter's = its id).",
)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help=_DATA_HELP)
@click.option("--node", "node_specs", multiple=True, help=_NODE_HELP)
@click.option("--meter", "extra_meters", multiple=True, help="Meter id enrolled after genesis (repeatable).")
@click.option("--exclude", "exclude", multiple=True, help=_EXCLUDE_HELP)
@click.option("--dashboard", "dashboard", is_flag=True, help=_DASHBOARD_HELP)
@click.option(
    "--revoke",
    "revoke",
    multiple=True,
    help="Revoke this account's certificate: it goes into community-ca.crl (repeatable).",
)
@click.option(
    "--reissue",
    "reissue",
    multiple=True,
    help="A new certificate and key for this account (repeatable): one whose certificate was revoked, or "
    "one whose certificate is current (it is revoked: before it expires, or a lost key).",
)
@click.option(
    "--days",
    default=825,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="Broker and client certificates.",
)
@click.option("--ca-days", default=3650, show_default=True, type=click.IntRange(1, 36500))
@click.option("--force", is_flag=True, help="Replace existing broker and client certificates.")
@click.option(
    "--user",
    "run_user",
    default="mosquitto",
    show_default=True,
    help="User Mosquitto runs as (reads broker.key).",
)
def certs(
    out_dir: Path,
    community: str | None,
    hosts: tuple[str, ...],
    genesis_file: Path | None,
    data_dir: Path | None,
    node_specs: tuple[str, ...],
    extra_meters: tuple[str, ...],
    exclude: tuple[str, ...],
    dashboard: bool,
    revoke: tuple[str, ...],
    reissue: tuple[str, ...],
    days: int,
    ca_days: int,
    force: bool,
    run_user: str,
) -> None:
    """Make (or reuse) the community CA in OUT; issue the broker's certificate (--host) and one
    client certificate per node and meter account (--genesis or --data) in OUT/clients/; revoke
    certificates (--revoke, and with --data those of meters the ledger revoked) in OUT/community-ca.crl."""
    if not hosts and genesis_file is None and data_dir is None and not revoke:
        raise UserError(
            "give --host (the broker's certificate), --genesis or --data (one per node and meter) "
            "and/or --revoke ACCOUNT"
        )
    if genesis_file is not None or data_dir is not None or revoke or reissue:
        _check_not_community_certs(out_dir)
    accounts: list[Account] = []
    name = community or "peerwatt"
    revoke_all = tuple(revoke)
    if genesis_file is not None or data_dir is not None:
        chain_community, registry = load_registry(genesis_file, data_dir)
        name = community or chain_community
        accounts = select_accounts(registry, node_specs, extra_meters, exclude, dashboard)
        # a meter the ledger revoked (or whose owner left) loses its certificate too
        clients = out_dir / CLIENTS_DIR
        revoke_all += tuple(
            kid
            for kid in sorted(registry.left_out)
            if (clients / f"{kid}.crt").exists() and kid not in revoke
        )
    known = {a.name for a in accounts}
    for account in reissue:  # as --revoke of no such account, an error: not a silent no-op
        if account not in known:
            where = "the accounts of --genesis/--data (and --node/--meter)" if accounts else "no accounts"
            raise UserError(
                f"--reissue {account}: no such account among {where}: give --genesis or --data, "
                "and the account's name (node-<key id>, or a meter id)"
            )
    result = make_certs(
        out_dir,
        community=name,
        hosts=hosts,
        accounts=accounts,
        revoke=revoke_all,
        reissue=reissue,
        days=days,
        ca_days=ca_days,
        force=force,
        run_user=run_user,
    )
    click.echo(
        f"{result.made} the community CA {out_dir / CA_CERT}; keep {CA_KEY} offline; give agents {CA_CERT}"
    )
    if result.broker_cert is not None:
        click.echo(f"wrote {result.broker_cert} for {', '.join(hosts)} (valid {days} days)")
    if result.still:
        click.echo(f"then, on the broker: {result.still}")
    if accounts:
        click.echo(
            f"issued {result.issued} client certificate(s) in {out_dir / CLIENTS_DIR} (<account>.crt and "
            ".key, mode 0600)"
            + (f"; kept {result.kept} existing (--force replaces them)" if result.kept else "")
        )
    if result.skipped:
        click.echo(
            f"no new certificate for {len(result.skipped)} account(s) revoked earlier: "
            f"{', '.join(result.skipped)} (--reissue NAME gives one)"
        )
    if genesis_file is not None or data_dir is not None:
        left_out = left_out_line(registry)
        if left_out:
            click.echo(left_out)
    if result.revoked:
        click.echo(f"revoked the certificate(s) of {', '.join(result.revoked)}")
    click.echo(
        f"wrote {out_dir / CA_CRL} ({result.crl_entries} revoked certificate(s)); "
        "a running broker reads it when restarted (the restart `peerwatt broker config` prints)"
    )
