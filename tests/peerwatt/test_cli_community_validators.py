"""`peerwatt community add-validator` / `remove-validator`, and the warning of `gov propose
remove_validator` that leaves the validators without fault tolerance.

Found in a QA run of a 4-validator community on Mosquitto: no command gave a validator added by
vote (add_validator) its node.toml, operator.toml and broker accounts; the documented `broker certs`
+ `broker config` steps dropped every operator account, and community.toml never learnt of the new
validator, so the next `community add-meter` rebuilt the ACL without its accounts: 'Not authorized'
on its seals topic, and the chain stalled. A removed validator kept its accounts for good.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

from cryptography import x509

from chain.genesis import load_genesis
from chain.keys import load_private_key
from peerwatt.config import load_node_config
from tests.peerwatt.test_cli_community_broker import FLAGS, join_request, users
from tests.support.cli import peerwatt

C = "peerwatt/oak-street"


def init(tmp_path: Path, validators: int = 4) -> Path:
    out = tmp_path / "oak"
    flags = [f for f in FLAGS]
    flags[flags.index("--validators") + 1] = str(validators)
    r = peerwatt("community", "init", *flags, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    return out


def new_key(tmp_path: Path, name: str = "validator-5") -> tuple[Path, str]:
    """The new validator's key pair, made on its own machine as the docs say; (its .pub, key id)."""
    r = peerwatt("keys", "new", "--out", str(tmp_path / "machine" / name), "--name", "validator")
    assert r.returncode == 0, r.stderr
    kid = r.stdout.split("key id: ")[1].split()[0]
    return tmp_path / "machine" / name / "validator.pub", kid


def block(acl: str, account: str) -> list[str]:
    lines = acl.split(f"\nuser {account}\n", 1)[1].split("\n\n", 1)[0]
    return lines.splitlines()


