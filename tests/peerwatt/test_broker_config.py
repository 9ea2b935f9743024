"""`peerwatt broker config`: accounts from the genesis, the ACL and mosquitto.conf it writes, and
its one-line errors (the real-broker tests are in tests/reliability/test_broker_access.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerwatt.broker.access import Account, AccountError, community_accounts, rights
from tests.support.community_broker import genesis_toml, peerwatt
from tests.support.localnet import make_community


@pytest.fixture
def community(tmp_path: Path):
    c = make_community(validators=3, members=2)
    (tmp_path / "genesis.toml").write_text(genesis_toml(c.genesis.doc))
    return c


def run(tmp_path: Path, *args: str):
    result = peerwatt(
        "broker", "config", "--genesis", str(tmp_path / "genesis.toml"), "--out", str(tmp_path / "b"), *args
    )
    result.output = result.stdout + result.stderr
    result.exit_code = result.returncode
    return result


def test_default_accounts_are_one_per_genesis_validator_and_meter(community) -> None:
    doc = community.genesis.doc
    accounts = community_accounts(doc)
    sequencer = doc["chain"]["sequencer"]
    assert [(a.name, a.role, a.key_id) for a in accounts if a.role != "meter"] == [
        (f"node-{kid}", "sequencer" if kid == sequencer else "validator", kid) for kid in doc["validators"]
    ]
    assert [a.name for a in accounts if a.role == "meter"] == list(doc["meters"])


def test_cert_mode_config_binds_client_ids_and_has_no_patterns(tmp_path: Path, community) -> None:
    result = run(tmp_path, "--persistence", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ):
        assert line in conf.splitlines()
    assert "password_file" not in conf and "listener 1883" not in conf
    acl = (tmp_path / "b" / "peerwatt.acl").read_text()
    assert not [line for line in acl.splitlines() if line.startswith("pattern")]
    assert not (tmp_path / "b" / "peerwatt.passwd").exists()
    assert "start as root: /usr/bin/install -d -m 0750 -o mosquitto -g mosquitto" in result.output


def test_password_mode_binds_client_ids_on_every_listener(tmp_path: Path, community) -> None:
    from tests.conftest import require_tool

    require_tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    result = run(tmp_path, "--auth", "password", "--persistence", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "b" / "mosquitto.conf").read_text().splitlines()
    listeners = [i for i, line in enumerate(conf) if line.startswith("listener ")]
    assert len(listeners) == 2
    for start, end in zip(listeners, [*listeners[1:], len(conf)], strict=True):
        assert "use_username_as_clientid true" in conf[start:end]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no-tls"], "--auth cert needs TLS"),
        (["--local-port", "1883"], "use --auth password"),
        (["--node", "seq"], "NAME=sequencer"),
        (["--node", "v=validator"], "needs its key id"),
        (["--node", "o=observer:abc"], "has no key id"),
        (["--node", "a=sequencer", "--node", "b=sequencer"], "more than one sequencer"),
        (["--node", "x=observer", "--node", "x=operator"], "used twice"),
        (["--node", "bad name=observer"], "must be 1-128 letters"),
        (["--meter", "notahex"], "--meter notahex: not a meter id (the meter key's id: 32 hex digits"),
        (["--meter", "AB" * 16], "not a meter id"),
        (["--certs", "/nonexist"], "--certs /nonexist: no community-ca.crt there"),
        (["--auth", "password", "--no-tls", "--certs", "/nonexist"], "--certs names TLS files"),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path: Path, community, args: list[str], expected: str) -> None:
    result = run(tmp_path, *args)
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()  # nothing written


def test_certs_must_hold_the_broker_files_unless_they_live_on_another_machine(
    tmp_path: Path, community
) -> None:
    """--certs names the folder Mosquitto reads its TLS files from: with the files living here (no
    --etc) it must hold the CA, the broker's certificate and key; with --etc it is the broker
    machine's folder and is taken as given."""
    certs = tmp_path / "certs"
    made = peerwatt("broker", "certs", "--out", str(certs), "--genesis", str(tmp_path / "genesis.toml"))
    assert made.returncode == 0, made.stderr
    result = run(tmp_path, "--certs", str(certs))
    assert result.exit_code == 2 and f"--certs {certs}: no broker.crt there" in result.output
    assert "--host" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    remote = run(tmp_path, "--certs", "/srv/broker/certs", "--etc", "/etc/mosquitto/peerwatt")
    assert remote.exit_code == 0, remote.output
    assert "certfile /srv/broker/certs/broker.crt" in (tmp_path / "b" / "mosquitto.conf").read_text()
    host = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1")
    assert host.returncode == 0, host.stderr
    result = run(tmp_path, "--certs", str(certs))
    assert result.exit_code == 0, result.output
    assert f"certfile {certs}/broker.crt" in (tmp_path / "b" / "mosquitto.conf").read_text()


