"""`peerwatt agent -c agent.toml` runs the meter agent; `peerwatt agent status -c agent.toml` shows it."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from peerwatt.errors import UserError


@click.group(invoke_without_command=True)
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="agent.toml")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def agent(ctx: click.Context, config_file: Path | None, verbose: bool) -> None:
    """Run the meter agent (with -c), or use a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    if config_file is None:
        raise UserError("give the agent's config: peerwatt agent -c agent.toml")
    run_agent(config_file, verbose)


def run_agent(config_file: Path, verbose: bool) -> None:
    import logging

    from meter_agent.agent import Agent
    from meter_agent.config import load_agent_config
    from meter_agent.outbox import Outbox, OutboxError
    from meter_agent.profile import ProfileError
    from meter_agent.sources import open_reader
    from peerwatt.bus import MqttBus
    from peerwatt.commands.process import setup_logging, stop_on_signals
    from peerwatt.config import load_genesis_setting
    from peerwatt.settings import check_broker_identity, check_tls_files

    setup_logging(verbose, {"pymodbus": logging.CRITICAL})
    cfg = load_agent_config(config_file)
    check_tls_files(cfg.broker, str(config_file))
    key = _load_meter_key(cfg)
    from chain.keys import key_id

    meter_id = key_id(key.public_key())
    # which key `key` names first (the member key, the broker's TLS key, one no one enrolled),
    # then whether the certificate is this meter's: a QA pass got, for `key = "member.key"`, advice
    # to fetch a certificate of the member's id, which no coordinator issues
    genesis = load_genesis_setting(cfg.genesis_file, str(config_file))
    if genesis.community != cfg.community:
        raise UserError(f"{cfg.genesis_file} is the genesis of {genesis.community!r}, not {cfg.community!r}")
    in_genesis = meter_id in genesis.doc["meters"]
    if not in_genesis and _is_tls_key(cfg.broker, key):
        raise UserError(_TLS_KEY.format(config=config_file, key=cfg.key_file, key_file=cfg.broker.key_file))
    genesis = with_own_enrolment(genesis, key, cfg.path.parent / "join-request.txt", cfg.key_file)
    if meter_id not in genesis.doc["meters"]:
        raise UserError(
            f"meter key {meter_id} (key = {cfg.key_file}) is not enrolled in {genesis.community}'s "
            "genesis: a meter admitted after genesis needs its join-request.txt (from `peerwatt agent "
            "setup`) beside agent.toml"
        )
    # the broker takes the certificate's CN as the account and client id: it must be this meter's
    note = check_broker_identity(
        cfg.broker,
        str(config_file),
        own=meter_id,
        signer=f"key = {cfg.key_file} is meter {meter_id}'s key",
        strict=True,
        client_id=cfg.client_id,
    )
    if note:
        click.echo(note, err=True)
    try:
        reader, profile_name = open_reader(cfg.meter)  # Modbus (a profile) or P1 (DSMR)
        outbox = Outbox(cfg.state_dir / "agent.sqlite", exclusive=True)
    except (ProfileError, OutboxError) as exc:
        raise UserError(str(exc)) from None
    m = cfg.meter
    from peerwatt.bus import Topics

    bus = MqttBus(
        cfg.broker,
        cfg.client_id or f"peerwatt-agent-{meter_id}",
        will=(Topics.status(cfg.community, meter_id), b"offline", True),
    )
    try:
        agent_ = Agent(
            key=key,
            genesis=genesis,
            bus=bus,
            reader=reader,
            outbox=outbox,
            strategy=cfg.strategy,
            profile=profile_name,
            serial=m.serial,
            serial_from="the genesis" if in_genesis else "join-request.txt",
            heartbeat_s=cfg.heartbeat_s,
            homeassistant_prefix=cfg.homeassistant_prefix if cfg.homeassistant else None,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    stop = stop_on_signals()
    try:
        agent_.start()
    except ValueError as exc:  # a topic MQTT cannot carry (agent.toml's check should have said)
        bus.stop()
        reader.close()
        outbox.close()
        raise UserError(str(exc)) from None
    if cfg.metrics_port is not None:
        from peerwatt.metrics import registry_for, serve_metrics

        try:  # bounded: a deadline per request, a cap on connections (peerwatt/metrics.py)
            serve_metrics(cfg.metrics_port, "127.0.0.1", registry_for("agent", agent_.status))
        except OSError as exc:
            raise UserError(f"cannot serve metrics on 127.0.0.1:{cfg.metrics_port}: {exc.strerror}") from None
    click.echo(
        f"agent of meter {meter_id} in {cfg.community}: {reader.where}, broker {cfg.broker.address}", err=True
    )
    try:
        agent_.run(stop, m.poll_s)
    finally:
        agent_.stop()
        reader.close()
        outbox.close()


# `key` names the broker's TLS client key ([broker] key_file: a P-256 key too, so it loads)
_TLS_KEY = (
    "{config}: key = {key} is the broker client key (the key of [broker] key_file {key_file}, for "
    'the TLS connection), not the meter key that signs orders and readings: set key = "meter.key" '
    "(the meter key `peerwatt agent setup` made, whose id the join request names)"
)


def _load_meter_key(cfg):
    """agent.toml's ``key``, loaded (UserError in one line otherwise). A key file that is not
    there, in a folder that holds a meter key or a join request (`peerwatt agent setup`'s), is a
    `key` naming the wrong file: the advice is that meter key, not a new key (which no vote
    enrolled; found in a QA pass)."""
    from peerwatt.commands.keys import load_key

    folder = cfg.path.parent
    if not cfg.key_file.exists() and not cfg.key_file.is_symlink():
        meter_key, request = folder / "meter.key", folder / "join-request.txt"
        made = f", the key {request} was made with" if request.is_file() else ""
        if meter_key.is_file() and meter_key != cfg.key_file:
            raise UserError(
                f"{cfg.path}: key = {cfg.key_file} not found: point key at the household's meter key "
                f'{meter_key}{made} (key = "meter.key"): a new key would not be the one the community '
                "enrols"
            )
        if made:
            raise UserError(
                f"{cfg.path}: key = {cfg.key_file} not found: point key at the meter key{made} (the "
                "meter.key of `peerwatt agent setup`): a new key would not be the one the community enrols"
            )
    return load_key(cfg.key_file, cfg.passphrase_file)


def _is_tls_key(broker, key) -> bool:
    """Whether ``key`` is the broker client certificate's key (cert_file's public key)."""
    if not broker.tls or not broker.cert_file:
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        cert = x509.load_pem_x509_certificate(Path(broker.cert_file).read_bytes())
    except (OSError, ValueError):
        return False
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def with_own_enrolment(genesis, key, request_file: Path, key_file: Path | None = None):
    """A meter enrolled by vote after genesis (`peerwatt agent setup` + `member admit`) is not in
    the genesis file: the agent takes its serial, owner and capacity from its own signed join
    request beside agent.toml. Until the vote passed, the ledger refuses its messages.

    A key that is neither a genesis meter's nor the request's meter key is a UserError naming
    ``key_file`` (agent.toml's ``key``): most likely the member key, which the request also holds.
    """
    from chain.genesis import Genesis
    from chain.keys import key_id, public_key_sec1
    from peerwatt.onboarding import JoinRequestError, read_join_request

    meter_id = key_id(key.public_key())
    if meter_id in genesis.doc["meters"]:
        return genesis
    setting = f"key = {key_file}" if key_file is not None else "the agent's key"
    if meter_id in genesis.doc["members"]:
        raise UserError(
            f"{setting} is member {meter_id}'s key in {genesis.community}'s genesis, not a meter key: "
            "point key at the meter key (meter.key; a member key signs the household's votes)"
        )
    if not request_file.exists():
        return genesis  # the agent says: not enrolled in the genesis, needs its join-request.txt
    try:
        request = read_join_request(request_file, own=True)  # (also one made before meter signatures)
    except JoinRequestError as exc:
        raise UserError(f"{request_file}: {exc}") from None
    if request.community != genesis.community:
        raise UserError(
            f"{request_file} asks to join {request.community!r}, not {genesis.community!r} (the genesis "
            "beside it): put this household's own join request beside agent.toml"
        )
    if request.meter != public_key_sec1(key.public_key()).hex():
        which = (
            "it is the member key of that request: point key at the meter key (meter.key)"
            if request.member_id == meter_id
            else "is it the member key? point key at the meter key (meter.key) the request was made with"
        )
        raise UserError(
            f"{setting} (key id {meter_id}) is not the meter key of {request_file} (meter "
            f"{request.meter_id}) nor of any meter in {genesis.community}'s genesis: {which}"
        )
    own = {
        "key": request.meter,
        "name": "",
        "serial": request.serial,
        "owner": request.member_id,
        "capacity_w": request.capacity_w,
    }
    return Genesis({**genesis.doc, "meters": {**genesis.doc["meters"], meter_id: own}})


@agent.command("status")
@click.option("-c", "--config", "config_file", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def status(config_file: Path, as_json: bool) -> None:
    """Last reading, outbox depth, broker connection, last offers and receipts, earnings so far."""
    from chain.config_proof import TrustedConfig
    from meter_agent.agent import load_trades, totals_of
    from meter_agent.config import load_agent_config
    from meter_agent.outbox import Outbox, OutboxError

    cfg = load_agent_config(config_file)
    path = cfg.state_dir / "agent.sqlite"
    if cfg.state_dir.exists() and not cfg.state_dir.is_dir():
        raise UserError(
            f"cannot use agent state {path}: {cfg.state_dir} is a file, not a folder (state_dir in "
            "agent.toml names the folder for the agent's state)"
        )
    if not path.exists():
        raise UserError(f"no agent state in {cfg.state_dir}: the agent has not run yet")
    try:
        outbox = Outbox(path)
    except OutboxError as exc:
        raise UserError(str(exc)) from None
    # the status as the agent saved it at its last heartbeat: every line below says what was so
    # then. The state file's newer figures are kept apart and labelled "now" where shown (a QA
    # pass: one printout said the last reading was not signed, and showed one signed since).
    info = outbox.load("status") or {}
    try:  # (what an older agent wrote into folded trades' rows merged in memory only)
        trades, folded_trades, folded, _merged = load_trades(outbox)
    except OutboxError as exc:  # trades an agent from before their table kept, not convertible here
        outbox.close()
        raise UserError(str(exc)) from None
    try:
        config_height = TrustedConfig.from_json(outbox.load("config")).height
    except (ValueError, TypeError):  # none saved (or unusable): the agent follows its genesis's
        config_height = 0
    now = {
        "outbox": outbox.depth(),
        "seq": outbox.last_seq(),
        "last_reading": outbox.load("last_reading"),
        "awaiting_confirmation": outbox.awaiting_confirmation(),
        # what the status holds too, as the agent's state file holds it now (the agent's own code)
        "totals": totals_of(trades, folded_trades, folded),
        "last_receipt": outbox.load("last_receipt"),
        "enrolled": outbox.load("enrolled", "unknown"),
        "orders": outbox.load("orders", {}),
        "revoked": outbox.load("revoked"),
        "readings_withheld": outbox.load("readings_withheld"),
        "config_height": config_height,
    }
    unconfirmed = now["awaiting_confirmation"] + now["outbox"]
    oldest = outbox.oldest_unconfirmed()
    outbox.close()
    if as_json:
        json.dump({**info, "now": now}, sys.stdout, indent=2, sort_keys=True)
        click.echo()
        return

    def label(key: str) -> str:
        """'' for a figure the status saved; for one it lacks (none saved yet, an older agent's
        status), shown as the state file holds it now, the label that says so."""
        return "" if key in info else f" {NOT_SAVED}"

    def value(key: str) -> Any:
        return info[key] if key in info else now[key]

    def saved(key: str, name: str) -> str:
        """``name: value`` as the status saved it, or as it is now, labelled so."""
        return f"{name}{label(key)}: {value(key)}"

    if "meter" not in info:  # a status is saved at the agent's first poll
        click.echo("no status saved yet: the agent saves one at its first poll (is it running? its log says)")
    else:
        click.echo(written_line(info.get("time"), cfg.heartbeat_s))
        click.echo(f"meter: {info.get('meter')}  ok: {info.get('meter_ok')}  fault: {info.get('fault')}")
    click.echo(saved("last_reading", "last reading"))
    if value("readings_withheld"):  # no offers until a reading is signed again (docs/agent.md)
        withheld = value("readings_withheld")
        click.echo(f"no offers{label('readings_withheld')}: the last reading was not signed: {withheld}")
    if info.get("serial_mismatch"):  # not the enrolled meter: no offers until it is (docs/agent.md)
        click.echo(f"no offers: {info['serial_mismatch']}")
    click.echo(f"{saved('enrolled', 'enrolled')}  {saved('last_receipt', 'last receipt')}")
    if value("revoked"):  # for good: no orders or readings any more (docs/agent.md)
        click.echo(f"revoked{label('revoked')}: {value('revoked')}; the agent signs no orders or readings")
    # validators, quorum and prices as voted up to that block (docs/agent.md)
    click.echo(f"chain configuration followed up to height {value('config_height')}{label('config_height')}")
    click.echo(f"{saved('outbox', 'outbox depth')}  {saved('seq', 'last seq')}  {_broker_line(info)}")
    if info.get("broker_problem"):  # another client with this account's id, an unreachable broker
        click.echo(f"broker: {info['broker_problem']}")
    if oldest is not None:  # as it stands now, not at the last heartbeat
        waited = max(time.time() - oldest, 0)
        line = (
            f"as of now, awaiting the ledger: {unconfirmed} message(s), the oldest signed {_age(waited)} ago"
        )
        if waited > UNBOOKED_S:  # a block takes a message within seconds while the chain moves
            line += (
                ": the ledger has confirmed none of them (are the validators running, and all of "
                "2026-12-07 or later? older nodes send no proven results, so nothing is confirmed: "
                'docs/operations.md, "Updating peerwatt")'
            )
        click.echo(line)
    click.echo(saved("orders", "orders"))
    if info.get("no_order") and not info.get("revoked"):  # the agent's own rule (docs/agent.md)
        click.echo(info["no_order"])
    for line in totals_lines(value("totals") or {}, label("totals")):
        click.echo(line)
    if info.get("state_error"):  # the agent cannot write its state (docs/agent.md, "Troubleshooting")
        click.echo(f"state error: {info['state_error']}")
    if "meter" in info:
        alarms = info.get("alarms") or []
        if not alarms:
            click.echo("alarms: none")
        else:  # the newest the agent keeps in its status (docs/agent.md); its log has every one
            click.echo(f"{len(alarms)} alarm(s), the newest the status keeps, newest last (its log has all):")
            for alarm in alarms:
                click.echo(f"  {alarm}")


# a figure the saved status lacks (none saved yet, an older agent's status), shown as it is now
NOT_SAVED = "(now, not in the saved status)"


def _broker_line(info: dict[str, Any]) -> str:
    """Whether the broker was connected when the status was written: 'at that time' only with
    the time it was written (written_line), and not shown as a fact when the status lacks it
    (the state file does not hold it: only the running agent knows)."""
    if "broker_connected" not in info:
        return "broker connected: not in the saved status"
    if _has_time(info.get("time")):
        return f"broker connected at that time: {info['broker_connected']}"
    return f"broker connected (in the saved status, written at a time unknown): {info['broker_connected']}"


def totals_lines(totals: dict[str, Any], label: str = "") -> list[str]:
    """The P2P totals as the ledger settled them, then what is traded and not settled yet and what
    the ledger left unsettled, neither of them money (a QA pass: a trade never settled was shown
    as money bought; Agent.totals); ``label`` after each line's name (NOT_SAVED: the totals as
    the state file holds them now, the status lacking them)."""
    lines = [
        f"P2P settled{label}: sold {totals.get('sold_wh', 0)} Wh, bought {totals.get('bought_wh', 0)} Wh, "
        f"earnings {totals.get('earnings', 0) / 1e6:.2f}"
    ]

    def sides(kind: str) -> str:
        figures = [(side, totals.get(f"{side}_{kind}_wh", 0)) for side in ("sold", "bought")]
        return ", ".join(f"{side} {wh} Wh" for side, wh in figures if wh)

    if sides("pending"):
        lines.append(
            f"traded, not settled yet{label}: {sides('pending')} (no money moves until the ledger settles it)"
        )
    if sides("unsettled"):
        flags = ", ".join(str(f) for f in totals.get("unsettled_flags") or []) or "unsettled"
        lines.append(
            f"traded, left unsettled by the ledger ({flags}){label}: {sides('unsettled')}, no money moved"
        )
    return lines


# a status older than this many heartbeats is stale: the agent saves none (the dashboard says offline)
STALE_HEARTBEATS = 3
# a message unconfirmed for longer than this says the ledger is not booking (a QA pass: a chain
# stalled for 73 s showed 'outbox depth: 0' and nothing else); confirm_after_s resends at 120 s
UNBOOKED_S = 300


def _age(seconds: float) -> str:
    """'45 s', '12 min', '3 h', '2 days'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds // 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} days"


def _has_time(written: Any) -> bool:
    """Whether a saved status holds the time it was written (an older agent's holds none)."""
    return isinstance(written, int | float) and not isinstance(written, bool)


def written_line(written: Any, heartbeat_s: float, now: float | None = None) -> str:
    """When the agent wrote the status (its last heartbeat), local time, and how long ago; a status
    older than STALE_HEARTBEATS heartbeats says it is stale (the agent stopped, or cannot save)."""
    if not _has_time(written):
        return "status written: unknown (a status of an older agent: it holds no time)"
    shown = datetime.fromtimestamp(written).astimezone().isoformat(sep=" ", timespec="seconds")
    age = (time.time() if now is None else now) - written
    if age < -5:
        return f"status written {shown} ({_age(-age)} ahead of this machine's clock)"
    if age <= STALE_HEARTBEATS * heartbeat_s:
        return f"status written {shown} ({_age(max(age, 0))} ago)"
    return (
        f"status written {shown} ({_age(age)} ago: stale, older than {STALE_HEARTBEATS} heartbeats of "
        f"{heartbeat_s:g} s; is the agent running? `systemctl status peerwatt-agent`, its log says why)"
    )


AGENT_TOML = """# agent.toml, written by `peerwatt agent setup` (paths relative to this file; docs/agent.md)
community = "{community}"
key = "meter.key"             # the meter key: signs orders and readings (mode 0600)
genesis = "genesis.toml"
state_dir = "state"           # outbox, seq counter, history (SQLite)
heartbeat_s = 60

[meter]
profile = "{profile}"
{where}
unit = {unit}
serial = "{serial}"
poll_s = {poll_s}

[market]
sell_share = 0.8
sell_limit_price = {sell}
buy_limit_price = {buy}
min_order_wh = 20

[broker]
url = "{broker}"
ca_file = "community-ca.crt"
cert_file = "broker-client.crt"   # from the coordinator (`peerwatt community add-meter`)
key_file = "broker-client.key"    # mode 0600

[homeassistant]
enabled = false
"""


@agent.command("setup")
@click.option(
    "--dir",
    "folder",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The agent's folder: holds genesis.toml and community-ca.crt from the community.",
)
@click.option("--host", help="The meter's Modbus TCP address (or a gateway's).")
@click.option("--port", type=click.IntRange(1, 65535), help="Modbus TCP port (default: the profile's, 502).")
@click.option("--serial", "serial_device", help="RS-485 device for Modbus RTU, e.g. /dev/ttyUSB0.")
@click.option(
    "--units", default=None, help="Unit ids to try, e.g. 1,2 or 1-5 (default: 1 and each profile's own unit)."
)
@click.option("--profiles", "profile_list", help="Profiles to try (default: all known).")
@click.option("--broker", "broker_url", help="The community's broker, e.g. mqtts://broker.example:8883.")
@click.option("--name", help="The household's name as the community will see it.")
@click.option("--capacity-w", type=click.IntRange(1, 1_000_000), help="Connection's maximum power, W.")
@click.option(
    "--meter-serial", help="The serial printed on the meter, for a meter that reports none (else: the same)."
)
@click.option("--yes", "assume_yes", is_flag=True, help="Accept the meter found without asking (scripts).")
@click.option(
    "--qr/--no-qr", default=None, help="Show the join request as a QR code (default: on a terminal)."
)
def setup(
    folder,
    host,
    port,
    serial_device,
    units,
    profile_list,
    broker_url,
    name,
    capacity_w,
    meter_serial,
    assume_yes,
    qr,
) -> None:
    """Next to the meter: find it, show its live values, make the household's member and meter keys,
    write agent.toml and a signed join request (join-request.txt) for the community."""
    from chain.genesis import GenesisError, load_genesis
    from chain.keys import KeyFileError, generate_private_key, save_private_key
    from meter_agent.modbus_reader import MeterError, MeterReader
    from meter_agent.probe import advice, best, describe_units, probe_meter, unit_plan
    from peerwatt.commands.meter import _profiles, _target, format_sample, parse_units
    from peerwatt.errors import check_writable, write_outputs
    from peerwatt.onboarding import JoinRequestError, make_join_request

    interactive = sys.stdin.isatty()
    _community_file(folder / "genesis.toml")
    try:
        genesis = load_genesis(folder / "genesis.toml")
    except GenesisError as exc:
        raise UserError(f"{exc} (copy the community's household/ folder here first)") from None
    outputs = [folder / n for n in ("member.key", "meter.key", "agent.toml", "join-request.txt")]
    for path in outputs:
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} already exists: this folder is set up (move it away to start again)")
    _check_ca(folder / "community-ca.crt")  # agent.toml's ca_file: the broker's TLS
    check_writable(outputs)  # before the meter is probed (found in a QA pass: a traceback at the end)
    if broker_url is not None:
        _check_broker_url(broker_url)  # before the meter is probed
    elif assume_yes or not interactive:
        raise UserError("give --broker (the community's broker, e.g. mqtts://broker.example:8883)")
    names = [n.strip() for n in profile_list.split(",") if n.strip()] if profile_list else []
    profiles = _profiles(names, None, ())
    targets = [(p, _target(host, serial_device, port, None, None, None, p)) for p in profiles]
    click.echo(f"looking for the meter at {host or serial_device} ...")
    found = best(probe_meter(targets, parse_units(units), 0.5, 30.0))
    if found is None:
        tried = units if units is not None else describe_units(unit_plan(targets, None))
        raise UserError(
            f"no known meter answered at {host or serial_device} (units {tried}): check the address, "
            "the wiring and the unit id (`peerwatt meter probe` shows every attempt)"
        )
    profile, target = next((p, t) for p, t in targets if p.name == found.profile)
    reader = MeterReader(profile, target, unit_id=found.unit_id, timeout_s=1.0)
    try:
        for i in range(3):
            sample = reader.read()
            click.echo(format_sample(sample, target.describe()))
            if i < 2:
                time.sleep(1.0)
    except MeterError as exc:
        raise UserError(f"{exc}: {advice(exc, host is not None)}", exit_code=3) from None
    finally:
        reader.close()
    if meter_serial and sample.serial and meter_serial != sample.serial:
        # the join request would enrol one serial and the agent sign another: no trade would settle
        raise UserError(
            f"--meter-serial {meter_serial} is not the serial this meter reports ({sample.serial}): the "
            "agent signs the reported one, so leave --meter-serial out (or is it the wrong meter? check "
            "--host and --units)"
        )
    if not assume_yes:
        if not interactive:
            raise UserError("confirm the meter: run on a terminal, or pass --yes")
        if not click.confirm(f"Is this your meter ({found.profile}, unit {found.unit_id})?", default=True):
            raise UserError("not confirmed: check --host/--serial and --units, then run setup again")
    serial = meter_serial or sample.serial
    if not serial:
        if not interactive:
            raise UserError(
                f"{found.profile} reports no serial number: give --meter-serial (printed on the meter)"
            )
        serial = click.prompt("This meter reports no serial number; the one printed on it")
    if name is None:
        name = click.prompt("Household name", default="Household") if interactive else "Household"
    if capacity_w is None:
        capacity_w = (
            click.prompt("Connection's maximum power in W", default=11000, type=int) if interactive else 11000
        )
    if broker_url is None:  # on a terminal without --yes (checked above)
        broker_url = click.prompt("The community's broker (mqtts://host:8883)")
        _check_broker_url(broker_url)  # (one given as --broker was checked before the probe)
    member_key, meter_key = generate_private_key(), generate_private_key()
    try:
        request = make_join_request(
            member_key,
            meter_key,
            community=genesis.community,
            name=name,
            serial=serial,
            profile=found.profile,
            capacity_w=capacity_w,
        )
    except JoinRequestError as exc:
        raise UserError(str(exc)) from None
    params = genesis.app_params
    where = (
        f'host = "{host}"' + (f"\nport = {port}" if port else "")
        if host
        else f'serial_device = "{serial_device}"'
    )
    config = AGENT_TOML.format(
        community=genesis.community,
        profile=found.profile,
        where=where,
        unit=found.unit_id,
        serial=serial,
        poll_s=5 if (genesis.interval_s or 900) >= 300 else 1,
        broker=broker_url,
        sell=(params.get("feed_in_price", 80000) + params.get("retail_price", 300000)) // 2,
        buy=params.get("retail_price", 300000),
    )
    member_file, meter_file, config_file, request_file = outputs
    try:  # all four or none (found in a QA pass: a PermissionError traceback from the key's write)
        write_outputs(
            {
                member_file: lambda p: save_private_key(member_key, p),
                meter_file: lambda p: save_private_key(meter_key, p),
                config_file: lambda p: p.write_text(config),
                request_file: lambda p: p.write_text(request.text()),
            },
            overwrite=False,
        )
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    click.echo(
        f"wrote in {folder}: agent.toml, member.key (your vote), meter.key (the agent's) and "
        "join-request.txt:"
    )
    _show_request(request, qr)
    click.echo(
        f"send join-request.txt to the community; put the broker-client.crt and .key the coordinator "
        f"sends back in {folder} and start: peerwatt agent -c {folder / 'agent.toml'} (it trades from "
        "the block that enrols the meter, after the votes)"
    )


def _community_file(path: Path) -> None:
    """UserError unless ``path`` (genesis.toml or community-ca.crt, from the community's
    household/ folder) is a file."""
    if path.is_file():
        return
    copy = "copy the community's household/ folder (genesis.toml, community-ca.crt) here first"
    if path.is_dir():
        raise UserError(f"{path} is a folder, not the community's file: {copy}")
    raise UserError(f"{path} not found: {copy}")


def _check_ca(path: Path) -> None:
    """UserError unless ``path`` is a PEM X.509 certificate (the community's CA), found in a QA
    pass: garbage or an RSA private key there was taken, and the agent failed only at TLS."""
    from cryptography import x509

    _community_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        what = "a private key" if b"PRIVATE KEY-----" in data else "no PEM certificate"
        raise UserError(
            f"{path} is not a PEM X.509 certificate ({what}): copy the community's "
            "household/community-ca.crt here"
        ) from None


_FILE = click.Path(path_type=Path)


def _show_request(request, qr: bool | None) -> None:
    """Print a join request, and its QR code (default: on a terminal)."""
    click.echo(request.text(), nl=False)
    if qr if qr is not None else sys.stdout.isatty():
        import segno

        segno.make(request.text(), error="l").terminal(compact=True)


@agent.command("join-request")
@click.option("--member-key", required=True, type=_FILE, help="The household's member key.")
@click.option("--meter-key", required=True, type=_FILE, help="The agent's meter key.")
@click.option("--genesis", "genesis_file", required=True, type=_FILE, help="The community's genesis.")
@click.option("--name", required=True, help="The household's name as the community will see it.")
@click.option("--meter-serial", required=True, help="The meter's serial (`peerwatt meter read` shows it).")
@click.option("--profile", required=True, help="The meter's profile, e.g. sdm630 (`peerwatt meter probe`).")
@click.option(
    "--capacity-w", type=click.IntRange(1, 1_000_000), default=11000, show_default=True,
    help="Connection's maximum power, W.",
)  # fmt: skip
@click.option("--passphrase-file", type=_FILE, help="Passphrase of the member key.")
@click.option("--out", "out_file", required=True, type=_FILE, help="Where to write it (join-request.txt).")
@click.option("--qr/--no-qr", default=None, help="Show it as a QR code (default: on a terminal).")
def join_request(
    member_key: Path,
    meter_key: Path,
    genesis_file: Path,
    name: str,
    meter_serial: str,
    profile: str,
    capacity_w: int,
    passphrase_file: Path | None,
    out_file: Path,
    qr: bool | None,
) -> None:
    """Write the signed join request of keys made by hand (`peerwatt keys new`), as `agent setup`
    does for the keys it makes: keep it beside agent.toml and send it to the community."""
    from chain.genesis import GenesisError, load_genesis
    from meter_agent.profile import ProfileError, find_profile
    from peerwatt.commands.keys import load_key
    from peerwatt.onboarding import JoinRequestError, make_join_request

    if not genesis_file.is_file():
        raise UserError(f"--genesis {genesis_file} not found: give the community's household/genesis.toml")
    try:
        community = load_genesis(genesis_file).community
        profile = find_profile(profile).name  # the request names the profile, never a local file
    except (GenesisError, ProfileError) as exc:
        raise UserError(str(exc)) from None
    member, meter = load_key(member_key, passphrase_file), load_key(meter_key)
    if member.public_key() == meter.public_key():
        raise UserError("--member-key and --meter-key are the same key: the household needs two")
    try:
        request = make_join_request(
            member, meter, community=community, name=name, serial=meter_serial, profile=profile,
            capacity_w=capacity_w,
        )  # fmt: skip
    except JoinRequestError as exc:
        raise UserError(str(exc)) from None
    if out_file.exists():
        raise UserError(f"{out_file} already exists: move it away first")
    try:
        out_file.write_text(request.text())
    except OSError as exc:
        raise UserError(f"cannot write {out_file}: {exc.strerror}") from None
    click.echo(f"wrote {out_file}:")
    _show_request(request, qr)
    click.echo("keep it beside agent.toml and send it to the community")


def _check_broker_url(url: str) -> None:
    """UserError unless ``url`` is a broker URL `peerwatt agent` can use (as agent.toml's) with
    the community's CA: setup writes ``ca_file``, so the broker is a TLS one (mqtts://)."""
    from peerwatt.bus import BrokerConfig

    try:
        broker = BrokerConfig.from_url(url)
    except ValueError as exc:
        raise UserError(f"--broker: {exc}") from None
    if not broker.tls:
        raise UserError(
            f"--broker {url}: the community's broker takes TLS connections only (its CA is "
            "community-ca.crt): use mqtts://HOST:8883"
        )
