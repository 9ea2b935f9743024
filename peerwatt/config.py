"""node.toml: a ledger node's settings, checked, with one-line errors (peerwatt/settings.py
holds the shared reading rules and the [broker] table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peerwatt.bus import BrokerConfig
from peerwatt.errors import UserError
from peerwatt.settings import broker_config, read_password_file, read_toml, take

__all__ = ["NodeConfig", "load_node_config", "broker_config", "read_password_file", "read_toml", "take"]


@dataclass(frozen=True)
class NodeConfig:
    """A ledger node's settings (node.toml)."""

    data: Path
    role: str
    genesis_file: Path | None  # the community's genesis file: the store in data must hold its ledger
    key_file: Path | None
    passphrase_file: Path | None
    broker: BrokerConfig
    client_id: str
    http_host: str
    http_port: int
    peers: tuple[str, ...]
    block_s: float | None
    failover_s: float  # seconds a round waits for its proposer's block (consensus propose timeout)
    client_id_given: bool = False  # client_id is node.toml's own (not the default)


# peerwatt's other TOML files, by the keys only they have: a file given where another was asked for
# is named for what it is (found in a QA pass: `member admit -c agent.toml` said "unknown key(s)
# community, heartbeat_s, ...", `node init --genesis node.toml` "unknown section(s): broker, ...")
_GENESIS = "a genesis file"
_AGENT = "an agent.toml (a household agent's settings)"
_NODE = "a node.toml (a node's settings)"
_OPERATOR = "an operator.toml (a validator's governance broker account)"
_DASHBOARD = "a dashboard.toml (the dashboard's settings)"


def config_kind(data: dict) -> str | None:
    """Which of peerwatt's TOML files ``data`` (a parsed file) looks like, or None."""
    keys = set(data)
    if isinstance(data.get("community"), dict) and ("chain" in keys or "validators" in keys):
        return _GENESIS
    if "role" in keys and "data" in keys:
        return _NODE
    if keys & {"meter", "state_dir", "heartbeat_s", "market", "homeassistant"}:
        return _AGENT
    if keys & {
        "instance",
        "listen",
        "secure_cookies",
        "session_hours",
        "broker_client_id",
        "neighbour_names",
    }:
        return _DASHBOARD
    if keys and keys <= {"client_id", "broker"} and "broker" in keys:
        return _OPERATOR
    return None


def load_node_config(path: str | Path) -> NodeConfig:
    """Read node.toml (see docs/ledger.md for an example)."""
    path = Path(path)
    where = str(path)
    data = read_toml(path)
    base = path.parent
    known = {"data", "role", "key", "passphrase_file", "broker", "client_id", "http", "peers", "block_s"}
    known |= {"failover_s", "genesis"}
    unknown = set(data) - known
    kind = config_kind(data)
    if kind not in (None, _NODE):
        raise UserError(
            f"{where} is {kind}, not a node.toml: give the node.toml of a validator (or observer), as "
            "`peerwatt community init` writes it in validator-N/"
        )
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    role = take(data, "role", str, where)
    if role not in ("sequencer", "validator", "observer"):
        raise UserError(f"{where}: role must be sequencer, validator or observer")
    key = take(data, "key", str, where, None)
    if role != "observer" and key is None:
        raise UserError(f"{where}: a {role} needs 'key' (its validator key file)")
    passphrase = take(data, "passphrase_file", str, where, None)
    http = take(data, "http", str, where, "127.0.0.1:8101")
    host, _, port = http.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{where}: http must look like 127.0.0.1:8101")
    peers = take(data, "peers", list, where, [])
    if not all(isinstance(p, str) and p.startswith(("http://", "https://")) for p in peers):
        raise UserError(f"{where}: peers must be a list of http:// addresses")
    block_s = take(data, "block_s", (int, float), where, None)
    failover_s = take(data, "failover_s", (int, float), where, 10.0)
    if not 0.5 <= failover_s <= 3600:
        raise UserError(f"{where}: failover_s must be between 0.5 and 3600 seconds")
    data_dir = base / take(data, "data", str, where)
    genesis = take(data, "genesis", str, where, None)
    return NodeConfig(
        data=data_dir,
        role=role,
        genesis_file=None if genesis is None else base / genesis,
        key_file=None if key is None else base / key,
        passphrase_file=None if passphrase is None else base / passphrase,
        broker=broker_config(data, where, base),
        client_id=take(data, "client_id", str, where, f"peerwatt-node-{role}-{data_dir.name}"),
        http_host=host,
        http_port=int(port),
        peers=tuple(peers),
        block_s=None if block_s is None else float(block_s),
        failover_s=float(failover_s),
        client_id_given="client_id" in data,
    )


def load_genesis_setting(path: Path, where: str | None):
    """The genesis a config file's ``genesis = ...`` names, or a UserError naming the setting:
    a TOML file that is no genesis (say another agent.toml) is ``<where>: genesis = <path> is
    <what it is>, not a genesis file``, or ``... is not a genesis file (<why>)``, not the genesis
    checker's bare "unknown section(s)". With ``where`` None, the option ``--genesis`` (as `node
    init` takes it): ``--genesis <path> is ...: give the community's genesis.toml``."""
    import tomllib

    from chain.genesis import GenesisError, NewerGenesis, load_genesis

    setting = f"--genesis {path}" if where is None else f"{where}: genesis = {path}"
    fix = (
        "give the community's genesis.toml"
        if where is None
        else "point genesis at the community's genesis.toml"
    )
    try:
        return load_genesis(path)
    except NewerGenesis as exc:  # a genesis, of a newer peerwatt
        raise UserError(f"{setting}: {str(exc).removeprefix(f'{path}: ')}") from None
    except GenesisError as exc:
        text = str(exc)
        if text.startswith(f"{path}: "):  # read as TOML, but not a genesis
            try:
                kind = config_kind(tomllib.loads(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                kind = None
            if kind not in (None, _GENESIS):
                raise UserError(f"{setting} is {kind}, not a genesis file: {fix}") from None
            raise UserError(
                f"{setting} is not a genesis file ({text.removeprefix(f'{path}: ')}): {fix}"
            ) from None
        if where is None:
            raise UserError(text) from None
        raise UserError(f"{where}: genesis: {text}") from None
