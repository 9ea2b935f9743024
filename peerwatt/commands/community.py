"""`peerwatt community init`: everything a new community needs, in one folder, from a few answers.

`peerwatt community add-meter`: the broker account of a household that sent a join request (its
client certificate and the ACL with its block), for the coordinator who holds the community CA;
`community add-dashboard`: the dashboard's read-only account; `community reissue`: a new client
certificate for one account (renewal, a lost key), the old one revoked, or (`reissue broker`) the
broker's own certificate renewed; `community revoke`: take away the
accounts of meters the ledger revoked; `community add-validator`: a validator joining later (its
node and operator accounts, node.toml, operator.toml; its key pair is made on its own machine);
`community remove-validator`: take a removed validator's accounts away. Each regenerates the
broker's files with every account the community has.

The folder (``--out``) holds:

- ``genesis.toml`` (commented; the validators are also the founding members, who vote on members),
- ``validator-N/`` per validator: its key, ``node.toml``, ``operator.toml`` (the broker account it
  publishes governance messages with), the genesis, the CA certificate and its client certificates,
- ``broker/`` the community CA and its key, every account's client certificate and key (one account
  per node, operator, meter and the dashboard), the CRL and the Mosquitto configuration; it stays
  with the coordinator. The community commands keep it: `peerwatt broker config` refuses it,
- ``broker-etc/`` what the broker machine gets (into ``--broker-etc``): mosquitto.conf, the ACL,
  the systemd drop-in, the CA certificate, the CRL and the broker's own certificate and key,
- ``household/`` what every household needs before `peerwatt agent setup` (genesis, CA certificate),
- ``community.toml`` (the choices and the accounts, validators with their API addresses, for the
  later commands) and ``SUMMARY.txt`` (what to copy where).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from chain.genesis import RULES_NEW, GenesisError, check_timezone, default_quorum, load_genesis
from chain.keys import generate_private_key, key_id, public_key_pem, public_key_sec1, save_private_key
from chain.schema import COMMUNITY_ID, SchemaError
from market.params import max_price_per_kwh
from peerwatt.broker.access import DASHBOARD_ACCOUNT
from peerwatt.errors import UserError, check_writable
from peerwatt.onboarding import (
    JoinRequest,
    JoinRequestError,
    check_genesis_inputs,
    describe_interval,
    quorum_sentence,
    read_join_request,
)

DEFAULT_BROKER_ETC = Path("/etc/mosquitto/peerwatt")
# Debian's own mosquitto.service keeps its mosquitto.db here: a community's broker gets a folder
# below it (a second broker writing the same file corrupts both; found in a QA pass)
DEBIAN_PERSISTENCE = Path("/var/lib/mosquitto")
# validators of one community: every block takes votes from most of them, each to each
MAX_VALIDATORS = 100


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(value, text: str, default=None, type=None, flag: str = "a flag", needed: str | None = None):
    """The flag's value, else a prompt on a terminal, else the default (None: a required flag,
    named in the error). On a terminal, an empty (or blank) answer to a question without a
    default says why the question comes again (``needed``), as click's prompt did not (a QA pass)."""
    if value is not None:
        return value
    if _interactive():
        if default is not None:
            return click.prompt(text, default=default, type=type)
        while True:
            answer = click.prompt(text, default="", show_default=False, type=type)
            if not isinstance(answer, str) or answer.strip():
                return answer.strip() if isinstance(answer, str) else answer
            click.echo(f"{needed or 'an answer is needed'}: it has no default (Ctrl-C stops)")
    if default is None:
        raise UserError(f"{text}: give it as {flag} (no terminal to ask on)")
    return default


def _price(text: str, what: str, param: str, *, zero_ok: bool = False) -> int:
    """A price per kWh in the community's currency ('0.08') -> micro-units per kWh (exact, no
    float), at most what the ledger's rules allow for market parameter ``param``. Always
    currency: reading large numbers as micro-units (as this once did from 100 up) made
    '--grid-fee 150' 150 micro-units without a word."""
    try:
        if "_" in text:  # Decimal reads 0_08 as 8
            raise InvalidOperation
        value = Decimal(text.strip())
        micro = value * 1_000_000
        whole = value.is_finite() and micro == micro.to_integral_value()
    except (InvalidOperation, ArithmeticError):  # not a number, sNaN, 1e999999 (decimal.Overflow)
        raise UserError(f"{what} {text!r}: write a price per kWh such as 0.08") from None
    most = max_price_per_kwh(param, RULES_NEW)
    if whole and micro > most:
        raise UserError(f"{what} {text!r}: more than the ledger can hold ({most // 10**6} per kWh)")
    if not whole or micro < 0 or (micro == 0 and not zero_ok):
        rule = "0 or more" if zero_ok else "more than 0"
        raise UserError(
            f"{what} {text!r}: a price per kWh in currency, {rule}, at most 6 decimals (e.g. 0.08)"
        )
    return int(micro)


def genesis_text(
    *,
    community: str,
    name: str,
    now: int,
    timezone: str,
    validators: list[tuple[str, str]],
    interval_s: int,
    gate_s: int,
    feed_in: int,
    retail: int,
    grid_fee: int,
    levies: int,
) -> str:
    """The commented genesis TOML (validators as (name, SEC1 hex); the first is the sequencer)."""
    n = len(validators)
    sequencer = key_id_of(validators[0][1])
    lines = [
        "# peerwatt genesis: height 0 of the community's ledger, written by `peerwatt community init`.",
        "# Every node starts from byte-for-byte this file: `peerwatt node init` prints its hash.",
        "",
        "[community]",
        f'id = "{community}"',
        f'name = "{name}"',
        f"time = {now}                 # genesis time, Unix seconds (UTC)",
        'app = "market"',
        f'timezone = "{timezone}"',
        "",
        "[chain]",
        f"# quorum: {quorum_sentence(n)}",
        f"quorum = {default_quorum(n)}",
        f'sequencer = "{sequencer}"   # validator-1 cuts the blocks',
        "block_s = 2                  # cut a block every 2 s while transactions wait",
        "max_open_proposals = 32      # open proposals one key may have; bounds their arguments too",
        f'rules = {RULES_NEW}                    # ledger rules (docs/ledger.md, "Rules")',
        "",
        "[app]                        # community parameters (integers only; changed later by vote)",
        f"interval_s = {interval_s}{' ' * max(1, 17 - len(str(interval_s)))}"
        f"# delivery interval ({describe_interval(interval_s)})",
        f"gate_s = {gate_s}{' ' * max(1, 21 - len(str(gate_s)))}"
        f"# orders close {describe_interval(gate_s)} before an interval starts",
        "horizon_s = 86400            # orders accepted at most a day ahead",
        "settle_after_intervals = 2   # settle at the latest 2 intervals after the interval's end",
        f"feed_in_price = {feed_in}{' ' * max(1, 14 - len(str(feed_in)))}"
        f"# micro-units per kWh ({feed_in / 1e6:.6g} per kWh): price floor",
        f"retail_price = {retail}{' ' * max(1, 15 - len(str(retail)))}"
        f"# micro-units per kWh ({retail / 1e6:.6g} per kWh): price cap",
        f"grid_fee_per_kwh = {grid_fee}{' ' * max(1, 11 - len(str(grid_fee)))}"
        "# charged to the buyer of locally traded energy, shown apart",
        f"levies_per_kwh = {levies}{' ' * max(1, 13 - len(str(levies)))}# idem",
        'mechanism = "uniform"        # uniform | pay-as-bid | community',
        'fee_rates_at = "clearing"    # trades settle at the fee rates of their gate closure',
        "max_reading_corrections = 3  # how often a meter may correct one interval's reading",
        "max_orders_per_interval = 12 # orders a meter may place for one interval, replacements included",
        "",
    ]
    for vname, sec1 in validators:
        lines += ["[[validators]]", f'key = "{sec1}"', f'name = "{vname}"', ""]
    lines.append("# The validators' keys are also the founding members: they vote on new members.")
    lines.append("# Households join by vote (`peerwatt member admit`), not by editing this file.")
    for vname, sec1 in validators:
        lines += ["[[members]]", f'key = "{sec1}"', f'name = "{vname} (founding member)"', ""]
    return "\n".join(lines)


