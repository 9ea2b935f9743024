"""The privacy table of docs/privacy.md, row by row, on a real Mosquitto started from what
`peerwatt broker certs` and `peerwatt broker config` generate, with the commands `broker config`
prints (as root Mosquitto drops to its own user, as on Debian).

Each role (sequencer, validator, observer, operator, two households' meters, the dashboard's
read-only account) subscribes to ``#`` and publishes to every topic of the community: what each
receives and what the broker accepts from each must be exactly the table's (written out here,
independently of the code that makes the ACL). An account connecting with another account's
client id never takes its session. A household verifies its receipts with only what its account
may read.
"""

from __future__ import annotations

import grp
import logging
import shutil
import socket
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chain.block import header_hash
from chain.canonical import dumps_checked, loads_strict
from chain.engine import Ledger, check_seal_for
from chain.envelope import parse_envelope
from chain.kvapp import KeyValueApp
from market.app import MarketApp
from meter_agent.clock import SimClock
from meter_agent.receipts import verify_receipt
from peerwatt.bus import BrokerConfig, MqttBus, topics
from peerwatt.node import Node
from peerwatt.ports import free_port
from tests.support.community_broker import (
    GeneratedBroker,
    genesis_toml,
    peerwatt,
    revoke_by_vote,
    running_as_root,
)
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, opening_orders
from tests.support.procnet import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
WAIT_S = 20
ROLES = ("seq", "val", "obs", "op", "m1", "m2", "dash")


def plain_connect_answer(port: int, user: str, password: str) -> bytes:
    """Send an MQTT 3.1.1 CONNECT in clear text; return the first bytes answered (b"": closed)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    payload = text("plain-client") + text(user) + text(password)
    variable = text("MQTT") + bytes([4, 0b11000010]) + (30).to_bytes(2, "big")
    body = variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            return sock.recv(4)
        except ConnectionResetError:
            return b""


def log_problems(log: str) -> list[str]:
    """The broker log's warning and error lines."""
    return [line for line in log.splitlines() if "Warning" in line or "Error" in line]


class Inbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def all(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)


