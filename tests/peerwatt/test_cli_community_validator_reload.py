"""A validator added by `peerwatt community add-validator` publishes its seals, its configuration
history and (with its operator account) governance messages on the community's real Mosquitto after
the restart the command prints for a broker started by hand (run as printed), still after a later
`add-meter`'s, and no more after `remove-validator`'s (its certificates are refused). Each restart
happens with clients connected and leaves a new process running the same config; the broker
started by hand exits 0 on it (no crash).

Found in a QA run on Debian's Mosquitto 2.0.11: the reload (SIGHUP) these commands printed after
`remove-validator` killed the broker (``free(): invalid pointer``) as the removed accounts'
clients were disconnected; every node and agent lost it until it was started again by hand.

Found in a QA run of a 4-validator community on Mosquitto: the validator added by vote had no
accounts the community commands knew of, and the next `add-meter` rebuilt the ACL without them:
'Not authorized' on its seals topic, and the chain stalled.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import pytest

from tests.peerwatt.test_cli_community_broker import join_request
from tests.peerwatt.test_cli_community_reload import WAIT_S, Client, close, quickstart_broker, restart
from tests.support.cli import peerwatt
from tests.support.community_broker import GeneratedBroker, running_as_root

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs Debian's mosquitto"),
    pytest.mark.skipif(not running_as_root(), reason="starts Mosquitto as root, as the quickstart does"),
]


def mqtt_connect_accepted(port: int, ca: Path, folder: Path, stem: str, name: str) -> bool:
    """Whether the broker accepts an MQTT 3.1.1 CONNECT over TLS with this client certificate (a
    plain socket: a refused certificate leaves no client behind); False when it closes the
    connection (a certificate on the CRL: during or right after the handshake)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(str(folder / f"{stem}.crt"), str(folder / f"{stem}.key"))
    client_id = name.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(bytes([0x10, len(body)]) + body)
            return tls.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    except OSError:  # ssl.SSLError, a reset: closed by the broker
        return False


def test_an_added_validator_publishes_after_the_printed_restart_and_a_removed_one_no_more():
    root = Path(tempfile.mkdtemp(prefix="peerwatt-validator-reload-"))
    root.chmod(0o755)  # Mosquitto, dropped to its own user, reads its files below this folder
    clients: list[Client] = []
    broker: GeneratedBroker | None = None
    try:
        port, out, broker = quickstart_broker(root)

        c = "peerwatt/oak-street"
        certs = out / "broker" / "certs"
        ca = certs / "community-ca.crt"
        sequencer = next(p.stem for p in (certs / "clients").glob("node-*.crt"))
        request, meter = join_request(root, "h1")
        added = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(root / "h1"))
        assert added.returncode == 0, added.stderr
        restart(broker, added.stdout)

        def connect(validator: bool) -> tuple[Client, Client, Client | None, Client | None]:
            """The sequencer's node (seals, gov), the household (config) and the new validator's
            node and operator accounts."""
            node = Client(port, ca, certs / "clients", sequencer, sequencer)
            clients.append(node)
            node.subscribe(f"{c}/seals/+")
            node.subscribe(f"{c}/gov")
            household = Client(port, ca, root / "h1", "broker-client", meter)
            clients.append(household)
            household.subscribe(f"{c}/config/+")
            if not validator:
                return node, household, None, None
            folder = out / "validator-5"
            new_node = Client(port, ca, folder, "node-client", f"node-{kid}")
            operator = Client(port, ca, folder, "operator-client", f"operator-{kid}")
            clients.extend([new_node, operator])
            return node, household, new_node, operator

        keys = peerwatt("keys", "new", "--out", str(root / "machine"), "--name", "validator")
        assert keys.returncode == 0, keys.stderr
        kid = keys.stdout.split("key id: ")[1].split()[0]
        joined = peerwatt(
            "community", "add-validator", "--dir", str(out), "--key", str(root / "machine" / "validator.pub"),
            "--name", "validator-5", "--host", "127.0.0.1",
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        node, household, new_node, operator = connect(validator=True)
        assert new_node is not None and operator is not None
        new_node.publish(f"{c}/seals/{kid}", b"before the restart")
        assert node.got(1.5) == []  # the running broker has no ACL block for it yet
        restart(broker, joined.stdout)
        close(clients)
        node, household, new_node, operator = connect(validator=True)
        assert new_node is not None and operator is not None
        new_node.publish(f"{c}/seals/{kid}", b"seal")
        assert node.got(WAIT_S) == [(f"{c}/seals/{kid}", b"seal")]
        new_node.publish(f"{c}/config/{kid}", b"history", retain=True)
        assert household.got(WAIT_S) == [(f"{c}/config/{kid}", b"history")]
        operator.publish(f"{c}/gov", b"a vote")
        assert node.got(WAIT_S) == [(f"{c}/gov", b"a vote")]

        # the next household's add-meter keeps the validator's accounts (the QA run's stall)
        second, _ = join_request(root, "h2")
        later = peerwatt("community", "add-meter", "--dir", str(out), str(second), "--out", str(root / "h2"))
        assert later.returncode == 0, later.stderr
        restart(broker, later.stdout)
        close(clients)
        node, household, new_node, operator = connect(validator=True)
        assert new_node is not None and operator is not None
        new_node.publish(f"{c}/seals/{kid}", b"still")
        assert node.got(WAIT_S) == [(f"{c}/seals/{kid}", b"still")]
        # its configuration history, retained, survived the restarts (persistence)
        assert household.got(WAIT_S) == [(f"{c}/config/{kid}", b"history")]

        gone = peerwatt("community", "remove-validator", "--dir", str(out), "validator-5")
        assert gone.returncode == 0, gone.stderr
        # the QA run's crash: the restart with the removed accounts' clients connected
        restart(broker, gone.stdout)
        close(clients)
        folder = out / "validator-5"
        assert not mqtt_connect_accepted(port, ca, folder, "node-client", f"node-{kid}")  # on the CRL
        assert not mqtt_connect_accepted(port, ca, folder, "operator-client", f"operator-{kid}")
        assert mqtt_connect_accepted(port, ca, root / "h1", "broker-client", meter)
        node, household, _, _ = connect(validator=False)
        assert household.got(WAIT_S) == [(f"{c}/config/{kid}", b"history")]  # others served as before
        close(clients)
        assert "Warning" not in broker.log(), broker.log()  # the first broker's: start to clean stop
    finally:
        close(clients)
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