def key_id_of(sec1_hex: str) -> str:
    from chain.keys import load_public_key

    return key_id(load_public_key(sec1_hex))


def _peers_line(peers: list[str]) -> str:
    return "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]"


def _node_toml(
    role: str, kid: str, host: str, port: int, peers: list[str], broker_url: str, by: str = "init"
) -> str:
    return f"""# node.toml of this validator (paths relative to this file), by `peerwatt community {by}`
data = "node-data"              # make it once: peerwatt node init --genesis genesis.toml --data node-data
genesis = "genesis.toml"        # node run refuses a data folder holding another genesis's ledger
role = "{role}"
key = "validator.key"           # this validator's key (mode 0600): keep it on this machine only
http = "{host}:{port}"          # this node's API (catch-up for the other validators, node status)
{_peers_line(peers)}
client_id = "node-{kid}"

[broker]
url = "{broker_url}"
ca_file = "community-ca.crt"
cert_file = "node-client.crt"
key_file = "node-client.key"
"""


def _operator_toml(kid: str, broker_url: str) -> str:
    return f"""# The broker account this validator publishes governance messages with
# (`peerwatt member admit`, `peerwatt gov vote`); its node account may publish only seals.
client_id = "operator-{kid}"

[broker]
url = "{broker_url}"
ca_file = "community-ca.crt"
cert_file = "operator-client.crt"
key_file = "operator-client.key"
"""


def _copy_private(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.unlink(missing_ok=True)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass
class Layout:
    """community.toml: the choices `community add-meter` needs to regenerate the broker files."""

    out: Path
    community: str
    broker_url: str
    broker_host: str
    broker_port: int
    broker_etc: Path
    persistence: Path
    nodes: list[str]
    meters: list[str]
    revoked: list[str] = field(default_factory=list)  # meters the ledger revoked: never again
    # every validator the folder made (init, add-validator): name, key_id, http (its API), folder
    validators: list[dict[str, str]] = field(default_factory=list)
    removed_validators: list[str] = field(default_factory=list)  # key ids: their accounts are revoked

    def write(self) -> None:
        q = '", "'
        validators = "".join(
            "  {"
            + ", ".join(f"{k} = {json.dumps(v[k])}" for k in ("name", "key_id", "http", "folder"))
            + "},\n"
            for v in self.validators
        )
        (self.out / "community.toml").write_text(
            "# written by `peerwatt community init` and the other community commands, which read it\n"
            f'community = "{self.community}"\n'
            f'broker_url = "{self.broker_url}"\n'
            f'broker_host = "{self.broker_host}"\n'
            f"broker_port = {self.broker_port}\n"
            f'broker_etc = "{self.broker_etc}"\n'
            f'persistence = "{self.persistence}"\n'
            f'nodes = ["{q.join(self.nodes)}"]\n'
            + (f'meters = ["{q.join(self.meters)}"]\n' if self.meters else "meters = []\n")
            + (f'revoked = ["{q.join(self.revoked)}"]\n' if self.revoked else "")
            + (f"validators = [\n{validators}]\n" if self.validators else "")
            + (
                f'removed_validators = ["{q.join(self.removed_validators)}"]\n'
                if self.removed_validators
                else ""
            )
        )

    @classmethod
    def read(cls, out: Path) -> Layout:
        path = out / "community.toml"
        try:
            data = tomllib.loads(path.read_text())
            return cls(
                out=out,
                community=data["community"],
                broker_url=data["broker_url"],
                broker_host=data["broker_host"],
                broker_port=data["broker_port"],
                broker_etc=Path(data["broker_etc"]),
                persistence=Path(data["persistence"]),
                nodes=list(data["nodes"]),
                meters=list(data["meters"]),
                revoked=list(data.get("revoked", [])),
                validators=[
                    {k: str(v[k]) for k in ("name", "key_id", "http", "folder")}
                    for v in data.get("validators", [])
                ]
                or _validator_folders(out),
                removed_validators=list(data.get("removed_validators", [])),
            )
        except FileNotFoundError:
            raise UserError(f"{path} not found: give the folder `peerwatt community init` wrote") from None
        except OSError as exc:  # a folder, unreadable
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is damaged ({exc}): it is written by `peerwatt community init`"
            ) from None