def test_a_broken_certs_folder_is_one_line_and_writes_nothing(tmp_path: Path, community) -> None:
    """Found in a QA pass: a garbage CA certificate, an RSA or truncated broker key, or another
    community's certs folder gave exit 0 and a config Mosquitto would fail to start from."""
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    good = tmp_path / "certs"
    made = peerwatt("broker", "certs", "--out", str(good), "--genesis", str(tmp_path / "genesis.toml"),
                    "--host", "127.0.0.1")  # fmt: skip
    assert made.returncode == 0, made.stderr
    other = make_community(community="elm", validators=3, members=2)
    (tmp_path / "elm.toml").write_text(genesis_toml(other.genesis.doc))
    elm = tmp_path / "elm-certs"
    made = peerwatt("broker", "certs", "--out", str(elm), "--genesis", str(tmp_path / "elm.toml"),
                    "--host", "127.0.0.1")  # fmt: skip
    assert made.returncode == 0, made.stderr
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_text = (good / "broker.key").read_bytes()
    cases = {
        "garbage CA": ("community-ca.crt", b"garbage", "cannot use community-ca.crt: not a PEM certificate"),
        "RSA key": ("broker.key", rsa_pem, "broker.key is not the key of broker.crt"),
        "truncated key": ("broker.key", key_text[:60], "cannot use broker.key: not a PEM private key"),
        "other CA": ("community-ca.crt", (elm / "community-ca.crt").read_bytes(), "is not community"),
    }
    for case, (name, content, expected) in cases.items():
        certs = tmp_path / case.replace(" ", "-")
        shutil.copytree(good, certs)
        (certs / name).write_bytes(content)
        result = run(tmp_path, "--certs", str(certs))
        assert result.exit_code == 2 and expected in result.output, (case, result.output)
        assert len(result.output.strip().splitlines()) == 1, (case, result.output)
        assert not (tmp_path / "b").exists(), case
    result = run(tmp_path, "--certs", str(elm))  # another community's folder, whole
    assert result.exit_code == 2 and "is not community 'oak-street''s CA" in result.output, result.output
    assert run(tmp_path, "--certs", str(good)).exit_code == 0


def test_broker_certs_refuse_a_meter_id_that_is_not_a_key_id(tmp_path: Path, community) -> None:
    out = tmp_path / "certs"
    args = ["broker", "certs", "--out", str(out), "--genesis", str(tmp_path / "genesis.toml")]
    result = peerwatt(*args, "--meter", "notahex")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --meter notahex: not a meter id"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_rights_never_give_a_meter_blocks_or_another_meters_topics() -> None:
    meter = Account("m1", "meter")
    for access, topic in rights("oak", meter):
        if topic == "peerwatt/oak/config/+":  # every validator's configuration history, read only
            assert access == "read"
            continue
        assert topic.endswith(("/m1", "/headers", "/book")), topic
        assert "+" not in topic and "#" not in topic
    with pytest.raises(AccountError):
        Account("v", "validator")  # a validator publishes seals under its key id: it needs one


def test_config_acl_lines_each_validator_writes_its_own_history_and_meters_read_them_all(
    tmp_path: Path, community
) -> None:
    """config/<validator> (docs/bus.md): a validator account may write only its own history, a
    meter account reads every validator's (config/+); observers, operators and dashboards, which
    read no headers, get no config right either."""
    c = community.community
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    blocks = {}
    for block in (tmp_path / "b" / "peerwatt.acl").read_text().split("\n\n")[1:]:
        lines = block.splitlines()
        user = next(x.removeprefix("user ") for x in lines if x.startswith("user "))
        blocks[user] = [x for x in lines if x.startswith("topic ") and "/config/" in x]
    for kid in community.genesis.doc["validators"]:
        assert blocks[f"node-{kid}"] == [f"topic write peerwatt/{c}/config/{kid}"]
    for meter in community.genesis.doc["meters"]:
        assert blocks[meter] == [f"topic read peerwatt/{c}/config/+"]
    for role in ("observer", "operator", "dashboard"):
        assert not [t for _, t in rights(c, Account("x", role)) if "/config/" in t]