class Refusals(logging.Handler):
    """Counts the bus's 'the MQTT broker refused the message to <topic>' lines (MQTT 5 PUBACK)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.topics: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("the MQTT broker refused the message to "):
            self.topics.append(message.removeprefix("the MQTT broker refused the message to ").split(":")[0])


class Community:
    """A generated broker folder: genesis, accounts by role, and bus factories."""

    def __init__(self, root: Path, c, auth: str) -> None:
        self.root, self.c, self.auth = root, c, auth
        self.community = c.community
        self.out = root / "broker"
        self.certs = self.out / "certs"
        self.genesis = root / "genesis.toml"
        self.genesis.write_text(genesis_toml(c.genesis.doc))
        self.seq_key = c.genesis.doc["chain"]["sequencer"]
        self.val_key = next(k for k in c.genesis.doc["validators"] if k != self.seq_key)
        self.m1, self.m2 = c.meters[0].id, c.meters[1].id
        self.names = {"seq": "seq", "val": "val", "obs": "obs", "op": "op", "dash": "dashboard"}
        self.names.update({f"m{i + 1}": meter.id for i, meter in enumerate(c.meters)})
        self.port = free_port()
        self.local_port = free_port() if auth == "password" else 0
        self.buses: list[MqttBus] = []
        self.broker: GeneratedBroker | None = None
        self.stdout = ""
        self.certs_stdout = ""

    def node_specs(self) -> list[str]:
        nodes = ["seq=sequencer", f"val=validator:{self.val_key}", "obs=observer", "op=operator"]
        return [arg for spec in nodes for arg in ("--node", spec)] + ["--dashboard"]

    def generate(self, source: tuple[str, str] | None = None) -> None:
        """Run `broker certs` and `broker config` from the genesis (or ``source``, e.g. ``("--data",
        node_dir)``) and start the broker (first time only)."""
        source = source or ("--genesis", str(self.genesis))
        host = ["--host", "127.0.0.1"] if self.broker is None else []
        made = peerwatt(
            "broker", "certs", "--out", str(self.certs), *host, *source, *self.node_specs(),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        self.certs_stdout = made.stdout
        args = [
            "broker", "config", *source, "--out", str(self.out),
            "--persistence", str(self.root / "persistence"), "--auth", self.auth,
            "--port", str(self.port), "--bind", "127.0.0.1", *self.node_specs(),
        ]  # fmt: skip
        if self.auth == "password":
            args += ["--local-port", str(self.local_port)]
        result = peerwatt(*args)
        assert result.returncode == 0, result.stderr
        self.stdout = result.stdout
        if self.broker is None:
            self.broker = GeneratedBroker.from_output(self.out, self.port, result.stdout)
            self.broker.start()

    def config(self, role: str, *, password: str | None = None, local: bool = False) -> BrokerConfig:
        user = self.names[role]
        if self.auth == "cert":
            clients = self.certs / "clients"
            return BrokerConfig(
                port=self.port,
                tls=True,
                ca_file=str(self.certs / "community-ca.crt"),
                cert_file=str(clients / f"{user}.crt"),
                key_file=str(clients / f"{user}.key"),
            )
        secret = password or (self.out / "credentials" / f"{user}.password").read_text().strip()
        if local:
            return BrokerConfig(port=self.local_port, username=user, password=secret)
        return BrokerConfig(
            port=self.port,
            username=user,
            password=secret,
            tls=True,
            ca_file=str(self.certs / "community-ca.crt"),
        )

    def bus(self, role: str, client_id: str | None = None, **options) -> MqttBus:
        local = options.pop("local", False)
        password = options.pop("password", None)
        bus = MqttBus(
            self.config(role, local=local, password=password), client_id or self.names[role], **options
        )
        self.buses.append(bus)
        return bus

    def close(self) -> None:
        for bus in self.buses:
            bus.stop(flush_timeout_s=0)
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture
def make_broker() -> Iterator[Callable[..., Community]]:
    from tests.conftest import require_tool

    require_tool("mosquitto", "/usr/sbin/mosquitto")
    require_tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    made: list[Community] = []
    roots: list[str] = []

    def make(auth: str = "cert", c=None) -> Community:
        root = tempfile.mkdtemp(prefix="peerwatt-broker-")
        roots.append(root)
        Path(root).chmod(0o755)  # the mosquitto user must reach the generated files
        community = Community(Path(root), c or make_community(validators=2, members=2), auth)
        made.append(community)
        community.generate()
        return community

    try:
        yield make
    finally:
        for community in made:
            community.close()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


# -- the privacy table, written out independently of peerwatt/broker/access.py ------------------


def universe(k: Community) -> list[str]:
    ids = [k.m1, k.m2, k.seq_key, k.val_key]
    c = k.community
    per_sender = ("orders", "readings", "seals", "receipts", "status", "config")
    return [
        topics.gov(c), topics.blocks(c), topics.headers(c), topics.book(c),
        *(getattr(topics, kind)(c, i) for kind in per_sender for i in ids),
    ]  # fmt: skip


def may_write(k: Community, role: str) -> set[str]:
    c = k.community
    if role in ("seq", "val"):  # any validator proposes when its turn comes: the same rights
        own = k.seq_key if role == "seq" else k.val_key
        receipts = {topics.receipts(c, i) for i in (k.m1, k.m2, k.seq_key, k.val_key)}
        own_topics = {topics.seals(c, own), topics.config(c, own)}
        return {topics.blocks(c), topics.headers(c), topics.book(c), *own_topics, *receipts}
    if role == "op":
        return {topics.gov(c)}
    if role in ("m1", "m2"):
        m = k.names[role]
        return {topics.orders(c, m), topics.readings(c, m), topics.status(c, m)}
    return set()


def may_read(k: Community, role: str, topic: str) -> bool:
    c = k.community
    kind = topics.parse(topic).kind
    if role in ("seq", "val"):
        return kind in ("orders", "readings", "gov", "seals", "blocks")
    if role == "obs":
        return kind in ("blocks", "seals")
    if role in ("m1", "m2"):
        m = k.names[role]
        if kind == "config":  # every validator's configuration history
            return True
        return topic in (topics.receipts(c, m), topics.status(c, m), topics.headers(c), topics.book(c))
    if role == "dash":  # the dashboard's read-only account: every agent's status, nothing else
        return kind == "status"
    return False


def publish_everywhere(k: Community, role: str, bus: MqttBus, refusals: Refusals) -> set[str]:
    """Publish to every topic; return those the broker acknowledged (the others it refused)."""
    acked: list[str] = []
    lock = threading.Lock()
    before = len(refusals.topics)
    every = universe(k)
    for topic in every:

        def ack(topic: str = topic) -> None:
            with lock:
                acked.append(topic)

        bus.publish(topic, role.encode(), on_ack=ack)

    def settled() -> bool:
        with lock:
            return len(acked) + len(refusals.topics) - before == len(every)

    wait_for(settled, WAIT_S, f"the broker's answers to {role}'s publications")
    return set(acked)


def test_each_role_receives_and_may_publish_exactly_its_row(make_broker) -> None:
    k = make_broker("cert")
    refusals = Refusals()
    logging.getLogger("peerwatt.bus").addHandler(refusals)
    try:
        inboxes = {role: Inbox() for role in ROLES}
        buses = {role: k.bus(role) for role in ROLES}
        for role, bus in buses.items():
            bus.subscribe("#", inboxes[role])
            bus.start()
        for role, bus in buses.items():
            assert bus.wait_connected(WAIT_S), (role, bus.last_error)
            assert bus.protocol == "5"
        for role, bus in buses.items():
            assert bus.wait_subscribed(WAIT_S), (role, bus.last_error)
        accepted = {role: publish_everywhere(k, role, buses[role], refusals) for role in ROLES}
        for role in ROLES:
            assert accepted[role] == may_write(k, role), role

        expected = {
            role: sorted(
                (topic, publisher.encode())
                for publisher in ROLES
                for topic in may_write(k, publisher)
                if may_read(k, role, topic)
            )
            for role in ROLES
        }
        wait_for(lambda: all(set(expected[r]) <= set(inboxes[r].all()) for r in ROLES), WAIT_S, "deliveries")
        time.sleep(1.0)  # anything more would have come with them
        for role in ROLES:
            assert sorted(inboxes[role].all()) == expected[role], role
        # the households' rows: never a block, another meter's data, or anyone's orders/readings
        for role, other in (("m1", k.m2), ("m2", k.m1)):
            received = {t for t, _ in inboxes[role].all()}
            assert topics.blocks(k.community) not in received
            assert not any(other in t for t in received), role
            assert not any(topics.parse(t).kind in ("orders", "readings", "seals") for t in received)
    finally:
        logging.getLogger("peerwatt.bus").removeHandler(refusals)

    log = k.broker.log()
    assert "mosquitto version" in log and "running" in log
    assert not log_problems(log), log


def _stays_connected(victim_changes: list[bool], thief: MqttBus, seconds: float = 3.0) -> None:
    assert thief.wait_connected(WAIT_S), thief.last_error
    time.sleep(seconds)  # Mosquitto would have kicked the victim at once; paho reconnects in ~1-3 s
    assert victim_changes == [True], victim_changes  # connected once, never dropped
    assert thief.connected


@pytest.mark.parametrize("auth", ["cert", "password"])
def test_another_accounts_client_id_never_takes_its_session(make_broker, auth: str) -> None:
    k = make_broker(auth)
    refusals = Refusals()
    logging.getLogger("peerwatt.bus").addHandler(refusals)
    try:
        for victim, thief_role in (("seq", "m2"), ("m1", "m2"), ("val", "obs")):
            changes: list[bool] = []
            target = k.bus(victim, on_connection_change=changes.append)
            target.start()
            assert target.wait_connected(WAIT_S), target.last_error
            thief = k.bus(thief_role, client_id=k.names[victim])  # asks for the victim's client id
            thief.start()
            _stays_connected(changes, thief)
            # the rights follow the account, not the client id asked for
            taken = publish_everywhere(k, thief_role, thief, refusals)
            assert taken == may_write(k, thief_role)
            thief.stop(flush_timeout_s=0)
            target.stop(flush_timeout_s=0)
    finally:
        logging.getLogger("peerwatt.bus").removeHandler(refusals)
    assert f"as {k.m2} " in k.broker.log()  # the broker named the thief by its account


def test_password_mode_tls_local_listener_and_wrong_password(make_broker) -> None:
    k = make_broker("password")
    passwords = {p.stem: p.read_text().strip() for p in (k.out / "credentials").iterdir()}
    assert set(passwords) == {"seq", "val", "obs", "op", "dashboard", k.m1, k.m2}
    for user in passwords:
        assert stat.S_IMODE((k.out / "credentials" / f"{user}.password").stat().st_mode) == 0o600
    hashed = (k.out / "peerwatt.passwd").read_text()
    assert all(pw not in hashed for pw in passwords.values())  # only hashes on the broker

    inbox = Inbox()
    meter = k.bus("m1", local=True)  # the plain loopback listener: same accounts, same ACL
    meter.subscribe("#", inbox)
    seq = k.bus("seq")
    for bus in (meter, seq):
        bus.start()
        assert bus.wait_connected(WAIT_S), bus.last_error
    assert meter.wait_subscribed(WAIT_S), meter.last_error
    seq.publish(topics.receipts(k.community, k.m2), b"receipt of m2")
    seq.publish(topics.blocks(k.community), b"a block")
    done = threading.Event()
    seq.publish(topics.receipts(k.community, k.m1), b"receipt of m1", on_ack=done.set)
    assert done.wait(WAIT_S)
    wait_for(lambda: inbox.on(topics.receipts(k.community, k.m1)), WAIT_S, "own receipt")
    time.sleep(0.5)
    assert inbox.all() == [(topics.receipts(k.community, k.m1), b"receipt of m1")]

    # right password, but in clear text to the TLS listener: no CONNACK, the socket is closed.
    # Mosquitto may log that refusal as an OpenSSL "wrong version number" error, or only as a
    # protocol error, depending on when it reads the bytes: that one error is the test's own doing.
    assert not log_problems(k.broker.log()), k.broker.log()
    assert plain_connect_answer(k.port, k.m1, passwords[k.m1]) == b""
    assert plain_connect_answer(k.local_port, k.m1, "not-the-password")[:1] == b"\x20"  # CONNACK...
    wrong = k.bus("m2", password="not-the-password")  # ...refusing; and over TLS too
    wrong.start()
    wait_for(lambda: wrong.last_error, WAIT_S, "refusal")
    assert "Not authorized" in wrong.last_error and not wrong.connected
    log = k.broker.log()
    assert all("SSL routines::wrong version number" in line for line in log_problems(log)), log


def test_generated_files_start_as_documented_and_certificates_name_accounts(make_broker) -> None:
    """Debian: Mosquitto started as root drops to 'mosquitto' and must read the ACL, password file
    and broker key; the printed command makes the persistence folder; the broker saves there."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    k = make_broker("password")
    certs, out = k.certs, k.out
    for key in ("community-ca.key", "clients/seq.key", f"clients/{k.m1}.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600, key
    cert = x509.load_pem_x509_certificate((certs / "clients" / f"{k.m1}.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == k.m1  # bound to its key id
    for shared in (out / "peerwatt.acl", out / "peerwatt.passwd", certs / "broker.key"):
        assert stat.S_IMODE(shared.stat().st_mode) == 0o640, shared
    persistence = k.root / "persistence"
    if running_as_root():
        mosquitto_gid = grp.getgrnam("mosquitto").gr_gid
        for shared in (out / "peerwatt.acl", out / "peerwatt.passwd", certs / "broker.key"):
            assert shared.stat().st_gid == mosquitto_gid, shared
        assert k.broker.uid() != 0  # it dropped to its own user and still read everything
        assert persistence.stat().st_uid == k.broker.uid()
    dropin = (out / "mosquitto.service.d" / "peerwatt.conf").read_text()
    assert "ExecStart=\n" in dropin and f"-c {out.absolute()}/mosquitto.conf" in dropin
    assert f"install -d -m 0750 -o mosquitto -g mosquitto {persistence}" in dropin
    k.broker.save()
    wait_for(lambda: (persistence / "mosquitto.db").exists(), WAIT_S, "the persistence file")
    again = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1")
    assert again.returncode != 0 and "--force" in again.stderr and "Traceback" not in again.stderr


def test_a_household_verifies_its_receipts_with_what_it_may_read(make_broker) -> None:
    """A sequencer and a validator (in process, their own certificate accounts) clear a real
    market round; household m1, subscribed to '#', gets its own receipts and the headers, and
    checks every receipt (seals and inclusion proof) and header with the genesis alone."""
    c = make_community(validators=2, members=4, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    k = make_broker("cert", c)
    clock = SimClock(T0 + 10, 1.0)
    nodes = []
    for role in ("seq", "val"):
        key_id = k.seq_key if role == "seq" else k.val_key
        index = next(i for i, v in enumerate(c.validators) if v.id == key_id)
        Ledger.create(k.root / role, c.genesis, MarketApp()).close()
        node = Node(
            Ledger.open(k.root / role, MarketApp()),
            k.bus(role),
            role="sequencer" if role == "seq" else "validator",
            key=c.validators[index].key,
            clock=clock,
            block_s=0,
        )
        node.start()
        nodes.append(node)
    household = Inbox()
    m1 = k.bus("m1")
    m1.subscribe("#", household)
    # every household publishes its own order with its own account (m1, m2 sell; m3, m4 buy); one
    # connection per account: a second one would share its client id (the user name)
    senders = {c.meters[0].id: m1}
    senders.update({meter.id: k.bus(f"m{i + 1}") for i, meter in enumerate(c.meters) if i})
    for bus in senders.values():
        bus.start()
    for bus in [*senders.values(), *(n.bus for n in nodes)]:
        assert bus.wait_subscribed(WAIT_S), bus.last_error
    for env in opening_orders(c, T0 + 10):
        senders[env.signer].publish(topics.orders(c.community, env.signer), env.to_bytes())

    def run_until(predicate, what: str) -> None:
        deadline = time.monotonic() + WAIT_S * 2
        while not predicate():
            assert time.monotonic() < deadline, what
            for node in nodes:
                node.step()
            time.sleep(0.01)

    def orders_final() -> bool:
        status = nodes[0].status()
        return status["accepted"] >= 4 and status["pending"] == 0 and not status["in_progress"]

    # the orders must be final before the clock jumps to gate closure (later they are too late)
    run_until(orders_final, "the four orders in a final block")
    clock.advance(I1 - PARAMS["gate_s"] + 1 - clock.now())  # gate closure of I1: the clearing block
    run_until(lambda: any(b'"kind":"trade"' in p for _, p in household.all()), "m1's trade receipt")

    validators = {kid: v["key"] for kid, v in c.genesis.doc["validators"].items()}
    quorum = c.genesis.doc["chain"]["quorum"]
    kinds = []
    for topic, payload in household.all():
        message = loads_strict(payload)
        if topic == topics.receipts(c.community, k.m1):
            if message.get("type") in ("notice", "included"):
                continue
            result = verify_receipt(message, community=c.community, validators=validators, quorum=quorum)
            assert k.m1 in (result.get("seller"), result.get("buyer"), result.get("meter"))
            kinds.append(result["kind"])
        else:
            assert topic == topics.headers(c.community), topic  # nothing else reaches a household
            header = message["header"]
            signers = set()
            for seal_obj in message["seals"]:
                seal = parse_envelope(
                    dumps_checked(seal_obj), community=c.community, now=None, interval_s=None
                )
                check_seal_for(
                    nodes[0].ledger.validators(), c.community, header["height"], header_hash(header), seal
                )
                signers.add(seal.signer)
            assert len(signers) >= quorum
    assert "trade" in kinds
    for node in nodes:
        node.ledger.close()


def tls_answer(port: int, ca: Path, cert: Path, key: Path) -> str:
    """Open TLS with a client certificate and send an MQTT 3.1.1 CONNECT: "CONNACK" if the broker
    answers one, else the TLS error (with TLS 1.3 the server checks the client certificate after
    the client's side of the handshake, so the refusal arrives on the first read)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    body = (4).to_bytes(2, "big") + b"MQTT" + bytes([4, 0b10]) + (30).to_bytes(2, "big")
    body += (1).to_bytes(2, "big") + b"x"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(bytes([0x10, len(body)]) + body)
                answer = sock.recv(4)
    except (ssl.SSLError, OSError) as exc:
        return str(exc)
    return "CONNACK" if answer[:1] == b"\x20" else f"answer {answer!r}"


def test_a_revoked_meter_loses_its_account(make_broker, tmp_path: Path) -> None:
    """The ledger revokes household m1 by vote. `broker certs --data` and `broker config --data`
    (the sequencer's store) revoke its certificate in the CRL and drop its ACL block; after a reload
    (SIGHUP) the broker refuses its certificate, and its open connection may neither publish nor
    receive; m2 is unaffected. After a restart m1 is still refused."""
    t = 1_764_000_000
    c = make_community(validators=2, members=2, time=t - 3600)
    k = make_broker("cert", c)
    ca, clients = k.certs / "community-ca.crt", k.certs / "clients"
    # the household keeps its certificate files whatever the community does
    kept = tmp_path / "m1"
    kept.mkdir()
    for suffix in (".crt", ".key"):
        shutil.copy2(clients / f"{k.m1}{suffix}", kept / f"m1{suffix}")
    assert tls_answer(k.port, ca, kept / "m1.crt", kept / "m1.key") == "CONNACK"

    inbox = Inbox()
    changes: list[bool] = []
    live = k.bus("m1", on_connection_change=changes.append)
    live.subscribe("#", inbox)
    seq = k.bus("seq")
    for bus in (live, seq):
        bus.start()
        assert bus.wait_connected(WAIT_S), bus.last_error
    assert live.wait_subscribed(WAIT_S), live.last_error
    seq.publish(topics.receipts(k.community, k.m1), b"before")
    wait_for(lambda: inbox.on(topics.receipts(k.community, k.m1)) == [b"before"], WAIT_S, "m1's receipt")

    c.open_ledgers(k.root / "nodes", KeyValueApp)
    revoke_by_vote(c, "revoke_meter", {"meter": k.m1}, t)
    for ledger in c.ledgers:
        ledger.close()
    k.generate(("--data", str(k.root / "nodes" / "validator-0")))
    assert f"revoked the certificate(s) of {k.m1}" in k.certs_stdout
    assert f"left out 1 meter(s): {k.m1} (revoked at height 1)" in k.stdout
    assert f"user {k.m1}" not in (k.out / "peerwatt.acl").read_text()
    k.broker.reload()

    def refused_m1() -> None:
        before = k.broker.log().count("certificate verify failed")
        answer = tls_answer(k.port, ca, kept / "m1.crt", kept / "m1.key")
        assert answer != "CONNACK", answer  # Mosquitto closes the socket without an alert
        wait_for(lambda: k.broker.log().count("certificate verify failed") > before, WAIT_S, "the log line")
        assert tls_answer(k.port, ca, clients / f"{k.m2}.crt", clients / f"{k.m2}.key") == "CONNACK"

    refused_m1()
    # the connection m1 opened before the reload: no right is left to it
    refusals = Refusals()
    logging.getLogger("peerwatt.bus").addHandler(refusals)
    try:
        live.publish(topics.orders(k.community, k.m1), b"order after revocation")
        wait_for(lambda: refusals.topics, WAIT_S, "the refusal of m1's order")
    finally:
        logging.getLogger("peerwatt.bus").removeHandler(refusals)
    assert refusals.topics == [topics.orders(k.community, k.m1)]
    seq.publish(topics.receipts(k.community, k.m1), b"after")
    time.sleep(1.0)
    assert inbox.on(topics.receipts(k.community, k.m1)) == [b"before"]

    live.stop(flush_timeout_s=0)
    k.broker.stop()
    k.broker.start()
    refused_m1()
    log = k.broker.log()
    assert not [line for line in log.splitlines() if "Warning" in line], log


def test_a_block_message_of_megabytes_passes_the_generated_broker(make_broker) -> None:
    """Found in a QA pass: the generated mosquitto.conf capped packets at 128 KiB, so a proposal
    of a few hundred orders made Mosquitto drop the proposer every time it sent it, and the
    ledger stopped for good. A block message may be up to 8 MiB (docs/protocol.md)."""
    from chain.messages import MAX_BLOCK_BYTES

    k = make_broker("cert")
    got: list[int] = []
    validator, proposer = k.bus("val"), k.bus("seq")
    validator.subscribe(topics.blocks(k.community), lambda _t, p: got.append(len(p)))
    for bus in (validator, proposer):
        bus.start()
        assert bus.wait_connected(WAIT_S), bus.last_error
    assert validator.wait_subscribed(WAIT_S), validator.last_error
    size = MAX_BLOCK_BYTES - 1024
    proposer.publish(topics.blocks(k.community), b"x" * size)
    wait_for(lambda: got, WAIT_S, "the 8 MiB block message at the validator")
    assert got == [size] and proposer.connected
    assert "oversize" not in k.broker.log(), k.broker.log()