def _validator_folders(out: Path) -> list[dict[str, str]]:
    """The validators of a community.toml written before it recorded them: from the node.toml of
    each ``validator-N/`` folder `community init` wrote."""
    found = []
    for node_toml in sorted(
        out.glob("validator-*/node.toml"), key=lambda p: (len(p.parent.name), p.parent.name)
    ):
        try:
            data = tomllib.loads(node_toml.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        client_id = str(data.get("client_id", ""))
        if client_id.startswith("node-") and "http" in data:
            folder = node_toml.parent.name
            found.append(
                {"name": folder, "key_id": client_id[5:], "http": str(data["http"]), "folder": folder}
            )
    return found


BROKER_ETC = "broker-etc"  # what the broker machine gets: no CA key, no account's key
BROKER_WORD = "broker"  # `community reissue broker`: the broker's own certificate, never an account
DASHBOARD_SPEC = f"{DASHBOARD_ACCOUNT}=dashboard"


@dataclass
class BrokerFiles:
    """What `broker_files` made: lines to show, and the command that starts the broker."""

    start: str
    left_out: str | None = None
    revoked: list[str] = field(default_factory=list)
    still: str | None = None  # the chgrp still to run (not root)
    replaced: Path | None = None  # where the broker's previous certificate went (renew_broker)


def broker_files(
    layout: Layout,
    *,
    hosts: tuple[str, ...],
    data_dir: Path | None = None,
    revoke_accounts: tuple[str, ...] = (),
    reissue_accounts: tuple[str, ...] = (),
    renew_broker: bool = False,
) -> BrokerFiles:
    """(Re)make the broker's CA, certificates and config for every account in ``layout`` (nodes,
    operators, the dashboard, the meters given accounts) in ``broker/``, and copy what the broker
    machine needs into ``broker-etc/``; with a node's ``data_dir``, as the ledger stands now: the
    meters it revoked (or whose owner left) lose their certificate (the CRL) and their ACL block;
    so do ``revoke_accounts`` (a removed validator's node and operator accounts).
    ``reissue_accounts`` get a new certificate and key, their current certificate on the CRL.
    ``renew_broker``: the broker's own certificate is replaced by a new one for ``hosts`` (the
    previous one kept in broker/certs/replaced/: ``BrokerFiles.replaced``).
    Nothing is written when the CA or its key is missing."""
    from peerwatt.broker.certs import BROKER_CERT, BROKER_KEY, CA_CERT, CA_CRL, CLIENTS_DIR, make_certs
    from peerwatt.broker.files import make_dir, share_with
    from peerwatt.broker.mosquitto import (
        ACL_NAME,
        BY_COMMUNITY,
        CONF_NAME,
        DROPIN_DIR,
        check_unchanged,
        left_out_line,
        load_registry,
        select_accounts,
        write_config,
    )

    genesis = layout.out / "genesis.toml"
    broker_dir = layout.out / "broker"
    certs_dir = broker_dir / "certs"
    try:
        loaded = load_genesis(genesis)
    except GenesisError as exc:
        raise UserError(str(exc)) from None
    if loaded.community != layout.community:
        raise UserError(
            f"{genesis} is the genesis of community {loaded.community!r}, but "
            f"{layout.out / 'community.toml'} is {layout.community!r}: put back the genesis.toml "
            "`peerwatt community init` wrote there"
        )
    check_writable(_broker_paths(layout))
    # the genesis's sequencer account keeps its own key id whoever is the sequencer now
    genesis_doc = loaded.doc
    sequencer = genesis_doc["chain"]["sequencer"]
    nodes = tuple(f"{n}:{sequencer}" if n.endswith("=sequencer") else n for n in layout.nodes)
    meters = tuple(m for m in layout.meters if m not in layout.revoked)
    exclude: tuple[str, ...] = ()
    if data_dir is None:
        community_id, registry = load_registry(genesis, None)
    else:
        # the same accounts as from the genesis (add-meter): a meter enrolled by vote has one
        # only once the coordinator gave it one (add-meter)
        community_id, registry = load_registry(None, data_dir)
        exclude = tuple(m for m in registry.meters if m not in meters and m not in genesis_doc["meters"])
    accounts = select_accounts(registry, nodes, meters, exclude)
    if any(account.name == BROKER_WORD for account in accounts):
        raise UserError(
            f"{layout.out / 'community.toml'} names an account {BROKER_WORD}: that word is the broker's "
            f"own certificate (`peerwatt community reissue --dir DIR {BROKER_WORD}`), never an account; "
            "give that account another name"
        )
    clients = certs_dir / CLIENTS_DIR
    # a meter the ledger revoked (or whose owner left) loses its certificate too
    revoke = tuple(kid for kid in sorted(registry.left_out) if (clients / f"{kid}.crt").exists())
    revoke += tuple(name for name in revoke_accounts if (clients / f"{name}.crt").exists())
    options = dict(
        etc_dir=layout.broker_etc,
        persistence_dir=layout.persistence,
        auth="cert",
        port=layout.broker_port,
        run_user="mosquitto",
        generator=BY_COMMUNITY,
    )
    # before anything is written: mosquitto.conf and the drop-in, here and in the copies for the
    # broker machine, unchanged since they were written (an operator's edits are not overwritten)
    conf, dropin = write_config(broker_dir, community_id, accounts, check_only=True, **options)
    etc = layout.out / BROKER_ETC
    for path, text in ((etc / CONF_NAME, conf), (etc / DROPIN_DIR / "peerwatt.conf", dropin)):
        check_unchanged(path, text, written_by="`peerwatt community`")
    certs = make_certs(
        certs_dir,
        community=community_id,
        hosts=hosts,
        accounts=accounts,
        revoke=revoke,
        reissue=reissue_accounts,
        renew_broker=renew_broker,
        run_user="mosquitto",
    )
    config = write_config(broker_dir, community_id, accounts, **options)
    make_dir(etc / "certs")
    make_dir(etc / DROPIN_DIR)
    copies = [CONF_NAME, ACL_NAME, f"{DROPIN_DIR}/peerwatt.conf"]
    copies += [f"certs/{name}" for name in (CA_CERT, CA_CRL, BROKER_CERT, BROKER_KEY)]
    for name in copies:
        shutil.copy2(broker_dir / name, etc / name)  # modes too: the ACL and broker.key 0640
    # readable by the group mosquitto (else: the chgrp still to run, for broker-etc/ only)
    shared = share_with([etc / ACL_NAME, etc / "certs" / BROKER_KEY], "mosquitto")
    return BrokerFiles(
        " && ".join(config.start), left_out_line(registry), certs.revoked, shared, certs.replaced
    )


def _broker_paths(layout: Layout) -> list[Path]:
    """Every folder and file `broker_files` writes (checked before it writes any)."""
    from peerwatt.broker.certs import BROKER_CERT, BROKER_KEY, CA_CERT, CA_CRL, CLIENTS_DIR
    from peerwatt.broker.mosquitto import ACL_NAME, CONF_NAME, DROPIN_DIR

    broker, etc = layout.out / "broker", layout.out / BROKER_ETC
    paths = [layout.out / "community.toml"]
    for base in (broker, etc):
        paths += [base / CONF_NAME, base / ACL_NAME, base / DROPIN_DIR / "peerwatt.conf"]
    paths += [broker / "certs" / CA_CRL, broker / "certs" / CLIENTS_DIR / "x"]
    paths += [etc / "certs" / name for name in (CA_CERT, CA_CRL, BROKER_CERT, BROKER_KEY)]
    return paths


SYSTEMD_LABEL = "on the broker, under systemd (peerwatt's drop-in): "
BY_HAND_LABEL = "on the broker, started by hand: "


def restart_lines(layout: Layout, files: str) -> list[str]:
    """What to run on the broker after the community commands changed ``files`` (under broker-etc/):
    copy them, then restart it (under systemd, or started by hand): one line each, labelled."""
    from peerwatt.broker.mosquitto import restart_commands

    out, etc = shlex.quote(str(layout.out)), layout.broker_etc
    copies = " && ".join(
        f"cp {out}/{BROKER_ETC}/{name} {shlex.quote(str(etc / Path(name).parent))}/" for name in files.split()
    )
    systemd, by_hand = restart_commands(etc)
    return [f"{SYSTEMD_LABEL}{copies} && {systemd}", f"{BY_HAND_LABEL}{copies} && {by_hand}"]


@click.group()
def community() -> None:
    """Start a community, and give joining households their broker accounts."""


@community.command("init")
@click.option("--community", "community_id", help="Community id: lowercase letters, digits, '-'.")
@click.option("--name", help="Human-readable name (default: the id).")
@click.option(
    "--validators", "n_validators", type=int, help="Number of validators (4 or more tolerate one down)."
)
@click.option(
    "--validator-host",
    "validator_hosts",
    multiple=True,
    help="Address of each validator's machine, in order (repeat); the first is the sequencer.",
)
@click.option("--interval", "interval_s", type=int, help="Delivery interval in seconds (900 = 15 minutes).")
@click.option("--feed-in-price", help="Grid feed-in tariff per kWh, e.g. 0.08 (the price floor).")
@click.option("--retail-price", help="Grid retail tariff per kWh, e.g. 0.30 (the price cap).")
@click.option("--grid-fee", default="0", show_default=True, help="Grid fee per kWh on local trades.")
@click.option("--levies", default="0", show_default=True, help="Levies per kWh on local trades.")
@click.option("--timezone", help="IANA time zone, e.g. Europe/Vienna.")
@click.option("--broker-host", help="DNS name or IP address of the community's Mosquitto.")
@click.option("--broker-port", type=click.IntRange(1, 65535), default=8883, show_default=True)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65000),
    default=8101,
    show_default=True,
    help="Validator N's API listens on this port + N - 1.",
)
@click.option(
    "--broker-etc",
    type=click.Path(path_type=Path),
    default=DEFAULT_BROKER_ETC,
    show_default=True,
    help="Where the broker files will live on the broker machine.",
)
@click.option(
    "--broker-persistence",
    type=click.Path(path_type=Path),
    help=f"The broker's persistence folder, its own (default: {DEBIAN_PERSISTENCE}/<community id>).",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder to write (must not exist).")
def init(
    community_id,
    name,
    n_validators,
    validator_hosts,
    interval_s,
    feed_in_price,
    retail_price,
    grid_fee,
    levies,
    timezone,
    broker_host,
    broker_port,
    http_port,
    broker_etc,
    broker_persistence,
    out_dir,
) -> None:
    """Write genesis, validator keys and node configs, the broker configuration and a summary."""
    community_id = _ask(
        community_id,
        "Community id (e.g. oak-street)",
        flag="--community",
        needed="a community id is needed (lowercase letters, digits and '-', e.g. oak-street)",
    )
    try:
        COMMUNITY_ID.check(community_id, "--community")
    except SchemaError as exc:
        raise UserError(f"{exc} (lowercase letters, digits and '-')") from None
    name = _ask(name, "Community name", default=community_id)
    n = _ask(n_validators, "Number of validators (4 or more tolerate one down)", default=4, type=int)
    if not 1 <= n <= MAX_VALIDATORS:
        raise UserError(
            f"--validators {n}: a community has 1 to {MAX_VALIDATORS} validators (each block needs "
            "votes from most of them; 4 to 7 is typical)"
        )
    hosts = list(validator_hosts)
    if hosts and len(hosts) != n:
        raise UserError(
            f"--validator-host given {len(hosts)} times for {n} validators: give one per validator, "
            "in order (or none, to be asked)"
        )
    for i in range(len(hosts), n):
        hosts.append(_ask(None, f"Address of validator {i + 1}'s machine", default="127.0.0.1"))
    interval = _ask(interval_s, "Delivery interval in seconds", default=900, type=int)
    feed_in = _price(
        _ask(feed_in_price, "Feed-in tariff per kWh", default="0.08"), "--feed-in-price", "feed_in_price"
    )
    retail = _price(
        _ask(retail_price, "Retail tariff per kWh", default="0.30"), "--retail-price", "retail_price"
    )
    grid_fee_micro = _price(grid_fee, "--grid-fee", "grid_fee_per_kwh", zero_ok=True)
    levies_micro = _price(levies, "--levies", "levies_per_kwh", zero_ok=True)
    zone = _ask(timezone, "Time zone (IANA)", default="UTC")
    broker_host = _ask(
        broker_host,
        "Broker host name or IP (what agents and nodes connect to)",
        flag="--broker-host",
        needed="the broker's address is needed (the DNS name or IP address of the machine Mosquitto runs on)",
    )
    out = _ask(out_dir, "Output folder", default=community_id)
    broker_persistence = _persistence(broker_persistence, community_id)
    from peerwatt.broker.mosquitto import check_values

    # named by this command's flags (the broker files' own check names `broker config`'s)
    check_values(
        bind=None,
        run_user="mosquitto",
        paths={"--broker-etc": broker_etc, "--broker-persistence": broker_persistence, "--out": Path(out)},
    )
    try:
        check_genesis_inputs(n, interval, feed_in, retail)
        check_timezone(zone, "--timezone")
    except GenesisError as exc:
        raise UserError(str(exc)) from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder: choose another --out (a new or empty folder)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; refusing to overwrite (choose another --out)")
    if n < 4:
        click.echo(
            f"WARNING: {n} validator(s) give no fault tolerance: one machine down stops the market. "
            f"{quorum_sentence(n)[0].upper()}{quorum_sentence(n)[1:]}; 4 validators tolerate one.",
            err=True,
        )
    gate_s = 300 if interval >= 900 else max(5, interval // 3)
    keys = [generate_private_key() for _ in range(n)]
    sec1 = [public_key_sec1(k.public_key()).hex() for k in keys]
    ids = [key_id(k.public_key()) for k in keys]
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror} (choose another --out)") from None
    try:
        summary = _write_community(
            out, community_id, name, zone, sec1, keys, ids, hosts, interval, gate_s,
            (feed_in, retail, grid_fee_micro, levies_micro),
            broker_host, broker_port, broker_etc, broker_persistence, http_port,
        )  # fmt: skip
    except BaseException:  # an error or Ctrl-C halfway: no half-written community is left
        if existed:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise
    click.echo(summary)
    click.echo(f"wrote {out}/ (this summary is {out / 'SUMMARY.txt'})")


def _persistence(given: Path | None, community_id: str) -> Path:
    """The broker's persistence folder: given, or /var/lib/mosquitto/<community id>; never the
    folder of Debian's own broker, which keeps running next to a broker started by hand."""
    own = DEBIAN_PERSISTENCE / community_id
    if given is None:
        return own
    if os.path.normpath(given.absolute()) == str(DEBIAN_PERSISTENCE):
        raise UserError(
            f"--broker-persistence {given}: Debian's own mosquitto.service keeps its mosquitto.db there; "
            f"give the community's broker a folder of its own, e.g. {own} (the default)"
        )
    return given


def _write_community(
    out: Path,
    community_id: str,
    name: str,
    zone: str,
    sec1: list[str],
    keys: list,
    ids: list[str],
    hosts: list[str],
    interval: int,
    gate_s: int,
    prices: tuple[int, int, int, int],
    broker_host: str,
    broker_port: int,
    broker_etc: Path,
    broker_persistence: Path,
    http_port: int,
) -> str:
    """Write the community folder ``out`` (existing and empty); the summary it wrote."""
    n = len(keys)
    feed_in, retail, grid_fee_micro, levies_micro = prices
    (out / "genesis.toml").write_text(
        genesis_text(
            community=community_id,
            name=name,
            now=int(time.time()),
            timezone=zone,
            validators=[(f"validator-{i + 1}", s) for i, s in enumerate(sec1)],
            interval_s=interval,
            gate_s=gate_s,
            feed_in=feed_in,
            retail=retail,
            grid_fee=grid_fee_micro,
            levies=levies_micro,
        )
    )
    try:
        genesis = load_genesis(out / "genesis.toml")  # the same checks every node makes
    except GenesisError as exc:
        raise UserError(str(exc)) from None
    broker_url = f"mqtts://{broker_host}:{broker_port}"
    nodes = [f"node-{ids[0]}=sequencer"] + [f"node-{k}=validator:{k}" for k in ids[1:]]
    nodes += [f"operator-{k}=operator" for k in ids]
    layout = Layout(
        out,
        community_id,
        broker_url,
        broker_host,
        broker_port,
        broker_etc.absolute(),
        broker_persistence.absolute(),
        nodes,
        [],
        validators=[
            {"name": f"validator-{i + 1}", "key_id": kid, "http": f"{hosts[i]}:{http_port + i}",
             "folder": f"validator-{i + 1}"}
            for i, kid in enumerate(ids)
        ],
    )  # fmt: skip
    layout.write()
    made = broker_files(layout, hosts=(broker_host,))
    certs_dir = out / "broker" / "certs"
    clients = certs_dir / "clients"
    for i, (key, kid) in enumerate(zip(keys, ids, strict=True)):
        folder = out / f"validator-{i + 1}"
        folder.mkdir()
        save_private_key(key, folder / "validator.key")
        (folder / "validator.pub").write_text(public_key_pem(key.public_key()))
        shutil.copyfile(out / "genesis.toml", folder / "genesis.toml")
        shutil.copyfile(certs_dir / "community-ca.crt", folder / "community-ca.crt")
        for account, stem in ((f"node-{kid}", "node-client"), (f"operator-{kid}", "operator-client")):
            shutil.copyfile(clients / f"{account}.crt", folder / f"{stem}.crt")
            _copy_private(clients / f"{account}.key", folder / f"{stem}.key")
        peers = [f"http://{hosts[j]}:{http_port + j}" for j in range(n) if j != i]
        role = "sequencer" if i == 0 else "validator"
        (folder / "node.toml").write_text(_node_toml(role, kid, hosts[i], http_port + i, peers, broker_url))
        (folder / "operator.toml").write_text(_operator_toml(kid, broker_url))
    household = out / "household"
    household.mkdir()
    shutil.copyfile(out / "genesis.toml", household / "genesis.toml")
    shutil.copyfile(certs_dir / "community-ca.crt", household / "community-ca.crt")
    summary = summary_text(layout, genesis.hash.hex(), hosts, http_port, ids, interval, made.start)
    (out / "SUMMARY.txt").write_text(summary)
    return summary


def summary_text(
    layout: Layout,
    genesis_hash: str,
    hosts: list[str],
    http_port: int,
    ids: list[str],
    interval: int,
    start: str,
) -> str:
    from peerwatt.broker.mosquitto import restart_commands

    out, n = layout.out, len(ids)
    etc = layout.broker_etc
    lines = [
        f"peerwatt community {layout.community!r}: what to copy to which machine",
        "=" * 72,
        f"genesis hash {genesis_hash} (every `peerwatt node init` must print it)",
        f"{n} validator(s): {quorum_sentence(n)}.",
        f"delivery interval {describe_interval(interval)}; a new household's first trade comes about "
        f"{describe_interval(2 * interval)} to {describe_interval(4 * interval)} after its agent starts "
        "(once its meter is enrolled).",
        "",
        f"BROKER ({layout.broker_host}, Mosquitto listening on {layout.broker_port} with TLS and client "
        "certificates):",
        f"  copy {out}/{BROKER_ETC}/ (only what the broker needs) to {etc}/ on the broker, keeping "
        "owners and modes (cp -a), then as root:",
        f"  {start}",
        "  or with systemd (the drop-in makes mosquitto.service run this config instead of Debian's): "
        "mkdir -p /etc/systemd/system/mosquitto.service.d && cp "
        f"{shlex.quote(str(etc / 'mosquitto.service.d' / 'peerwatt.conf'))} "
        "/etc/systemd/system/mosquitto.service.d/ && "
        "systemctl daemon-reload && systemctl restart mosquitto",
        "  after a change (add-meter, add-dashboard, revoke, add-validator, remove-validator: each",
        "  prints the files to copy, the ACL, and revoke and remove-validator the CRL too), restart the",
        "  broker, which reads them at start (not SIGHUP: Debian's Mosquitto 2.0.11 died on a reload;",
        "  docs/bus.md):",
        f"    under systemd: {restart_commands(etc)[0]}",
        f"    started by hand: {restart_commands(etc)[1]}",
        "    (which stops the Mosquitto running this config, waits until it has exited, starts it again",
        "    with -d, and fails with a message if none was running; sessions and queued messages survive,",
        "    and nodes and agents reconnect by themselves)",
        f"  keep {out}/broker/ (the CA key broker/certs/community-ca.key and every account's key) on this "
        "machine (the CA key offline if you can): it signs new accounts.",
        "",
    ]
    for i in range(n):
        role = "sequencer" if i == 0 else "validator"
        lines += [
            f"VALIDATOR {i + 1} ({role}, {hosts[i]}, API port {http_port + i}, key id {ids[i]}):",
            f"  copy {out}/validator-{i + 1}/ to that machine, then in that folder:",
            "  peerwatt node init --genesis genesis.toml --data node-data",
            "  peerwatt node run -c node.toml",
            "",
        ]
    here = shlex.quote(str(out))  # commands to paste into a shell
    lines += [
        "EACH HOUSEHOLD (next to its meter):",
        f"  copy {out}/household/ (genesis.toml, community-ca.crt) to the device, then in that folder:",
        f"  peerwatt agent setup --host <meter address> --broker {layout.broker_url}",
        "  and send the join request it writes (join-request.txt) to the coordinator.",
        "",
        "ADMITTING A HOUSEHOLD:",
        f"  here: peerwatt community add-meter --dir {here} join-request.txt   (its broker account;",
        "        copy the folder it names to the household, the ACL to the broker, restart it: as printed)",
        "  on validator 1: peerwatt member admit join-request.txt -c node.toml   (proposes add_member)",
        "  on the other validators: peerwatt gov vote -c node.toml --request join-request.txt --yes",
        "  then again `member admit` (proposes enroll_meter) and the same votes: the agent trades",
        "  from the block that enrols its meter.",
        "",
        "A HOUSEHOLD THAT LEFT (its meter revoked by vote):",
        f"  here: peerwatt community revoke --dir {here} --data <a copy of a validator's node-data>",
        "        (certificate revoked, ACL block gone), then copy the ACL and CRL it names to the broker",
        "        and restart it, as it prints.",
        "",
        "A VALIDATOR JOINING LATER (its key made on its machine: peerwatt keys new --out validator-5 "
        "--name validator):",
        f"  here: peerwatt community add-validator --dir {here} --key validator.pub --name validator-5 "
        "--host <its address>",
        "        (its broker accounts, node.toml, operator.toml); then as it prints: the broker's restart,",
        "        node init and node run there, the add_validator vote, the other validators' new peers line.",
        "  removed by vote (remove_validator): peerwatt community remove-validator --dir "
        f"{here} <key id> --data <a copy of a validator's node-data>",
        "        (its accounts out of the ACL, certificates revoked), then copy the ACL and CRL it names to",
        "        the broker and restart it, as it prints.",
        "",
        "THE DASHBOARD (its read-only broker account, for the agents' health):",
        f"  here: peerwatt community add-dashboard --dir {here}   (copy the folder it names to the",
        "        dashboard's machine, the ACL to the broker and restart it, as it prints)",
        "",
        "A CLIENT CERTIFICATE TO RENEW (valid 825 days) OR WHOSE KEY WAS LOST:",
        f"  here: peerwatt community reissue --dir {here} <meter id | node-<key id> | operator-<key id> | "
        "dashboard>",
        "        (a new certificate and key, the old one on the CRL), then as it prints: the files to its",
        "        machine, and the CRL to the broker with its restart.",
        "",
        "THE BROKER'S OWN CERTIFICATE TO RENEW (valid 825 days):",
        f"  here: peerwatt community reissue --dir {here} broker   (a new one for the same host names",
        "        from the same CA: the clients need nothing new), then as it prints: broker-etc/ to the",
        "        broker machine and its restart.",
    ]
    return "\n".join(lines) + "\n"


_INIT_DIR = click.option(
    "--dir",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder `peerwatt community init` wrote (with broker/certs/community-ca.key).",
)


@community.command("add-meter")
@_INIT_DIR
@click.argument("request_file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "household_dir",
    type=click.Path(path_type=Path),
    help="Where to put the household's files (default: DIR/households/<meter id>).",
)
def add_meter(out_dir: Path, request_file: Path, household_dir: Path | None) -> None:
    """Give a household's meter its broker account: a client certificate and its ACL block."""
    layout = Layout.read(out_dir)
    request = _join_request_for(request_file, layout)
    meter = request.meter_id
    _refuse_revoked(layout, meter, f"{request_file}: ")
    added = meter not in layout.meters
    if added:
        layout.meters.append(meter)
    folder = household_dir or out_dir / "households" / meter
    check_writable([folder / "broker-client.crt", folder / "broker-client.key", folder / "community-ca.crt"])
    # refuses (changing no file) when the CA or its key is missing, or a file it writes cannot be
    made = broker_files(layout, hosts=())
    if added:
        layout.write()
    _give_account(out_dir, meter, folder)
    if not added:
        click.echo(
            f"meter {meter} already has a broker account: no new certificate, its certificate and key "
            "again (the one given before stays valid)"
        )
    click.echo(f"broker account {meter} for {request.name!r}: {folder}/broker-client.crt and .key")
    click.echo(f"copy {folder}/ to the household's agent folder (next to agent.toml)")
    _tell_broker(layout, made, "peerwatt.acl")


def _give_account(out_dir: Path, account: str, folder: Path) -> None:
    """Copy an account's client certificate and key, and the CA certificate, into ``folder``."""
    clients = out_dir / "broker" / "certs" / "clients"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror} (choose another --out)") from None
    shutil.copyfile(clients / f"{account}.crt", folder / "broker-client.crt")
    _copy_private(clients / f"{account}.key", folder / "broker-client.key")
    shutil.copyfile(out_dir / "broker" / "certs" / "community-ca.crt", folder / "community-ca.crt")


