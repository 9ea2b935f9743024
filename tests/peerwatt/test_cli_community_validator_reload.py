"""A validator added by `peerwatt community add-validator` publishes its seals, its configuration
history and (with its operator account) governance messages on the community's real Mosquitto after
the reload the command prints, still after a later `add-meter`, and no more after
`remove-validator` and its reload.

Found in a QA run of a 4-validator community on Mosquitto: the validator added by vote had no
accounts the community commands knew of, and the next `add-meter` rebuilt the ACL without them:
'Not authorized' on its seals topic, and the chain stalled.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.peerwatt.test_cli_community_broker import join_request
from tests.peerwatt.test_cli_community_reload import WAIT_S, Client, quickstart_broker, reload
from tests.support.cli import peerwatt
from tests.support.community_broker import GeneratedBroker, running_as_root

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs Debian's mosquitto"),
    pytest.mark.skipif(not running_as_root(), reason="starts Mosquitto as root, as the quickstart does"),
]


def test_an_added_validator_publishes_after_the_printed_reload_and_a_removed_one_no_more():
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
        node = Client(port, ca, certs / "clients", sequencer, sequencer)
        clients.append(node)
        node.subscribe(f"{c}/seals/+")
        node.subscribe(f"{c}/gov")
        request, meter = join_request(root, "h1")
        added = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(root / "h1"))
        assert added.returncode == 0, added.stderr
        reload(broker, added.stdout)
        household = Client(port, ca, root / "h1", "broker-client", meter)
        clients.append(household)
        household.subscribe(f"{c}/config/+")

        keys = peerwatt("keys", "new", "--out", str(root / "machine"), "--name", "validator")
        assert keys.returncode == 0, keys.stderr
        kid = keys.stdout.split("key id: ")[1].split()[0]
        joined = peerwatt(
            "community", "add-validator", "--dir", str(out), "--key", str(root / "machine" / "validator.pub"),
            "--name", "validator-5", "--host", "127.0.0.1",
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        folder = out / "validator-5"
        new_node = Client(port, ca, folder, "node-client", f"node-{kid}")
        operator = Client(port, ca, folder, "operator-client", f"operator-{kid}")
        clients += [new_node, operator]
        new_node.publish(f"{c}/seals/{kid}", b"before the reload")
        assert node.got(1.5) == []  # the running broker has no ACL block for it yet
        reload(broker, joined.stdout)
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
        reload(broker, later.stdout)
        new_node.publish(f"{c}/seals/{kid}", b"still")
        assert node.got(WAIT_S) == [(f"{c}/seals/{kid}", b"still")]

        gone = peerwatt("community", "remove-validator", "--dir", str(out), "validator-5")
        assert gone.returncode == 0, gone.stderr
        reload(broker, gone.stdout)
        new_node.publish(f"{c}/seals/{kid}", b"after its removal")
        operator.publish(f"{c}/gov", b"after its removal")
        assert node.got(1.5) == []  # its connection stays, but every publication is refused

        for client in clients:
            client.close()
        clients.clear()
        time.sleep(0.5)
        assert broker.process is not None and broker.process.poll() is None, broker.log()[-2000:]
        broker.process.send_signal(signal.SIGTERM)
        assert broker.process.wait(WAIT_S) == 0, broker.log()[-2000:]
        assert "Warning" not in broker.log(), broker.log()
    finally:
        for client in clients:
            client.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
