"""`peerwatt community update-broker --dir DIR`: after an update, the broker's ACL written again
with this version's rights. Found in a QA pass updating a community in place: the ACL an older
version wrote gave nodes no right to publish on config/<key id> and meters none to read config/+,
so the updated nodes' configuration history was refused ("Not authorized") and the updated agents
never followed a vote; nothing wrote the ACL again short of changing an account."""

from __future__ import annotations

from pathlib import Path

from tests.peerwatt.test_community_reissue_broker import crl_serials, init, snapshot
from tests.support.cli import peerwatt


def _without_config_rights(acl: Path) -> str:
    """The ACL as a version before the configuration history wrote it: no config/ lines."""
    text = acl.read_text()
    older = "".join(line for line in text.splitlines(keepends=True) if "/config/" not in line)
    assert older != text  # this version does give config/ rights
    acl.write_text(older)
    return text


def test_update_broker_writes_the_acl_again_with_this_versions_rights(tmp_path: Path) -> None:
    out = init(tmp_path)
    acls = [out / "broker" / "peerwatt.acl", out / "broker-etc" / "peerwatt.acl"]
    current = [_without_config_rights(acl) for acl in acls]
    certs = snapshot(out / "broker" / "certs")
    revoked = crl_serials(out / "broker" / "certs" / "community-ca.crl")
    done = peerwatt("community", "update-broker", "--dir", str(out))
    assert done.returncode == 0, done.stderr
    assert [acl.read_text() for acl in acls] == current
    assert f"wrote {out}/broker-etc/peerwatt.acl" in done.stdout
    assert "restart" in done.stdout.lower(), done.stdout  # the broker reads its ACL when it starts
    # no certificate changes (the CRL is signed again, with the same certificates on it)
    after = snapshot(out / "broker" / "certs")
    assert {k: v for k, v in after.items() if k != "community-ca.crl"} == {
        k: v for k, v in certs.items() if k != "community-ca.crl"
    }
    assert crl_serials(out / "broker" / "certs" / "community-ca.crl") == revoked


def test_update_broker_without_a_community_folder_is_one_line(tmp_path: Path) -> None:
    done = peerwatt("community", "update-broker", "--dir", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_edited_mosquitto_conf_is_named_with_the_way_out_this_command_has(tmp_path: Path) -> None:
    """Found in a QA pass: the refusal named `peerwatt broker config ... --force`, which is not how
    a `community init` folder is kept; moving the edited file away and running again is."""
    out = init(tmp_path)
    conf = out / "broker-etc" / "mosquitto.conf"
    conf.write_text(conf.read_text() + "log_type all\n")
    certs = snapshot(out / "broker" / "certs")
    done = peerwatt("community", "update-broker", "--dir", str(out))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{conf} was changed since `peerwatt community` wrote it: move it away" in done.stderr
    assert "--force" not in done.stderr and "broker config" not in done.stderr
    assert snapshot(out / "broker" / "certs") == certs
    conf.rename(tmp_path / "mosquitto.conf.edited")
    assert peerwatt("community", "update-broker", "--dir", str(out)).returncode == 0
    assert conf.exists()