def _tell_broker(layout: Layout, made: BrokerFiles, files: str) -> None:
    if made.still:
        click.echo(f"then, here (not root): {made.still}")
    for line in restart_lines(layout, files):
        click.echo(line)


@community.command("add-dashboard")
@_INIT_DIR
@click.option(
    "--out",
    "dashboard_dir",
    type=click.Path(path_type=Path),
    help="Where to put the dashboard's files (default: DIR/dashboard-broker).",
)
def add_dashboard(out_dir: Path, dashboard_dir: Path | None) -> None:
    """Give the dashboard its read-only broker account `dashboard` (reads every agent's status,
    writes nothing): a client certificate and its ACL block. Every later add-meter and revoke keeps it."""
    layout = Layout.read(out_dir)
    added = DASHBOARD_SPEC not in layout.nodes
    if added:
        layout.nodes.append(DASHBOARD_SPEC)
    made = broker_files(layout, hosts=())  # refuses (changing no file) when the CA or its key is missing
    if added:
        layout.write()
    folder = dashboard_dir or out_dir / "dashboard-broker"
    _give_account(out_dir, DASHBOARD_ACCOUNT, folder)
    if not added:
        click.echo(
            "the community already has the dashboard's broker account: no new certificate, the same again"
        )
    # dashboard.toml's relative paths are taken from its own folder: the lines name the files
    # inside the folder as copied next to it (QA: bare file names were not found there)
    name = Path(os.path.abspath(folder)).name
    click.echo(
        f"broker account {DASHBOARD_ACCOUNT} (reads status/+ only): {folder}/broker-client.crt and .key; "
        f"copy the folder next to dashboard.toml (as {name}/), which then says:"
    )
    click.echo(f'broker_client_id = "{DASHBOARD_ACCOUNT}"')
    click.echo("[broker]")
    click.echo(f'url = "{layout.broker_url}"')
    for key, file in (
        ("ca_file", "community-ca.crt"),
        ("cert_file", "broker-client.crt"),
        ("key_file", "broker-client.key"),
    ):
        click.echo(f"{key} = {_toml_string(f'{name}/{file}')}")
    _tell_broker(layout, made, "peerwatt.acl")