def test_the_dashboard_account_reads_the_status_topics_and_writes_nothing(tmp_path: Path, community) -> None:
    """`--dashboard` adds the read-only ``dashboard`` account (docs/privacy.md): it may read every
    agent's retained status (``status/+``) and nothing else, and may write nothing."""
    assert rights("oak", Account("dashboard", "dashboard")) == [("read", "peerwatt/oak/status/+")]
    assert "dashboard" not in [a.name for a in community_accounts(community.genesis.doc)]
    accounts = community_accounts(community.genesis.doc, dashboard="dashboard")
    assert [(a.name, a.role, a.key_id) for a in accounts if a.role == "dashboard"] == [
        ("dashboard", "dashboard", None)
    ]
    result = run(tmp_path, "--persistence", str(tmp_path / "p"), "--dashboard")
    assert result.exit_code == 0, result.output
    acl = (tmp_path / "b" / "peerwatt.acl").read_text().split("\n\n")
    block = next(b for b in acl if "user dashboard" in b.splitlines())
    assert block.splitlines() == [
        "# dashboard",
        "user dashboard",
        f"topic read peerwatt/{community.community}/status/+",
    ]
    assert "dashboard" in result.output
    # a dashboard account under another name, with --node NAME=dashboard
    result = run(tmp_path, "--persistence", str(tmp_path / "p"), "--node", "dash-1=dashboard")
    assert result.exit_code == 0, result.output
    assert "user dash-1\n" in (tmp_path / "b" / "peerwatt.acl").read_text()
    with pytest.raises(AccountError, match="only a sequencer or validator has a key id"):
        Account("d", "dashboard", "abc")
    result = run(tmp_path, "--node", "d=dashboard:abc")
    assert result.exit_code != 0 and "has no key id" in result.output


def test_broker_certs_issue_the_dashboard_a_certificate(tmp_path: Path, community) -> None:
    result = peerwatt(
        "broker", "certs", "--out", str(tmp_path / "certs"), "--genesis", str(tmp_path / "genesis.toml"),
        "--dashboard",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "clients" / "dashboard.crt").exists()


def test_a_rerun_replaces_mosquitto_conf_only_while_unedited_or_with_force(tmp_path: Path, community) -> None:
    """An operator's edits to mosquitto.conf (or the systemd drop-in) survive a rerun of `broker
    config`: it refuses with one line and writes nothing; --force replaces them. A file as peerwatt
    wrote it is replaced, also with other options."""
    b = tmp_path / "b"
    first = run(tmp_path, "--persistence", str(tmp_path / "p"))
    assert first.exit_code == 0, first.output
    other = run(tmp_path, "--persistence", str(tmp_path / "p"), "--port", "8884")
    assert other.exit_code == 0, other.output
    assert "listener 8884" in (b / "mosquitto.conf").read_text().splitlines()

    new_meter = ["--meter", "ab" * 16, "--port", "8884", "--persistence", str(tmp_path / "p")]
    for edited in (b / "mosquitto.conf", b / "mosquitto.service.d" / "peerwatt.conf"):
        original = edited.read_text()
        edited.write_text(original + "# an operator's line\n")
        before = {p: p.read_bytes() for p in b.rglob("*") if p.is_file()}
        refused = run(tmp_path, *new_meter)
        assert refused.exit_code == 2, refused.output
        assert refused.output.startswith(f"error: {edited} was changed since `peerwatt broker config`")
        assert "--force" in refused.output and len(refused.output.strip().splitlines()) == 1
        assert {p: p.read_bytes() for p in b.rglob("*") if p.is_file()} == before  # the ACL too
        edited.write_text(original)

    (b / "mosquitto.conf").write_text((b / "mosquitto.conf").read_text() + "log_type all\n")
    forced = run(tmp_path, *new_meter, "--force")
    assert forced.exit_code == 0, forced.output
    assert "log_type all" not in (b / "mosquitto.conf").read_text()
    assert f"user {'ab' * 16}" in (b / "peerwatt.acl").read_text()

    # a file written before the stamp line existed, unchanged: replaced without --force
    lines = (b / "mosquitto.conf").read_text().splitlines(keepends=True)
    assert lines[1].startswith("# sha256 ")
    (b / "mosquitto.conf").write_text("".join(lines[:1] + lines[2:]))
    again = run(tmp_path, *new_meter)
    assert again.exit_code == 0, again.output
    assert (b / "mosquitto.conf").read_text() == "".join(lines)
