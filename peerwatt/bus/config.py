"""Where the MQTT broker is and how to log in: :class:`BrokerConfig` (from an ``mqtt://`` or
``mqtts://`` URL and options), its TLS context, and the one-line description of a connection or
file error that the transports report.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass, field

DEFAULT_SESSION_EXPIRY_S = 86400
# QoS 1 messages held in memory while unacknowledged (in flight or waiting for the broker). During
# a long outage newer ones are not queued: an agent's outbox keeps every message on disk and
# resends it, a node republishes its block and seals; so RAM stays bounded (a few MB).
DEFAULT_MAX_QUEUED_MESSAGES = 10_000


@dataclass(frozen=True)
class BrokerConfig:
    """Where the MQTT broker is and how to log in. ``keepalive`` is in seconds."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's trusted CAs
    cert_file: str | None = None  # client certificate (may hold the key too)
    key_file: str | None = None
    keepalive: int = 30
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S  # MQTT 5: how long the broker keeps us
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES  # unacknowledged QoS 1 kept in RAM

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError("MQTT broker host must be a non-empty name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"MQTT broker port must be an integer, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"MQTT broker port {self.port} is outside 1..65535")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int):
            raise ValueError(f"MQTT keepalive must be an integer number of seconds, not {self.keepalive!r}")
        if not 5 <= self.keepalive <= 65535:
            raise ValueError(f"MQTT keepalive {self.keepalive} s is outside 5..65535 s")
        if not isinstance(self.session_expiry_s, int) or not 0 <= self.session_expiry_s < 2**32:
            raise ValueError(f"MQTT session expiry {self.session_expiry_s!r} s is outside 0..2^32-1")
        if type(self.max_queued_messages) is not int or self.max_queued_messages < 1:
            raise ValueError(f"max_queued_messages {self.max_queued_messages!r} must be a positive integer")
        if self.password is not None and self.username is None:
            raise ValueError("an MQTT password was given without a username")
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        given = [name for name, value in files.items() if value]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} given but TLS is off (use mqtts:// or tls = true)")
        if self.key_file and not self.cert_file:
            raise ValueError("an MQTT TLS key_file was given without a cert_file")

    @classmethod
    def from_url(cls, url: str, **options: object) -> BrokerConfig:
        """Parse ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, port 8883).

        ``options`` set the other fields (ca_file, cert_file, key_file, keepalive, ...) and override
        the URL's (e.g. username and password kept out of the URL). User name and password in the
        URL are percent-decoded. Raises ValueError with a one-line message.
        """
        if not isinstance(url, str) or not url.strip():
            raise ValueError("MQTT broker URL is empty (expected mqtt://host:port)")
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: unexpected path, query or fragment")
        tls = scheme == "mqtts"
        username = urllib.parse.unquote(parts.username) if parts.username is not None else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if port == 0:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: port 0")
        fields: dict[str, object] = {
            "host": parts.hostname,
            "port": port or (8883 if tls else 1883),
            "username": username or None,
            "password": password,
            "tls": tls,
        }
        try:
            return cls(**{**fields, **options})  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(f"bad MQTT broker option: {exc}") from None

    @property
    def address(self) -> str:
        """``host:port`` for messages (IPv6 hosts in brackets); never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL without credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.address}"

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for this broker (verifies the broker's certificate and host name)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.sslsocket_class = _ClosingSSLSocket
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f)
            raise ValueError(f"cannot load the MQTT TLS files ({files}): {_describe(exc)}") from None
        return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its TLS handshake fails.

    paho leaves the socket of a failed handshake (e.g. an unknown CA) open for the garbage
    collector; each retry would leak one.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except OSError:
            self.close()
            raise


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"


def _describe(exc: BaseException | None) -> str:
    """A short, single-line reason for a connection or file error."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[:1].lower() + exc.strerror[1:]
        return f"{text}: {exc.filename}" if exc.filename else text
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__