@community.command("update-broker")
@_INIT_DIR
def update_broker(out_dir: Path) -> None:
    """After updating peerwatt: write the broker's ACL (and mosquitto.conf) again for every account
    in DIR, with the rights this version gives them. A newer version may need rights an older one
    did not give (a QA pass: updated nodes publish the chain's configuration history on
    config/<key id>, which an ACL written before refused as "Not authorized", so updated agents
    never followed a vote). No certificate changes."""
    layout = Layout.read(out_dir)
    # refuses (changing no file) when the CA or its key is missing, or mosquitto.conf was edited
    made = broker_files(layout, hosts=())
    click.echo(f"wrote {out_dir}/{BROKER_ETC}/peerwatt.acl with this version's rights for every account")
    if made.left_out:
        click.echo(made.left_out)
    _tell_broker(layout, made, "peerwatt.acl")


@community.command("reissue")
@_INIT_DIR
@click.argument("account")
@click.option(
    "--out",
    "target_dir",
    type=click.Path(path_type=Path),
    help="Where to put the new files (default: a meter's DIR/households/<meter id>, the dashboard's "
    "DIR/dashboard-broker, as add-meter and add-dashboard put them; a validator's account: its folder "
    "in DIR).",
)
def reissue(out_dir: Path, account: str, target_dir: Path | None) -> None:
    """A new client certificate and key for one broker account, its current certificate revoked
    (on the CRL): before it expires (client certificates are valid 825 days), or when its key was
    lost or leaked. ACCOUNT: a meter id (or the household's join request), node-<key id>,
    operator-<key id> (a validator's accounts) or dashboard.

    ACCOUNT `broker`: the broker's own server certificate, renewed for the same host names from the
    same CA (a join request in a file named broker: give it as ./broker)."""
    layout = Layout.read(out_dir)
    if account == BROKER_WORD:
        if target_dir is not None:
            raise UserError(
                f"--out: the broker's certificate goes into {out_dir}/broker/certs and "
                f"{out_dir}/{BROKER_ETC}/certs, as printed: drop --out"
            )
        _reissue_broker(layout)
        return
    name = _account_to_reissue(account, layout)
    clients = out_dir / "broker" / "certs" / "clients"
    validator = None
    if name.startswith(("node-", "operator-")):
        kid = name.split("-", 1)[1]
        validator = next((v for v in layout.validators if v["key_id"] == kid), None)
    if validator is not None:
        stem = "node-client" if name.startswith("node-") else "operator-client"
        folder = target_dir or out_dir / validator["folder"]
    else:
        stem = "broker-client"
        default = "dashboard-broker" if name == DASHBOARD_ACCOUNT else f"households/{name}"
        folder = target_dir or out_dir / default
    check_writable([folder / f"{stem}.crt", folder / f"{stem}.key", folder / "community-ca.crt"])
    before = _valid_until(clients / f"{name}.crt")
    # refuses (changing no file) when the CA or its key is missing, or a file it writes cannot be
    made = broker_files(layout, hosts=(), reissue_accounts=(name,))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clients / f"{name}.crt", folder / f"{stem}.crt")
        _copy_private(clients / f"{name}.key", folder / f"{stem}.key")
        shutil.copyfile(out_dir / "broker" / "certs" / "community-ca.crt", folder / "community-ca.crt")
    except OSError as exc:
        raise UserError(
            f"cannot write {folder}: {exc.strerror} (the new certificate and key are "
            f"{clients}/{name}.crt and .key: copy them from there)"
        ) from None
    old = f" (valid until {before})" if before else ""
    click.echo(
        f"new certificate for broker account {name}, valid until {_valid_until(clients / f'{name}.crt')}; "
        f"its previous certificate{old} is on the CRL: the broker refuses it once restarted"
    )
    files = f"{folder}/{stem}.crt and {stem}.key"
    if validator is not None and stem == "node-client":
        host = validator["http"].rsplit(":", 1)[0]
        click.echo(
            f"first: copy {files} into {validator['folder']}/ on {validator['name']}'s machine ({host}), "
            "beside node.toml, and restart its node (peerwatt node run -c node.toml)"
        )
    elif validator is not None:
        host = validator["http"].rsplit(":", 1)[0]
        click.echo(
            f"first: copy {files} into {validator['folder']}/ on {validator['name']}'s machine ({host}), "
            "beside operator.toml (each `member`/`gov` command reads them: nothing to restart)"
        )
    elif name == DASHBOARD_ACCOUNT:
        click.echo(
            f"first: copy {folder}/broker-client.crt and .key to the dashboard's machine (the folder "
            "dashboard.toml's [broker] names) and restart the dashboard"
        )
    else:
        click.echo(
            f"first: copy {folder}/broker-client.crt and .key to the household's agent folder (next to "
            "agent.toml) and restart its agent (its outbox keeps what it could not send meanwhile)"
        )
    click.echo("then restart the broker with the new CRL:")
    _tell_broker(layout, made, "certs/community-ca.crl")


