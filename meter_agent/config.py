"""agent.toml: where the meter is, which key signs, the broker, the market strategy (one-line errors).

Relative paths are relative to the config file's folder. Example in docs/agent.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.genesis import GenesisError, check_serial
from meter_agent.homeassistant import METER_ID_CHARS, discovery_topic
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MAX_TOPIC_BYTES, BrokerConfig, check_topic
from peerwatt.errors import UserError
from peerwatt.settings import broker_config, read_password_file, read_toml, take

# [meter] source: a Modbus meter (profile), a DSMR P1 port, a German meter's SML optical port,
# a Shelly Pro 3EM's HTTP RPC API, values on the household's own MQTT broker
METER_SOURCES = ("modbus", "p1", "sml", "shelly-http", "mqtt")
# the profile name a source's readings carry
SOURCE_PROFILES = {"p1": "p1-dsmr5", "sml": "sml", "shelly-http": "shelly-pro-3em-http", "mqtt": "mqtt"}


@dataclass(frozen=True)
class MeterConfig:
    profile: str  # for other sources SOURCE_PROFILES[source] (they need no profile file)
    host: str | None
    port: int | None
    serial_device: str | None
    baudrate: int | None
    unit: int | None
    poll_s: float
    timeout_s: float
    close_between_polls: bool
    serial: str | None  # the enrolled serial, used when the meter does not report one
    profile_dirs: tuple[str, ...]
    source: str = "modbus"
    mqtt: Any = None  # for source = "mqtt": a meter_agent.mqtt_source.MqttSourceConfig


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    community: str
    key_file: Path
    passphrase_file: Path | None
    genesis_file: Path
    state_dir: Path
    meter: MeterConfig
    broker: BrokerConfig
    client_id: str | None
    strategy: StrategyConfig
    heartbeat_s: float
    homeassistant: bool
    homeassistant_prefix: str
    metrics_port: int | None


MQTT_QUANTITY_KEYS = {"import": "import_wh", "export": "export_wh", "power": "power_w"}

# the keys each table may hold (anything else is refused: a misspelt key silently took its default)
METER_KEYS = {
    "source", "profile", "host", "port", "serial_device", "baudrate", "unit", "poll_s", "timeout_s",
    "close_between_polls", "serial", "profile_dirs",
}  # fmt: skip
MQTT_METER_KEYS = {*MQTT_QUANTITY_KEYS, "broker", "password_file", "username", "client_id", "stale_polls"}
# the [meter] keys each source reads besides source, serial, poll_s and timeout_s: another one
# contradicts the source and is refused (found in a QA pass: source = "p1" with profile = "sdm630"
# or unit = 5, or source = "mqtt" with port = 1884, were read as P1 and port 1883 without a word)
COMMON_METER_KEYS = {"source", "serial", "poll_s", "timeout_s"}
SOURCE_KEYS = {
    "modbus": METER_KEYS - COMMON_METER_KEYS,
    "p1": {"host", "port", "serial_device", "baudrate"},
    "sml": {"host", "port", "serial_device", "baudrate"},
    "shelly-http": {"host", "port"},
    "mqtt": MQTT_METER_KEYS,
}
SOURCE_READS = {
    "modbus": "profile and host or serial_device",  # (and every other key: never said)
    "p1": "host (and port) or serial_device (and baudrate)",
    "sml": "host and port, or serial_device (and baudrate)",
    "shelly-http": "host (and port)",
    "mqtt": 'broker = "mqtt://host:port", its account and the topics',
}
MARKET_KEYS = {"trade", "sell_share", "sell_limit_price", "buy_limit_price", "min_order_wh"}
HOMEASSISTANT_KEYS = {"enabled", "prefix"}

# durations in agent.toml, in seconds: (lowest, highest); finite, checked at load (docs/agent.md)
POLL_S = (0.1, 3600.0)
TIMEOUT_S = (0.1, 60.0)
HEARTBEAT_S = (0.1, 3600.0)
# a serial port's speed: Linux's highest named rate is 4000000 (a larger one failed at run time)
MAX_BAUDRATE = 4_000_000


def _no_unknown_keys(table: dict, known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (docs/agent.md lists the keys)"
        )


def _seconds(
    table: dict, name: str, where: str, default: float, bounds: tuple[float, float], what: str
) -> float:
    """A duration: a finite number of seconds within ``bounds`` (inf, nan or 1e12 crashed the agent
    or made every meter read fail, found in a QA pass)."""
    value = float(take(table, name, (int, float), where, default))
    low, high = bounds
    if not (math.isfinite(value) and low <= value <= high):
        raise UserError(f"{where}: {name} must be {low:g} to {high:g} seconds ({what}), not {value:g}")
    return value


def _mqtt_meter(m: dict, mw: str, base: Path) -> Any:
    """[meter] with source = "mqtt": broker, serial, stale_polls, username/password_file and one
    table per quantity: import/export/power = { topic, path, unit[, invert] }."""
    from meter_agent.mqtt_source import MqttQuantity, MqttSourceConfig

    try:  # the community broker's parser: port 0, a path or a query are refused (a QA pass)
        broker = BrokerConfig.from_url(take(m, "broker", str, mw))
    except ValueError as exc:
        raise UserError(
            f'{mw}: broker: {exc} (give "mqtt://host[:port]", the household\'s own broker)'
        ) from None
    if broker.tls or broker.password is not None:
        raise UserError(
            f'{mw}: broker must be "mqtt://host[:port]" (the household\'s own broker; a password goes in '
            "password_file)"
        )
    quantities = {}
    for key, name in MQTT_QUANTITY_KEYS.items():
        table = take(m, key, dict, mw)
        qw = f"{mw} {key}"
        unknown = set(table) - {"topic", "path", "unit", "invert"}
        if unknown:
            raise UserError(f"{qw}: unknown key(s) {', '.join(sorted(unknown))}")
        topic = take(table, "topic", str, qw)
        try:  # a NUL or over 65535 bytes: the broker dropped each subscribe (found in a QA pass)
            check_topic(topic)
        except ValueError as exc:
            raise UserError(f"{qw}: {exc}") from None
        quantities[name] = MqttQuantity(
            topic=topic,
            path=take(table, "path", str, qw, ""),
            unit=take(table, "unit", str, qw),
            invert=take(table, "invert", bool, qw, False),
        )
    password_file = take(m, "password_file", str, mw, None)
    try:
        return MqttSourceConfig(
            host=broker.host,
            port=broker.port,
            quantities=quantities,
            serial=take(m, "serial", str, mw),
            stale_polls=take(m, "stale_polls", int, mw, 12),
            username=take(m, "username", str, mw, None) or broker.username,
            password=None if password_file is None else read_password_file(base / password_file, mw),
            client_id=take(m, "client_id", str, mw, None),
        )
    except ValueError as exc:
        raise UserError(f"{mw}: {exc}") from None


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and check agent.toml."""
    path = Path(path)
    where = str(path)
    data = read_toml(path)
    base = path.parent
    unknown = set(data) - {
        "community",
        "key",
        "passphrase_file",
        "genesis",
        "state_dir",
        "meter",
        "broker",
        "client_id",
        "market",
        "heartbeat_s",
        "homeassistant",
        "metrics_port",
    }
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (docs/agent.md lists the keys)"
        )
    m = take(data, "meter", dict, where)
    mw = f"{where} [meter]"
    _no_unknown_keys(m, METER_KEYS | MQTT_METER_KEYS, mw)
    host = take(m, "host", str, mw, None)
    serial_device = take(m, "serial_device", str, mw, None)
    source = take(m, "source", str, mw, "modbus")
    if source not in METER_SOURCES:
        raise UserError(f"{mw}: source must be one of {', '.join(METER_SOURCES)}, not {source!r}")
    mqtt_only = set(m) & MQTT_METER_KEYS
    if source != "mqtt" and mqtt_only:
        raise UserError(
            f'{mw}: {", ".join(sorted(mqtt_only))} only with source = "mqtt" (this meter\'s source is '
            f'"{source}")'
        )
    if source == "shelly-http" and (host is None or serial_device is not None):
        raise UserError(
            f'{mw}: source = "shelly-http" needs host (the Shelly\'s address) and no serial_device'
        )
    if source == "mqtt" and (host is not None or serial_device is not None):
        raise UserError(f'{mw}: source = "mqtt" reads broker = "mqtt://host:port", not host or serial_device')
    unread = set(m) - COMMON_METER_KEYS - SOURCE_KEYS[source]
    if unread:
        raise UserError(
            f'{mw}: {", ".join(sorted(unread))} not read with source = "{source}", which reads '
            f"{SOURCE_READS[source]} (docs/meters.md)"
        )
    if source != "mqtt" and (host is None) == (serial_device is None):
        what = {"p1": "a P1 dongle's TCP address", "sml": "an IR-head bridge's TCP address"}.get(
            source, "Modbus TCP"
        )
        raise UserError(f"{mw}: give either host ({what}) or serial_device (a serial port), not both")
    if host == "" or serial_device == "":
        raise UserError(f"{mw}: {'host' if host == '' else 'serial_device'} is empty")
    serial = take(m, "serial", str, mw, None)
    if serial is not None:  # "S 1" loaded, then the ledger refused every reading (a QA pass)
        try:
            check_serial(serial, f"serial {serial[:80]!r}")
        except GenesisError as exc:
            raise UserError(f"{mw}: {exc}: the ledger would refuse every reading") from None
    meter = MeterConfig(
        source=source,
        profile=take(m, "profile", str, mw) if source == "modbus" else SOURCE_PROFILES[source],
        host=host,
        port=take(m, "port", int, mw, None),
        serial_device=serial_device,
        baudrate=take(m, "baudrate", int, mw, None),
        unit=take(m, "unit", int, mw, None),
        poll_s=_seconds(m, "poll_s", mw, 5, POLL_S, "between meter reads"),
        timeout_s=_seconds(m, "timeout_s", mw, 1.0, TIMEOUT_S, "to wait for the meter's answer"),
        close_between_polls=take(m, "close_between_polls", bool, mw, False),
        serial=serial,
        profile_dirs=tuple(str(base / d) for d in take(m, "profile_dirs", list, mw, [])),
        mqtt=_mqtt_meter(m, mw, base) if source == "mqtt" else None,
    )
    if meter.port is not None and not 1 <= meter.port <= 65535:
        raise UserError(f"{mw}: port must be 1-65535, not {meter.port}")
    if meter.unit is not None and not 0 <= meter.unit <= 255:
        raise UserError(f"{mw}: unit (the Modbus unit id) must be 0-255, not {meter.unit}")
    if meter.baudrate is not None and not 0 < meter.baudrate <= MAX_BAUDRATE:
        raise UserError(f"{mw}: baudrate must be positive and at most {MAX_BAUDRATE}, not {meter.baudrate}")
    if serial_device is not None and "port" in m:
        raise UserError(f"{mw}: port is for host (a TCP address), not serial_device (which reads baudrate)")
    if host is not None and "baudrate" in m:
        raise UserError(
            f"{mw}: baudrate is for serial_device, not host (over TCP the device or bridge sets the "
            "line speed)"
        )
    if source == "sml" and host is not None and meter.port is None:
        raise UserError(f'{mw}: source = "sml" with host needs port (the bridge\'s raw TCP port)')
    market = take(data, "market", dict, where, {})
    kw = f"{where} [market]"
    _no_unknown_keys(market, MARKET_KEYS, kw)
    try:
        strategy = StrategyConfig(
            trade=take(market, "trade", bool, kw, True),
            sell_share=float(take(market, "sell_share", (int, float), kw, 0.8)),
            sell_limit_price=take(market, "sell_limit_price", int, kw, 100_000),
            buy_limit_price=take(market, "buy_limit_price", int, kw, 250_000),
            min_order_wh=take(market, "min_order_wh", int, kw, 20),
        )
    except ValueError as exc:
        raise UserError(f"{kw}: {exc}") from None
    ha = take(data, "homeassistant", dict, where, {})
    hw = f"{where} [homeassistant]"
    _no_unknown_keys(ha, HOMEASSISTANT_KEYS, hw)
    ha_prefix = take(ha, "prefix", str, hw, "homeassistant")
    try:  # + or # stopped the agent with a traceback at start (found in a QA pass)
        check_topic(ha_prefix)
    except ValueError as exc:
        raise UserError(
            f"{hw}: prefix {ha_prefix[:80]!r} is not a topic prefix to publish to: {exc}"
        ) from None
    # the longest topic the prefix makes (the HA state topic does not use it): a 65,500-character
    # prefix loaded, then the agent stopped with a traceback at start (found in a QA pass)
    longest = discovery_topic(ha_prefix, "0" * METER_ID_CHARS)
    try:
        check_topic(longest)
    except ValueError:
        size, rest = len(longest.encode()), len(longest) - len(ha_prefix)
        raise UserError(
            f"{hw}: prefix is {size - rest} bytes long, so the discovery topic PREFIX/device/"
            f"peerwatt_<meter id>/config is {size} bytes; MQTT allows at most {MAX_TOPIC_BYTES}: the "
            f"prefix may have at most {MAX_TOPIC_BYTES - rest} bytes (Home Assistant uses homeassistant)"
        ) from None
    passphrase = take(data, "passphrase_file", str, where, None)
    heartbeat_s = _seconds(data, "heartbeat_s", where, 60, HEARTBEAT_S, "between status messages")
    metrics_port = take(data, "metrics_port", int, where, None)
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise UserError(f"{where}: metrics_port must be 1-65535, not {metrics_port}")
    return AgentConfig(
        path=path,
        community=take(data, "community", str, where),
        key_file=base / take(data, "key", str, where),
        passphrase_file=None if passphrase is None else base / passphrase,
        genesis_file=base / take(data, "genesis", str, where),
        state_dir=base / take(data, "state_dir", str, where, "agent-state"),
        meter=meter,
        broker=broker_config(data, where, base),
        client_id=take(data, "client_id", str, where, None),
        strategy=strategy,
        heartbeat_s=heartbeat_s,
        homeassistant=take(ha, "enabled", bool, hw, False),
        homeassistant_prefix=ha_prefix,
        metrics_port=metrics_port,
    )