def test_add_validator_gives_it_accounts_and_configs_and_later_commands_keep_them(tmp_path):
    out = init(tmp_path)
    first, m1 = join_request(tmp_path, "h1")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(first)).returncode == 0
    dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(tmp_path / "dash"))
    assert dash.returncode == 0, dash.stderr
    pub, kid = new_key(tmp_path)
    r = peerwatt(
        "community", "add-validator", "--dir", str(out), "--key", str(pub), "--name", "validator-5",
        "--host", "127.0.0.1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    second, m2 = join_request(tmp_path, "h2")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(second)).returncode == 0

    for folder in (out / "broker", out / "broker-etc"):
        acl = (folder / "peerwatt.acl").read_text()
        accounts = users(folder / "peerwatt.acl")
        assert f"node-{kid}" in accounts and f"operator-{kid}" in accounts, accounts
        assert sum(a.startswith("node-") for a in accounts) == 5
        assert sum(a.startswith("operator-") for a in accounts) == 5
        assert m1 in accounts and m2 in accounts and "dashboard" in accounts, accounts
        node_rights = block(acl, f"node-{kid}")
        assert f"topic write {C}/seals/{kid}" in node_rights
        assert f"topic write {C}/config/{kid}" in node_rights
        assert block(acl, f"operator-{kid}") == [f"topic write {C}/gov"]

    # its folder: a node.toml the node accepts once its own key is beside it, the operator account
    folder = out / "validator-5"
    assert not (folder / "validator.key").exists()  # made on its machine, never here
    (folder / "validator.key").write_bytes((pub.parent / "validator.key").read_bytes())
    (folder / "validator.key").chmod(0o600)
    cfg = load_node_config(folder / "node.toml")
    assert cfg.role == "validator" and cfg.client_id == f"node-{kid}" and cfg.http_port == 8105
    assert list(cfg.peers) == [f"http://127.0.0.1:{8101 + i}" for i in range(4)]
    cert = x509.load_pem_x509_certificate((folder / "node-client.crt").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN=node-{kid}"
    operator = tomllib.loads((folder / "operator.toml").read_text())
    assert operator["client_id"] == f"operator-{kid}" and (folder / "operator-client.key").exists()
    assert (folder / "genesis.toml").read_bytes() == (out / "genesis.toml").read_bytes()
    # the add_validator proposal and the peers lines to add to the others' node.toml
    sec1 = load_private_key(pub.parent / "validator.key").public_key()
    from chain.keys import public_key_sec1

    assert (
        f"--action add_validator --arg key={public_key_sec1(sec1).hex()} --arg name=validator-5" in r.stdout
    )
    assert "on the broker, started by hand: cp " in r.stdout and "restart-mosquitto" in r.stdout
    assert "on the broker, under systemd (peerwatt's drop-in): cp " in r.stdout
    assert "peerwatt node init --genesis genesis.toml --data node-data" in r.stdout
    assert r.stdout.count('"http://127.0.0.1:8105"]') == 4  # validators 1 to 4
    assert "http://127.0.0.1:8105" in (out / "validator-1" / "node.toml").read_text()
    assert load_node_config(out / "validator-2" / "node.toml").peers[-1] == "http://127.0.0.1:8105"
    layout = tomllib.loads((out / "community.toml").read_text())
    assert layout["validators"][-1] == {
        "name": "validator-5", "key_id": kid, "http": "127.0.0.1:8105", "folder": "validator-5",
    }  # fmt: skip

    # the same key again, or a name taken, or a private key: one line each, nothing changed
    again = peerwatt("community", "add-validator", "--dir", str(out), "--key", str(pub), "--name", "v6")
    assert again.returncode == 2 and "already a validator" in again.stderr
    private = pub.parent / "validator.key"
    r = peerwatt("community", "add-validator", "--dir", str(out), "--key", str(private), "--name", "v6")
    assert r.returncode == 2 and "is a private key" in r.stderr and "Traceback" not in r.stderr
    pub7, _ = new_key(tmp_path, "v7")
    r = peerwatt("community", "add-validator", "--dir", str(out), "--key", str(pub7), "--name", "validator-5")
    assert r.returncode == 2 and "validator-5" in r.stderr
    assert len(users(out / "broker" / "peerwatt.acl")) == 13


def test_add_validator_takes_the_key_in_hex_and_a_community_toml_without_validators(tmp_path):
    """A community.toml written before it recorded the validators: their folders' node.toml."""
    out = init(tmp_path)
    toml = out / "community.toml"
    toml.write_text(toml.read_text().split("validators = [")[0])
    r = peerwatt("keys", "show", str(new_key(tmp_path)[0]))
    sec1 = r.stdout.split("(SEC1, compressed): ")[1].split()[0]
    r = peerwatt(
        "community", "add-validator", "--dir", str(out), "--key", sec1, "--name", "validator-5",
        "--host", "10.0.0.15", "--http-port", "9000",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((out / "validator-5" / "node.toml").read_text())
    assert cfg["http"] == "10.0.0.15:9000" and len(cfg["peers"]) == 4
    assert [v["name"] for v in tomllib.loads(toml.read_text())["validators"]] == [
        f"validator-{i}" for i in range(1, 6)
    ]


def test_remove_validator_takes_its_accounts_out_and_revokes_their_certificates(tmp_path):
    from chain.engine import Ledger
    from market.app import MarketApp
    from tests.support.community_broker import revoke_by_vote
    from tests.support.localnet import LocalCommunity, Party

    out = init(tmp_path)
    pub, kid = new_key(tmp_path)
    add = ["community", "add-validator", "--dir", str(out), "--key", str(pub), "--name", "validator-5"]
    assert peerwatt(*add, "--host", "127.0.0.1").returncode == 0
    request, meter = join_request(tmp_path, "h1")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(request)).returncode == 0
    clients = out / "broker" / "certs" / "clients"
    serials = {
        name: x509.load_pem_x509_certificate((clients / f"{name}.crt").read_bytes()).serial_number
        for name in (f"node-{kid}", f"operator-{kid}")
    }

    r = peerwatt("community", "remove-validator", "--dir", str(out), kid)
    assert r.returncode == 0, r.stderr
    assert f"revoked the certificate(s) of node-{kid}, operator-{kid}" in r.stdout
    assert "not checked against a ledger" in r.stdout
    assert f"cp {out}/broker-etc/certs/community-ca.crl /etc/mosquitto/peerwatt/certs/" in r.stdout
    assert "&& systemctl restart mosquitto" in r.stdout and "restart-mosquitto" in r.stdout
    for folder in (out / "broker", out / "broker-etc"):
        accounts = users(folder / "peerwatt.acl")
        assert f"node-{kid}" not in accounts and f"operator-{kid}" not in accounts
        assert len(accounts) == 9 and meter in accounts  # 4 nodes, 4 operators, the meter
        crl = x509.load_pem_x509_crl((folder / "certs" / "community-ca.crl").read_bytes())
        for serial in serials.values():
            assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert not (clients / f"node-{kid}.crt").exists() and not (clients / f"node-{kid}.key").exists()
    assert "8105" not in (out / "validator-1" / "node.toml").read_text()
    # a later add-meter does not bring them back; the same key is refused; a rerun has nothing to do
    second, _ = join_request(tmp_path, "h2")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(second)).returncode == 0
    assert f"node-{kid}" not in users(out / "broker" / "peerwatt.acl")
    again = peerwatt(*add, "--host", "127.0.0.1")
    assert again.returncode == 2 and "was removed" in again.stderr
    rerun = peerwatt("community", "remove-validator", "--dir", str(out), kid)
    assert rerun.returncode == 0 and "nothing to do" in rerun.stdout

    # --data: refused while the ledger still counts the validator, done once the vote passed
    genesis = load_genesis(out / "genesis.toml")
    validators = [Party(load_private_key(out / f"validator-{i}" / "validator.key")) for i in range(1, 5)]
    c = LocalCommunity(genesis, validators, validators, [])
    c.ledgers = [Ledger.create(tmp_path / f"node-{i}", genesis, MarketApp()) for i in range(4)]
    leaving = validators[3]
    r = peerwatt(
        "community", "remove-validator", "--dir", str(out), "validator-4", "--data", str(tmp_path / "node-0")
    )
    assert r.returncode == 2 and "still a validator" in r.stderr and "remove_validator" in r.stderr
    assert f"node-{leaving.id}" in users(out / "broker" / "peerwatt.acl")
    revoke_by_vote(c, "remove_validator", {"validator": leaving.id}, genesis.time + 60)
    for ledger in c.ledgers:
        ledger.close()
    r = peerwatt(
        "community", "remove-validator", "--dir", str(out), "validator-4", "--data", str(tmp_path / "node-0")
    )
    assert r.returncode == 0, r.stderr
    assert "no longer counts validator-4" in r.stdout
    assert "WARNING" in r.stderr and "3 validator(s)" in r.stderr  # 4 -> 3: no fault tolerance
    accounts = users(out / "broker" / "peerwatt.acl")
    assert f"node-{leaving.id}" not in accounts and f"operator-{leaving.id}" not in accounts
    assert len(accounts) == 8  # 3 nodes, 3 operators, 2 meters


def _dead_operator(folder: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    operator = folder / "operator.toml"
    operator.write_text(operator.read_text().replace("127.0.0.1:8883", f"127.0.0.1:{port}"))


def test_proposing_a_removal_that_leaves_no_fault_tolerance_warns(tmp_path):
    """Found in the same QA run: `gov propose remove_validator` of 4 -> 3 validators (quorum 3 of
    3: one down halts the chain) said nothing, while `community init` warns for 3."""
    for n, warned in ((4, True), (5, False)):
        out = init(tmp_path / str(n), n)
        folder = out / "validator-1"
        r = peerwatt(
            "node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "node-data")
        )
        assert r.returncode == 0, r.stderr
        _dead_operator(folder)
        last = load_node_config(out / f"validator-{n}" / "node.toml").client_id.removeprefix("node-")
        r = peerwatt(
            "gov", "propose", "-c", str(folder / "node.toml"), "--action", "remove_validator",
            "--arg", f"validator={last}", "--wait", "1",
        )  # fmt: skip
        assert "cannot reach the MQTT broker" in r.stderr  # no broker here: the check passed
        warnings = [x for x in r.stderr.splitlines() if x.startswith("WARNING: ")]
        warning = [x for x in warnings if "fault tolerance" in x]
        # the founders are members too (community init): the removed one stays a member (a QA run:
        # two founders removed, then no household could be admitted any more)
        member = [x for x in warnings if "is also a member and stays one" in x]
        assert len(member) == 1 and f"({last})" in member[0] and "remove_member" in member[0], r.stderr
        if warned:
            assert len(warning) == 1 and f"validator-{n} ({last}) leaves 3 validator(s)" in warning[0], (
                r.stderr
            )
            assert "no fault tolerance" in warning[0]
        else:
            assert warning == [], r.stderr