def _reissue_broker(layout: Layout) -> None:
    """A new server certificate and key for the broker, for the host names of its current one
    (else community.toml's broker_host), from the same community CA; into broker/certs and
    broker-etc/certs, the previous certificate kept in broker/certs/replaced/."""
    from peerwatt.broker.certs import BROKER_CERT, BROKER_KEY, REPLACED_DIR, broker_host_names

    out = layout.out
    certs = out / "broker" / "certs"
    current = certs / BROKER_CERT
    hosts = broker_host_names(current)
    whence = ""
    if hosts is None:
        hosts = [layout.broker_host]
        whence = f" (from community.toml: {current} has none to read)"
    check_writable([current, certs / BROKER_KEY, certs / REPLACED_DIR / "x"])
    before = _valid_until(current)
    # refuses (changing no file) when the CA or its key is missing, or a file it writes cannot be
    made = broker_files(layout, hosts=tuple(hosts), renew_broker=True)
    names = ", ".join(hosts)
    click.echo(
        f"new certificate for the broker ({names}){whence}, valid until {_valid_until(current)}, from the "
        "same community CA: clients need nothing new (they trust the CA)"
    )
    if made.replaced is not None:
        old = f" (valid until {before})" if before else ""
        click.echo(f"its previous certificate{old} is kept in {made.replaced}")
    click.echo(
        f"wrote {current} and {BROKER_KEY}, and their copies in {out}/{BROKER_ETC}/certs/; the broker "
        "serves the new one once restarted"
    )
    click.echo(
        f"if the broker runs on another machine ({layout.broker_host}): copy {out}/{BROKER_ETC}/ there "
        f"first, to the same path (cp -a or scp -rp: {BROKER_KEY} stays private), then run one of "
        "these there:"
    )
    _tell_broker(layout, made, f"certs/{BROKER_CERT} certs/{BROKER_KEY}")


