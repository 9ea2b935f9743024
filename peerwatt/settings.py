"""Reading config files (TOML, with tomllib): typed values with one-line errors, mode-0600
secret files, and the [broker] table every process shares.

A leaf of the wiring layer: it imports only the bus and the error type, so the household agent
(meter_agent/config.py) reads its agent.toml with the same rules as a node without importing the
node's wiring. Relative paths in a config file are relative to the file's folder.
"""

from __future__ import annotations

import json
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from peerwatt.bus import BrokerConfig
from peerwatt.errors import UserError


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file, or raise UserError naming the file and the problem."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a TOML text file ({not_utf8(exc)}): give the right file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, for a one-line error."""
    return f"not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"


def take(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, default: Any = ...
) -> Any:
    """One typed value from a config mapping (UserError names ``where.name``)."""
    if name not in data:
        if default is ...:
            raise UserError(f"{where}: '{name}' is missing")
        return default
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise UserError(f"{where}: '{name}' has the wrong type ({type(value).__name__})")
    return value


BROKER_KEYS = ("url", "username", "password_file", "ca_file", "cert_file", "key_file", "keepalive")
BROKER_FILES = ("ca_file", "cert_file", "key_file")


def private_file(path: Path, what: str) -> Path:
    """``path`` if only its owner may read it (mode 0600, like key files); UserError otherwise."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise UserError(
            f"{what} {path} is accessible by group/others (mode {mode:04o}); fix: chmod 600 {path}"
        )
    return path


def read_password_file(path: Path, where: str = "") -> str:
    """The broker password: the first line of a mode-0600 file (its line ending removed). An error
    is one line starting with ``where`` (the config file and table that named the file)."""
    try:
        private_file(path, "broker password file")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read broker password file {path}: {exc}") from None
        if not lines or not lines[0]:
            raise UserError(f"broker password file {path} is empty (write the password on its first line)")
    except UserError as exc:
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None
    return lines[0]


def broker_config(data: dict[str, Any], where: str, base: Path, *, missing_fix: str = "") -> BrokerConfig:
    """The [broker] table: url = "mqtt://host:port" (or mqtts://), username, password_file (a
    mode-0600 file holding the password; never the password itself), ca_file, cert_file, key_file.

    A TLS file that is not there, or cannot be read, is one line naming ``where`` and the file
    (:func:`_check_broker_files`); ``missing_fix`` ends the line of missing ones with what to do."""
    table = take(data, "broker", dict, where, {})
    bw = f"{where} [broker]"
    fix = 'put it in a file only you can read (chmod 600) and set password_file = "<that file>"'
    if "password" in table:
        raise UserError(f"{bw}: a password is not read from the config file: {fix}")
    unknown = set(table) - set(BROKER_KEYS)
    if unknown:
        raise UserError(f"{bw}: unknown key(s) {', '.join(sorted(unknown))}")
    url = take(table, "url", str, bw, "mqtt://127.0.0.1:1883")
    options: dict[str, Any] = {}
    if "username" in table:
        options["username"] = take(table, "username", str, bw)
    if "password_file" in table:
        if "username" not in table:
            raise UserError(f"{bw}: password_file needs a username")
        options["password"] = read_password_file(base / take(table, "password_file", str, bw), bw)
    for name in BROKER_FILES:
        if name in table:
            options[name] = str(base / take(table, name, str, bw))
    _check_broker_files(table, bw, base, missing_fix)
    if "key_file" in options:
        private_file(Path(options["key_file"]), "broker TLS key file")
    if "keepalive" in table:
        options["keepalive"] = take(table, "keepalive", int, bw)
    try:
        config = BrokerConfig.from_url(url, **options)
    except ValueError as exc:
        raise UserError(f"{bw}: {exc}") from None
    if config.password is not None and "password_file" not in table:
        raise UserError(f"{bw}: the url holds a password: {fix}")
    return config


def _check_broker_files(table: dict[str, Any], bw: str, base: Path, missing_fix: str) -> None:
    """UserError (one line, naming ``bw``, the config file's [broker]) naming every TLS file of
    ``table`` that is not there and the folder its relative path was taken from, then the first
    one that cannot be read (a folder, a loop of links). A QA pass copied add-dashboard's folder
    next to dashboard.toml, whose lines then named bare file names: only the key was reported (as
    `broker TLS key file broker-client.key not found`, no config file), a missing CA or
    certificate as all three files with "no such file or directory", and a ca_file that happened
    to lie next to the toml was taken silently."""
    missing = []
    unreadable = []
    for name in BROKER_FILES:
        if name not in table:
            continue
        value = table[name]  # a str: broker_config took it
        path = base / value
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # (a fifo would block the open below)
                unreadable.append(f"{name} {one_line(str(path))} is not a file")
                continue
            path.open("rb").close()
        except (FileNotFoundError, NotADirectoryError):
            missing.append(f"{name} = {one_line(json.dumps(value, ensure_ascii=False))}")
        except OSError as exc:
            unreadable.append(f"cannot read {name} {one_line(str(path))}: {exc.strerror}")
    if missing:
        folder = one_line(str(base.absolute()))
        raise UserError(
            f"{bw}: not found: {', '.join(missing)} (relative paths are taken from the config file's "
            f"folder, {folder}){missing_fix}"
        )
    if unreadable:
        raise UserError(f"{bw}: {unreadable[0]}")


def one_line(text: str) -> str:
    """``text`` on one line: anything unprintable (a line break) as \\uXXXX."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def check_tls_files(config: BrokerConfig, where: str) -> None:
    """UserError naming ``where`` and the files unless the [broker] TLS files load (they exist,
    are PEM and the client key belongs to the certificate); call before building the bus."""
    if not config.tls:
        return
    try:
        config.ssl_context()
    except ValueError as exc:
        try:
            certificate_account(config)
        except ValueError as mismatch:  # say which two files, in words
            raise UserError(f"{where} [broker]: {mismatch} (TLS: KEY_VALUES_MISMATCH)") from None
        raise UserError(
            f"{where} [broker]: {exc}; fix ca_file, cert_file and key_file (the community CA, and this "
            "account's certificate and key from the coordinator)"
        ) from None


# the account names `peerwatt broker certs` / `community init` give (peerwatt/broker/access.py): a
# meter's is its key id, a validator's node `node-<key id>`, its operator `operator-<key id>`
_OUR_ACCOUNT = re.compile(r"(?:(node|operator)-)?([0-9a-f]{32})")
DASHBOARD_ACCOUNT = "dashboard"


def describe_account(name: str) -> str:
    """Whose broker account ``name`` is, as far as its name tells: 'meter <id>', 'validator
    <id>'s node account (node-<id>)', ... or 'account <name>'."""
    match = _OUR_ACCOUNT.fullmatch(name)
    if match is None:
        return "the dashboard's account (dashboard)" if name == DASHBOARD_ACCOUNT else f"account {name}"
    kind, kid = match.groups()
    if kind is None:
        return f"meter {kid}"
    return f"validator {kid}'s {kind} account ({name})"


def certificate_account(config: BrokerConfig) -> str | None:
    """The broker account a TLS client certificate logs in as: the CN of [broker] cert_file
    (Mosquitto's ``use_identity_as_username``, docs/bus.md), or None without a client
    certificate or when it cannot be read (:func:`check_tls_files` says why). ValueError (one
    line) when key_file is not its key."""
    if not config.tls or not config.cert_file:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        cert = x509.load_pem_x509_certificate(Path(config.cert_file).read_bytes())
    except (OSError, ValueError):
        return None  # check_tls_files names the file and what is wrong with it
    key_path = Path(config.key_file or config.cert_file)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        key = None  # encrypted, or a format ssl reads and we do not: the TLS context checks it
    if key is not None and key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError(
            f"key_file {key_path} is not the key of cert_file {config.cert_file}: give the certificate "
            "and the key that were issued together (clients/<account>.crt and .key)"
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError(f"the certificate in cert_file {config.cert_file} has no CN (no broker account)")
    return str(names[0].value)


def check_broker_identity(
    config: BrokerConfig,
    where: str,
    *,
    own: str | None,
    signer: str,
    strict: bool,
    client_id: str | None = None,
) -> str | None:
    """Refuse (UserError naming ``where`` [broker]) a client certificate that is not this
    process's broker account; return a one-line note when ``client_id`` (as given in the config
    file) is not the certificate's account, which the broker takes as client id instead.

    ``own`` is the account of the key this process signs with (a meter id, ``node-<key id>``;
    None: an observer without a key), ``signer`` says which key that is ("meter X's key in
    key = ..."). ``strict``: no other account may be used (an agent: the meter's account is its
    id); otherwise only an account recognisably someone else's (another meter, validator node,
    operator, the dashboard) is refused and a name of the community's own choosing
    (``broker certs --node NAME=ROLE``) is taken on trust.

    A certificate of another account is refused because the broker would log this process in as
    that account and give it that client id: it and the account's owner then push each other off
    the broker every second, and every publication is refused (a QA pass with Mosquitto).
    """
    try:
        account = certificate_account(config)
    except ValueError as exc:
        raise UserError(f"{where} [broker]: {exc}") from None
    if account is None:
        return None
    ours = _OUR_ACCOUNT.fullmatch(account) is not None or account == DASHBOARD_ACCOUNT
    if own is None:  # an observer without a key: any account of a meter, validator or dashboard
        theirs = ours
    else:
        theirs = account != own and (strict or ours)
    if theirs:
        wanted = (
            f"the certificate and key of account {own} (clients/{own}.crt and .key"
            if own is not None
            else "an observer account's certificate and key (`peerwatt broker certs --node NAME=observer`"
        )
        raise UserError(
            f"{where} [broker]: cert_file {config.cert_file} is the certificate of "
            f"{describe_account(account)}, but {signer}: the broker would log this process in as "
            f"{account}, and it and that account's owner would push each other off the broker; give "
            f"{wanted} from the community's coordinator)"
        )
    if client_id is not None and client_id != account:
        return (
            f'note: {where}: client_id "{client_id}" is not used: the broker takes the account of the '
            f"certificate, {account}, as the client id"
        )
    return None
