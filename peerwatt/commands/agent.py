"""`peerwatt agent -c agent.toml` runs the meter agent; `peerwatt agent status -c agent.toml` shows it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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

    from chain.genesis import GenesisError, load_genesis
    from meter_agent.agent import Agent
    from meter_agent.config import load_agent_config
    from meter_agent.outbox import Outbox, OutboxError
    from meter_agent.profile import ProfileError
    from meter_agent.sources import open_reader
    from peerwatt.bus import MqttBus
    from peerwatt.commands.keys import load_key
    from peerwatt.commands.process import setup_logging, stop_on_signals

    setup_logging(verbose, {"pymodbus": logging.CRITICAL})
    cfg = load_agent_config(config_file)
    key = load_key(cfg.key_file, cfg.passphrase_file)
    try:
        genesis = load_genesis(cfg.genesis_file)
        reader, profile_name = open_reader(cfg.meter)  # Modbus (a profile) or P1 (DSMR)
        outbox = Outbox(cfg.state_dir / "agent.sqlite")
    except (GenesisError, ProfileError, OutboxError) as exc:
        raise UserError(str(exc)) from None
    if genesis.community != cfg.community:
        raise UserError(f"{cfg.genesis_file} is the genesis of {genesis.community!r}, not {cfg.community!r}")
    m = cfg.meter
    from chain.keys import key_id

    meter_id = key_id(key.public_key())
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
            heartbeat_s=cfg.heartbeat_s,
            homeassistant_prefix=cfg.homeassistant_prefix if cfg.homeassistant else None,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    stop = stop_on_signals()
    agent_.start()
    if cfg.metrics_port is not None:
        from prometheus_client import start_http_server

        from peerwatt.metrics import registry_for

        try:
            start_http_server(
                cfg.metrics_port, addr="127.0.0.1", registry=registry_for("agent", agent_.status)
            )
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


@agent.command("status")
@click.option("-c", "--config", "config_file", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def status(config_file: Path, as_json: bool) -> None:
    """Last reading, outbox depth, broker connection, last offers and receipts, earnings so far."""
    from meter_agent.config import load_agent_config
    from meter_agent.outbox import Outbox, OutboxError

    cfg = load_agent_config(config_file)
    path = cfg.state_dir / "agent.sqlite"
    if not path.exists():
        raise UserError(f"no agent state in {cfg.state_dir}: the agent has not run yet")
    try:
        outbox = Outbox(path)
    except OutboxError as exc:
        raise UserError(str(exc)) from None
    info = outbox.load("status") or {}
    info["outbox"] = outbox.depth()
    info["seq"] = outbox.last_seq()
    info["last_reading"] = outbox.load("last_reading")
    outbox.close()
    if as_json:
        json.dump(info, sys.stdout, indent=2, sort_keys=True)
        click.echo()
        return
    totals = info.get("totals", {})
    click.echo(f"meter: {info.get('meter')}  ok: {info.get('meter_ok')}  fault: {info.get('fault')}")
    click.echo(f"last reading: {info.get('last_reading')}")
    click.echo(
        f"outbox depth: {info['outbox']}  last seq: {info['seq']}  broker connected (at last heartbeat): "
        f"{info.get('broker_connected')}"
    )
    click.echo(f"orders: {info.get('orders')}")
    click.echo(
        f"P2P sold {totals.get('sold_wh', 0)} Wh, bought {totals.get('bought_wh', 0)} Wh, "
        f"earnings {totals.get('earnings', 0) / 1e6:.2f}"
    )
