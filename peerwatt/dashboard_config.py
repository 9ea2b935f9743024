"""dashboard.toml: the dashboard server's settings, checked, with one-line errors.

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
    ca_file = "dashboard-broker/community-ca.crt"     # as `peerwatt community add-dashboard` prints:
    cert_file = "dashboard-broker/broker-client.crt"  # the folder it wrote, copied next to this file
    key_file = "dashboard-broker/broker-client.key"   # (or username/password_file, as for nodes)

A [broker] TLS file that is not there is one line naming every such file and the folder the
relative paths were taken from (settings.broker_config, as for every config file), ending with
where add-dashboard's folder goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerwatt.errors import UserError
from peerwatt.settings import broker_config, read_toml, take

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


# the end of the line naming missing [broker] files: a QA pass copied add-dashboard's folder next to
# dashboard.toml and kept the lines naming bare file names (tests/peerwatt/test_dashboard_broker_folder.py)
_COPY_THE_FOLDER = (
    "; copy the folder `peerwatt community add-dashboard` wrote next to dashboard.toml and name the "
    "files inside it, as that command prints"
)


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
    data = read_toml(path)
    where = str(path)
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    base = path.parent
    broker = broker_config(data, where, base, missing_fix=_COPY_THE_FOLDER) if "broker" in data else None
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
        broker=broker,
        broker_client_id=take(data, "broker_client_id", str, where, "dashboard"),
        neighbour_names=names,
    )


def _listen(text: str, where: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{where}: listen must look like 127.0.0.1:8080")
    return host.strip("[]"), int(port)