def _join_request_for(path: Path, layout: Layout) -> JoinRequest:
    """The join request in ``path``, asking to join this community; a one-line UserError otherwise."""
    try:
        request = read_join_request(path)
    except JoinRequestError as exc:
        raise UserError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if request.community != layout.community:
        raise UserError(f"{path} asks to join {request.community!r}, not {layout.community!r}")
    return request


def _refuse_revoked(layout: Layout, meter: str, where: str = "") -> None:
    """A one-line UserError (``where`` before it) if the community revoked ``meter``."""
    if meter in layout.revoked:
        raise UserError(
            f"{where}meter {meter} was revoked by the community and gets no broker account again; a "
            "household that rejoins makes new keys (peerwatt agent setup)"
        )


def _account_to_reissue(account: str, layout: Layout) -> str:
    """The broker account ACCOUNT names (a join request file names its meter), checked to be one
    the community folder gives certificates to; a one-line UserError otherwise."""
    out = layout.out
    path = Path(account)
    if path.is_file():
        account = _join_request_for(path, layout).meter_id
    _refuse_revoked(layout, account)
    kid = account.split("-", 1)[1] if account.startswith(("node-", "operator-")) else None
    if kid is not None and kid in layout.removed_validators:
        raise UserError(
            f"{account} is an account of validator {kid}, which was removed (community remove-validator): "
            "its accounts stay revoked"
        )
    names = {spec.split("=", 1)[0] for spec in layout.nodes}
    if account in layout.meters or account in names:
        return account
    raise UserError(
        f"no broker account {account} in {out}/community.toml: give a meter id (or its join request), "
        f"node-<key id>, operator-<key id> or dashboard (the folder's accounts: {len(layout.meters)} "
        f"meter(s), and {', '.join(sorted(names))})"
    )


def _valid_until(crt: Path) -> str | None:
    """The last day a client certificate is valid (UTC), or None when there is none to read."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.date().isoformat()


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's, and TOML also escapes DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


@community.command("revoke")
@_INIT_DIR
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="A node's data folder (a copy of a validator's store is enough; it is only read).",
)
def revoke(out_dir: Path, data_dir: Path) -> None:
    """Take away the broker accounts of the meters the ledger revoked (or whose owner left): their
    certificates go on the CRL, their ACL blocks go, and `add-meter` never gives them one again."""
    from peerwatt.broker.mosquitto import load_registry

    layout = Layout.read(out_dir)
    community_id, registry = load_registry(None, data_dir)
    if community_id != layout.community:
        raise UserError(
            f"--data {data_dir} holds the ledger of {community_id!r}, not of {layout.community!r}"
        )
    newly = sorted(set(registry.left_out) - set(layout.revoked))
    layout.revoked = sorted(set(layout.revoked) | set(registry.left_out))
    layout.meters = [m for m in layout.meters if m not in registry.left_out]
    made = broker_files(layout, hosts=(), data_dir=data_dir)
    layout.write()
    if made.left_out:
        click.echo(made.left_out)
    if made.revoked:
        click.echo(f"revoked the certificate(s) of {', '.join(made.revoked)}")
    click.echo(f"wrote {out_dir}/{BROKER_ETC}/certs/community-ca.crl")
    if not newly:
        click.echo("no meter revoked since the last run")
    _tell_broker(layout, made, "peerwatt.acl certs/community-ca.crl")


_VALIDATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{66}|[0-9a-fA-F]{130}")


def _read_public_key(text: str):
    """The public key ``--key`` gives: SEC1 hex, or a public key file (PEM, as `peerwatt keys new`
    writes NAME.pub). A private key file is refused: it stays on the validator's machine."""
    from chain.keys import KeyFileError, load_public_key

    data: bytes | str
    if _HEX_KEY.fullmatch(text.strip()):
        data = text.strip()
    else:
        try:
            data = Path(text).read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"--key {text}: neither a public key in hex (66 or 130 hex digits) nor a file"
            ) from None
        except IsADirectoryError:
            raise UserError(f"--key {text} is a folder: give the new validator's validator.pub") from None
        except OSError as exc:
            raise UserError(f"--key {text}: {exc.strerror}") from None
        if b"PRIVATE KEY" in data:
            raise UserError(
                f"--key {text} is a private key: give its public part (the .pub file beside it, or the hex "
                "`peerwatt keys show` prints); the private key stays on the validator's machine"
            )
    try:
        return load_public_key(data)
    except KeyFileError as exc:
        raise UserError(f"--key {text}: {exc}") from None


def _active_validators(layout: Layout) -> list[dict[str, str]]:
    return [v for v in layout.validators if v["key_id"] not in layout.removed_validators]


def _set_peers(layout: Layout, validators: list[dict[str, str]]) -> list[str]:
    """Make each of ``validators``' node.toml in the community folder list every other one as a
    peer; the lines saying what to change on each validator's machine (its node.toml is static)."""
    lines = []
    for v in validators:
        peers = [f"http://{o['http']}" for o in validators if o["key_id"] != v["key_id"]]
        line = _peers_line(peers)
        node_toml = layout.out / v["folder"] / "node.toml"
        try:
            text = node_toml.read_text()
        except OSError:
            text = None
        if text is not None:
            updated = re.sub(r"(?m)^peers = \[.*\]$", line.replace("\\", "\\\\"), text, count=1)
            if updated != text:
                node_toml.write_text(updated)
        host = v["http"].rsplit(":", 1)[0]
        lines.append(f"  {v['name']} ({host}): {line}")
    return lines


def _no_tolerance_warning(n: int, what: str) -> None:
    if n and default_quorum(n) == n:
        click.echo(
            f"WARNING: {what} leaves {n} validator(s), which give no fault tolerance: one machine down "
            f"stops the market ({quorum_sentence(n)}); 4 validators tolerate one.",
            err=True,
        )


