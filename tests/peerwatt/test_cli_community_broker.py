"""The broker folder `peerwatt community init` makes, kept by the community commands alone.

Found in a QA pass following docs/quickstart.md and docs/dashboard.md: `peerwatt broker config
--dashboard` on the community's broker folder dropped the operator accounts and every meter added
by `community add-meter`, and rewrote mosquitto.conf with port 8883, Debian's persistence folder
and paths under the community folder; a later `add-meter` dropped the dashboard again. The lines
`add-meter` and `revoke` printed said `systemctl restart mosquitto`, which restarts Debian's own
broker, not the one the quickstart starts by hand; the quickstart used Debian's persistence folder
and copied the CA key and every account's key to the broker.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from chain.keys import generate_private_key, key_id
from peerwatt.onboarding import make_join_request
from tests.support.cli import peerwatt

FLAGS = [
    "--community", "oak-street", "--validators", "4", "--interval", "300", "--feed-in-price", "0.08",
    "--retail-price", "0.30", "--timezone", "Europe/Vienna", "--broker-host", "127.0.0.1",
]  # fmt: skip


def join_request(folder: Path, name: str) -> tuple[Path, str]:
    member, meter = generate_private_key(), generate_private_key()
    path = folder / f"{name}.txt"
    path.write_text(
        make_join_request(member, meter, community="oak-street", name=name, serial=f"SN-{name}",
                          profile="sdm630", capacity_w=10_000).text()
    )  # fmt: skip
    return path, key_id(meter.public_key())


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mode,
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def users(acl: Path) -> list[str]:
    return [line.removeprefix("user ") for line in acl.read_text().splitlines() if line.startswith("user ")]


def init(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "oak"
    r = peerwatt("community", "init", *FLAGS, *extra, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    return out


def test_a_dashboard_account_is_kept_with_the_operators_and_every_meter(tmp_path):
    etc, persistence = tmp_path / "etc-peerwatt", tmp_path / "var" / "oak-street"
    out = init(
        tmp_path, "--broker-port", "18883", "--broker-etc", str(etc), "--broker-persistence", str(persistence)
    )
    first, m1 = join_request(tmp_path, "h1")
    second, m2 = join_request(tmp_path, "h2")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(first)).returncode == 0
    dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(tmp_path / "dash"))
    assert dash.returncode == 0, dash.stderr
    assert peerwatt("community", "add-meter", "--dir", str(out), str(second)).returncode == 0
    for folder in (out / "broker", out / "broker-etc"):
        accounts = users(folder / "peerwatt.acl")
        assert sum(a.startswith("operator-") for a in accounts) == 4
        assert sum(a.startswith("node-") for a in accounts) == 4
        assert m1 in accounts and m2 in accounts and "dashboard" in accounts, accounts
        conf = (folder / "mosquitto.conf").read_text()
        assert "listener 18883\n" in conf and "listener 8883" not in conf
        assert f"persistence_location {persistence}/\n" in conf
        assert f"acl_file {etc}/peerwatt.acl\n" in conf
        assert (
            f"certfile {etc}/certs/broker.crt\n" in conf and f"crlfile {etc}/certs/community-ca.crl\n" in conf
        )
    # the dashboard's folder: its certificate (CN dashboard), key and the CA; the lines to use them
    cert = x509.load_pem_x509_certificate((tmp_path / "dash" / "broker-client.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dashboard"
    assert (tmp_path / "dash" / "broker-client.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "dash" / "community-ca.crt").exists()
    assert 'broker_client_id = "dashboard"' in dash.stdout
    assert 'cert_file = "dash/broker-client.crt"' in dash.stdout
    # a second run keeps the account and its certificate, and says so
    again = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(tmp_path / "dash2"))
    assert again.returncode == 0 and "already has" in again.stdout, again.stdout
    assert (tmp_path / "dash2" / "broker-client.crt").read_bytes() == (
        tmp_path / "dash" / "broker-client.crt"
    ).read_bytes()
    assert users(out / "broker-etc" / "peerwatt.acl").count("dashboard") == 1


def test_broker_config_refuses_a_community_broker_folder_and_changes_nothing(tmp_path):
    out = init(tmp_path, "--broker-etc", str(tmp_path / "etc-peerwatt"))
    request, _ = join_request(tmp_path, "h1")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(request)).returncode == 0
    on_broker = tmp_path / "etc-peerwatt"  # the folder as copied to the broker machine
    assert peerwatt("community", "add-dashboard", "--dir", str(out)).returncode == 0
    import shutil

    shutil.copytree(out / "broker-etc", on_broker)
    before = snapshot(tmp_path)
    for folder in (out / "broker", out / "broker-etc", on_broker):
        r = peerwatt(
            "broker", "config", "--genesis", str(out / "genesis.toml"), "--out", str(folder), "--dashboard"
        )
        assert r.returncode != 0
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "peerwatt community add-dashboard" in r.stderr and "add-meter" in r.stderr, r.stderr
        assert snapshot(tmp_path) == before


def test_broker_etc_holds_only_what_the_broker_needs(tmp_path):
    out = init(tmp_path)
    request, meter = join_request(tmp_path, "h1")
    assert peerwatt("community", "add-meter", "--dir", str(out), str(request)).returncode == 0
    files = {str(p.relative_to(out / "broker-etc")) for p in (out / "broker-etc").rglob("*") if p.is_file()}
    assert files == {
        "mosquitto.conf",
        "peerwatt.acl",
        "mosquitto.service.d/peerwatt.conf",
        "certs/community-ca.crt",
        "certs/community-ca.crl",
        "certs/broker.crt",
        "certs/broker.key",
    }
    for name in ("peerwatt.acl", "certs/community-ca.crl", "certs/broker.key"):
        assert (out / "broker-etc" / name).read_bytes() == (out / "broker" / name).read_bytes()
    assert meter in users(out / "broker-etc" / "peerwatt.acl")
    summary = (out / "SUMMARY.txt").read_text()
    assert f"{out}/broker-etc/" in summary and "community-ca.key" in summary


def test_persistence_is_the_communitys_own_folder(tmp_path):
    out = init(tmp_path)
    conf = (out / "broker-etc" / "mosquitto.conf").read_text()
    assert "persistence_location /var/lib/mosquitto/oak-street/\n" in conf
    dropin = (out / "broker-etc" / "mosquitto.service.d" / "peerwatt.conf").read_text()
    assert "/var/lib/mosquitto/oak-street" in dropin
    debian = ["--broker-persistence", "/var/lib/mosquitto/"]
    r = peerwatt("community", "init", *FLAGS, *debian, "--out", str(tmp_path / "x"), stdin="")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Debian's own" in r.stderr and "/var/lib/mosquitto/oak-street" in r.stderr
    assert not (tmp_path / "x").exists()


def test_printed_restart_lines_name_the_broker_running_this_config(tmp_path):
    """Labelled, one each: under systemd (the drop-in) `systemctl restart mosquitto`; started by hand
    the restart of exactly the broker running this config (its command line, with or without the
    ``-d`` the restart adds), each after the same cp. No SIGHUP anywhere: Debian's Mosquitto
    2.0.11 died on a reload after `remove-validator` in a QA run (docs/bus.md)."""
    etc = tmp_path / "etc-peerwatt"
    out = init(tmp_path, "--broker-etc", str(etc))
    request, meter = join_request(tmp_path, "h1")
    r = peerwatt("community", "add-meter", "--dir", str(out), str(request))
    assert r.returncode == 0, r.stderr
    cp = f"cp {out}/broker-etc/peerwatt.acl {etc}/"
    systemd = f"on the broker, under systemd (peerwatt's drop-in): {cp} && systemctl restart mosquitto"
    [by_hand] = [x for x in r.stdout.splitlines() if x.startswith("on the broker, started by hand: ")]
    assert systemd in r.stdout.splitlines(), r.stdout
    assert by_hand.startswith(f"on the broker, started by hand: {cp} && sh -c "), by_hand
    argv = shlex.split(by_hand.split(" && ", 1)[1])
    pattern = f"(/usr/sbin/)?mosquitto -c {etc}/mosquitto\\.conf( -d)?"
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["restart-mosquitto", pattern, f"{etc}/mosquitto.conf"]
    script = argv[2]
    assert 'pkill -x -f "$1" ||' in script and '/usr/sbin/mosquitto -c "$2" -d' in script
    assert "seq 300" in script  # waits at most 30 s for it to exit
    for line in (
        f"/usr/sbin/mosquitto -c {etc}/mosquitto.conf",
        f"/usr/sbin/mosquitto -c {etc}/mosquitto.conf -d",
        f"mosquitto -c {etc}/mosquitto.conf",  # started as `mosquitto` found on the PATH
    ):
        assert re.fullmatch(pattern, line)  # what pgrep -x reads: the whole command line
    for other in (
        "/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf",
        f"/usr/sbin/mosquitto -c {etc}/mosquittoXconf",
        f"/usr/local/sbin/mosquitto -c {etc}/mosquitto.conf",
    ):
        assert not re.fullmatch(pattern, other)
    summary = (out / "SUMMARY.txt").read_text()
    for text in (r.stdout, summary):
        assert "pkill -HUP" not in text and "SIGHUP to" not in text
    restart = by_hand.split(" && ", 1)[1]
    assert f"    under systemd: systemctl restart mosquitto\n    started by hand: {restart}\n" in summary
    assert "revoke, add-validator, remove-validator" in summary
    assert "revoke and remove-validator the CRL too" in summary
    here = shlex.quote(str(out))
    assert f"peerwatt community remove-validator --dir {here} <key id> --data <a copy" in summary


def test_add_meter_twice_says_the_account_exists_and_issues_no_second_certificate(tmp_path):
    out = init(tmp_path)
    request, meter = join_request(tmp_path, "h1")
    first = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(tmp_path / "a"))
    assert first.returncode == 0 and "already" not in first.stdout
    second = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    [line] = [x for x in second.stdout.splitlines() if "already" in x]
    assert meter in line and "no new certificate" in line
    assert (tmp_path / "a" / "broker-client.crt").read_bytes() == (
        tmp_path / "b" / "broker-client.crt"
    ).read_bytes()
    assert users(out / "broker-etc" / "peerwatt.acl").count(meter) == 1


def test_add_meter_refuses_what_it_cannot_do_whole_and_changes_nothing(tmp_path):
    """Found in a QA pass: with another community's genesis.toml in the folder, add-meter
    rewrote both mosquitto.conf files and ACLs for that community (exit 0), so the printed
    restart would have cut off every node and household; with the ACL a folder (or unwritable)
    it issued the certificate, changed the CRL, then ended in a traceback; a household folder it
    could not make came after the ACL, CRL and community.toml were written. Each is now one line
    before any file changes; a community.toml that is a folder or a genesis that is no TOML too."""
    out = init(tmp_path)
    request, _meter = join_request(tmp_path, "ada")
    other = tmp_path / "elm"
    made = peerwatt("community", "init", *FLAGS[:1], "elm", *FLAGS[2:], "--out", str(other), stdin="")
    assert made.returncode == 0, made.stderr
    original = (out / "genesis.toml").read_bytes()
    before = snapshot(out)

    def refused(*extra: str) -> str:
        r = peerwatt("community", "add-meter", "--dir", str(out), str(request), *extra)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert snapshot(out) == before, "a refused add-meter changed files"
        assert not (out / "households").exists() and not (tmp_path / "hh").exists()
        return r.stderr

    (out / "genesis.toml").write_bytes((other / "genesis.toml").read_bytes())
    before = snapshot(out)
    assert "is the genesis of community 'elm'" in refused()
    (out / "genesis.toml").write_text("[community\n")
    before = snapshot(out)
    assert "genesis.toml" in refused()
    (out / "genesis.toml").write_bytes(original)
    for path, expected in (
        (out / "broker" / "peerwatt.acl", "cannot write {}: it is a folder"),
        (out / "community.toml", "cannot read {}"),
    ):
        text = path.read_text()
        path.unlink()
        path.mkdir()  # a folder where the file belongs
        before = snapshot(out)
        assert expected.format(path) in refused()
        path.rmdir()
        path.write_text(text)
    (tmp_path / "file").write_text("")
    before = snapshot(out)
    assert "is a file, not a folder" in refused("--out", str(tmp_path / "file" / "hh"))
    # an operator's edit of mosquitto.conf or the drop-in, here or in the broker machine's copies
    # (the QA re-check: an edit in broker-etc/ was overwritten in silence; one in broker/ was
    # refused only after the new certificate and the CRL were written)
    for edited in (
        "broker/mosquitto.conf",
        "broker-etc/mosquitto.conf",
        "broker/mosquitto.service.d/peerwatt.conf",
        "broker-etc/mosquitto.service.d/peerwatt.conf",
    ):
        path = out / edited
        text = path.read_text()
        path.write_text(text + "# my edit\n")
        before = snapshot(out)
        assert f"{path} was changed since" in refused(), edited
        path.write_text(text)
    assert peerwatt("community", "add-meter", "--dir", str(out), str(request)).returncode == 0