@community.command("add-validator")
@_INIT_DIR
@click.option(
    "--key",
    "key_text",
    required=True,
    help="The new validator's public key: its .pub file (`peerwatt keys new` on its machine), or hex.",
)
@click.option(
    "--name", required=True, help="Its name (the add_validator vote's, and its folder's): validator-5."
)
@click.option("--host", help="Address of its machine (its API listens there; default: asked, or 127.0.0.1).")
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    help="Its API port (default: one above the highest port of the other validators).",
)
def add_validator(out_dir: Path, key_text: str, name: str, host: str | None, http_port: int | None) -> None:
    """A validator joining the community: its node and operator broker accounts (certificates and
    ACL blocks; every other account kept), its node.toml and operator.toml in DIR/NAME/, and what
    to do next (the add_validator vote, the broker's restart, the other validators' peers)."""
    if not _VALIDATOR_NAME.fullmatch(name):
        raise UserError(
            f"--name {name!r}: 1 to 64 letters, digits, '.', '_' or '-' (it names its folder too), "
            "e.g. validator-5"
        )
    layout = Layout.read(out_dir)
    public = _read_public_key(key_text)
    kid, sec1 = key_id(public), public_key_sec1(public).hex()
    if kid in layout.removed_validators:
        raise UserError(
            f"validator {kid} was removed (community remove-validator): its accounts stay revoked; a "
            "validator that comes back makes a new key pair (peerwatt keys new)"
        )
    known = next((v for v in layout.validators if v["key_id"] == kid), None)
    if known is not None or any(spec.split("=", 1)[0] == f"node-{kid}" for spec in layout.nodes):
        where = f" ({out_dir / known['folder']}/)" if known else ""
        raise UserError(f"key {kid} is already a validator of this community{where}")
    if any(v["name"] == name for v in layout.validators):
        raise UserError(f"--name {name}: the community has a validator of that name already")
    folder = out_dir / name
    if folder.exists():
        raise UserError(f"{folder} exists already: choose another --name")
    host = _ask(host, "Address of the new validator's machine", default="127.0.0.1")
    if not host or any(c.isspace() or c in "\"'\\/" for c in host):
        raise UserError(f"--host {host!r}: give the address of its machine (an IP address or a host name)")
    ports = [int(p) for v in layout.validators if (p := v["http"].rsplit(":", 1)[-1]).isdigit()]
    port = http_port or (max(ports) + 1 if ports else 8101)
    before = _active_validators(layout)
    layout.nodes += [f"node-{kid}=validator:{kid}", f"operator-{kid}=operator"]
    layout.validators.append({"name": name, "key_id": kid, "http": f"{host}:{port}", "folder": name})
    made = broker_files(layout, hosts=())  # refuses (changing no file) when the CA or its key is missing
    clients = out_dir / "broker" / "certs" / "clients"
    try:
        folder.mkdir(parents=True)
        shutil.copyfile(out_dir / "genesis.toml", folder / "genesis.toml")
        shutil.copyfile(out_dir / "broker" / "certs" / "community-ca.crt", folder / "community-ca.crt")
        for account, stem in ((f"node-{kid}", "node-client"), (f"operator-{kid}", "operator-client")):
            shutil.copyfile(clients / f"{account}.crt", folder / f"{stem}.crt")
            _copy_private(clients / f"{account}.key", folder / f"{stem}.key")
        (folder / "validator.pub").write_text(public_key_pem(public))
        peers = [f"http://{v['http']}" for v in before]
        (folder / "node.toml").write_text(
            _node_toml("validator", kid, host, port, peers, layout.broker_url, by="add-validator")
        )
        (folder / "operator.toml").write_text(_operator_toml(kid, layout.broker_url))
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"cannot write {folder}: {exc.strerror}") from None
    layout.write()
    n = len(before) + 1
    here = shlex.quote(str(out_dir))
    click.echo(
        f"validator {name} (key id {kid}): broker accounts node-{kid} and operator-{kid}; {folder}/ holds "
        "its node.toml, operator.toml, genesis.toml, community-ca.crt and the accounts' certificates and keys"
    )
    _tell_broker(layout, made, "peerwatt.acl")
    click.echo(
        f"on {name}'s machine ({host}), where `peerwatt keys new --out {name} --name validator` made its "
        f"key: copy {here}/{name}/ into that folder {name}/ (beside validator.key), then in it:"
    )
    click.echo("  peerwatt node init --genesis genesis.toml --data node-data")
    click.echo(
        "  peerwatt node run -c node.toml   (it catches up from its peers; it seals once the vote has passed)"
    )
    click.echo(
        "then on one validator: peerwatt gov propose -c node.toml --action add_validator "
        f"--arg key={sec1} --arg name={name}"
    )
    click.echo(
        "and on the others: peerwatt gov vote -c node.toml --proposal <the id it prints> --yes "
        f"(a quorum of the validators in force: {default_quorum(len(before))} of {len(before)}); from the "
        f"block that adds it, {quorum_sentence(n)}"
    )
    click.echo(
        "peers (each node.toml's list is read at start: edit it on each validator's machine and restart "
        f"its node, so it can catch up from {name} too; {here}/ has them):"
    )
    for line in _set_peers(layout, _active_validators(layout))[:-1]:  # its own lists the others already
        click.echo(line)


@community.command("remove-validator")
@_INIT_DIR
@click.argument("validator")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="A node's data folder (a copy will do): refuse unless its ledger no longer counts the validator.",
)
def remove_validator(out_dir: Path, validator: str, data_dir: Path | None) -> None:
    """Take VALIDATOR's (key id, or name) node and operator broker accounts away: out of
    community.toml and the ACL, their certificates on the CRL. After the remove_validator vote."""
    from peerwatt.broker.mosquitto import load_registry

    layout = Layout.read(out_dir)
    record = next((v for v in layout.validators if validator in (v["key_id"], v["name"])), None)
    kid = record["key_id"] if record is not None else validator
    name = record["name"] if record is not None else kid
    if kid in layout.removed_validators:
        click.echo(f"validator {name} ({kid}) was removed already (its accounts are revoked): nothing to do")
        return
    accounts = (f"node-{kid}", f"operator-{kid}")
    specs = [spec for spec in layout.nodes if spec.split("=", 1)[0] in accounts]
    if not specs:
        names = ", ".join(f"{v['name']} ({v['key_id']})" for v in _active_validators(layout)) or "none"
        raise UserError(f"no validator {validator} in {out_dir}/community.toml (its validators: {names})")
    remaining = [v for v in _active_validators(layout) if v["key_id"] != kid]
    others = [spec for spec in layout.nodes if spec not in specs]
    if not any(spec.endswith("=sequencer") or "=validator:" in spec for spec in others):
        raise UserError(f"validator {name} ({kid}) is the community's last one: it cannot be removed")
    if data_dir is not None:
        community_id, registry = load_registry(None, data_dir)
        if community_id != layout.community:
            raise UserError(
                f"--data {data_dir} holds the ledger of {community_id!r}, not of {layout.community!r}"
            )
        if kid in registry.validators:
            raise UserError(
                f"validator {name} ({kid}) is still a validator in the ledger of --data {data_dir}: vote "
                "first "
                f"(peerwatt gov propose -c node.toml --action remove_validator --arg validator={kid}, the "
                "others vote), or give a copy of a store that has the block the vote passed in"
            )
        checked = f"the ledger of {data_dir} no longer counts {name} as a validator"
    else:
        checked = (
            "not checked against a ledger (--data NODE_DIR checks it): if the remove_validator vote has not "
            f"passed yet, the chain still counts {name}, which can neither seal nor vote once the broker has "
            "restarted, so the other validators must make the quorum alone"
        )
    layout.nodes = [spec for spec in layout.nodes if spec not in specs]
    layout.removed_validators.append(kid)
    made = broker_files(layout, hosts=(), revoke_accounts=tuple(spec.split("=", 1)[0] for spec in specs))
    layout.write()
    click.echo(
        f"removed validator {name} ({kid}) from {out_dir}/community.toml: accounts "
        f"{' and '.join(spec.split('=', 1)[0] for spec in specs)} are out of the ACL"
    )
    if made.revoked:
        click.echo(f"revoked the certificate(s) of {', '.join(made.revoked)}")
    click.echo(f"wrote {out_dir}/{BROKER_ETC}/certs/community-ca.crl")
    click.echo(checked)
    _no_tolerance_warning(len(remaining), f"removing {name}")
    _tell_broker(layout, made, "peerwatt.acl certs/community-ca.crl")
    if remaining:
        click.echo(
            f"peers (each node.toml's list is read at start: drop {name}'s on each validator's machine and "
            f"restart its node when convenient; {shlex.quote(str(out_dir))}/ has them):"
        )
        for line in _set_peers(layout, remaining):
            click.echo(line)
