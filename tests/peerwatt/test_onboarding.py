"""Joining (issue 16 part 2): the signed join request, seqs from a node's state, `agent setup`
against a real Modbus simulator (the real probe code), one-line errors."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.keys import generate_private_key, key_id, load_private_key
from meter_agent.config import load_agent_config
from peerwatt.onboarding import (
    JoinRequestError,
    make_join_request,
    next_seq,
    parse_join_request,
    quorum_sentence,
    read_join_request,
)
from tests.support.cli import peerwatt
from tests.support.sim_meter import sim_meter_process


def _request(**over):
    member, meter = generate_private_key(), generate_private_key()
    fields = dict(
        community="oak-street", name="Household 7", serial="SDM-1", profile="sdm630", capacity_w=11000
    )
    fields.update(over)
    return member, meter, make_join_request(member, meter, **fields)


def test_join_request_round_trip_and_tampering():
    member, meter, request = _request()
    parsed = parse_join_request("some mail text\n" + request.text() + "-- \nsignature")
    assert parsed == request
    assert parsed.member_id == key_id(member.public_key()) and parsed.meter_id == key_id(meter.public_key())
    for old, new in (("capacity_w: 11000", "capacity_w: 99000"), ("serial: SDM-1", "serial: SDM-2")):
        with pytest.raises(JoinRequestError, match="signature does not verify"):
            parse_join_request(request.text().replace(old, new))
    with pytest.raises(JoinRequestError, match="lacks signature"):
        parse_join_request("\n".join(x for x in request.text().splitlines() if not x.startswith("signature")))
    with pytest.raises(JoinRequestError, match="no join request"):
        parse_join_request("hello")
    with pytest.raises(JoinRequestError, match="serial"):
        _request(serial="has space")


def test_next_seq_is_above_the_ledger_and_the_clock():
    chain = {"seqs": {"a": [5_000_000_000_000, "0"]}}
    assert next_seq(chain, "a", now_ms=1_000) == 5_000_000_000_001
    assert next_seq(chain, "b", now_ms=1_000) == 1_000
    assert next_seq({"seqs": {"a": [7, "0"]}}, "a", now_ms=1_000) == 1_000


def test_quorum_sentence():
    assert quorum_sentence(3).endswith("so n=3 needs 3 and tolerates no failure")
    assert quorum_sentence(4).endswith("so n=4 needs 3 and tolerates 1 validator(s) down")


INIT = ["--community", "oak-street", "--validators", "4", "--interval", "900", "--feed-in-price", "0.08"]
INIT += ["--retail-price", "0.30", "--timezone", "UTC", "--broker-host", "127.0.0.1"]


@pytest.fixture
def sim_meter():
    with sim_meter_process("--profile", "sdm630") as (_proc, _line, port):
        yield port


def test_agent_setup_finds_the_meter_and_writes_keys_config_and_request(tmp_path, sim_meter):
    out = tmp_path / "c"
    r = peerwatt(
        "community",
        "init",
        "--community",
        "oak-street",
        "--validators",
        "4",
        "--interval",
        "900",
        "--feed-in-price",
        "0.08",
        "--retail-price",
        "0.30",
        "--timezone",
        "UTC",
        "--broker-host",
        "127.0.0.1",
        "--out",
        str(out),
        stdin="",
    )
    assert r.returncode == 0, r.stderr
    folder = out / "household"
    args = [
        "agent",
        "setup",
        "--dir",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(sim_meter),
        "--broker",
        "mqtts://127.0.0.1:8883",
        "--name",
        "Household 7",
    ]
    r = peerwatt(*args, stdin="")
    assert (
        r.returncode != 0 and r.stderr.strip() == "error: confirm the meter: run on a terminal, or pass --yes"
    )
    r = peerwatt(*args, "--yes", "--capacity-w", "9000", stdin="")
    assert r.returncode == 0, r.stderr
    assert "sdm630 at 127.0.0.1" in r.stdout and "power" in r.stdout  # the live values shown
    # the files named alike, in the folder named once (a QA pass: "wrote <dir>/agent.toml, member.key")
    assert (
        f"wrote in {folder}: agent.toml, member.key (your vote), meter.key (the agent's) and "
        "join-request.txt:" in r.stdout.splitlines()
    ), r.stdout
    request = parse_join_request((folder / "join-request.txt").read_text())
    assert request.profile == "sdm630" and request.capacity_w == 9000 and request.community == "oak-street"
    assert (folder / "meter.key").stat().st_mode & 0o077 == 0
    again = peerwatt(*args, "--yes", stdin="")
    assert "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    r = peerwatt(
        "community",
        "add-meter",
        "--dir",
        str(out),
        str(folder / "join-request.txt"),
        "--out",
        str(tmp_path / "h"),
    )
    assert r.returncode == 0, r.stderr
    assert f"user {request.meter_id}" in (out / "broker" / "peerwatt.acl").read_text()
    assert (tmp_path / "h" / "broker-client.key").stat().st_mode & 0o077 == 0
    for name in ("broker-client.crt", "broker-client.key"):
        shutil.copy2(tmp_path / "h" / name, folder / name)
    cfg = load_agent_config(folder / "agent.toml")
    assert cfg.meter.port == sim_meter and cfg.meter.serial == request.serial
    assert cfg.broker.tls and cfg.community == "oak-street"


def test_a_join_request_from_keys_made_by_hand(tmp_path):
    """Found in a QA pass: docs/agent.md's install by hand (and the Debian package's) makes the keys
    with `keys new`, but only `agent setup` wrote a join request, and it makes its own keys: the
    agent then refused to start (no join-request.txt) and `member admit` had nothing to read."""
    out = tmp_path / "c"
    assert peerwatt("community", "init", *INIT, "--out", str(out), stdin="").returncode == 0
    for name in ("member", "meter"):
        assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", name).returncode == 0
    args = ["agent", "join-request", "--genesis", str(out / "household" / "genesis.toml")]
    args += ["--name", "Household 8", "--meter-serial", "SN123", "--profile", "sdm630", "--no-qr"]
    args += ["--meter-key", str(tmp_path / "meter.key"), "--out", str(tmp_path / "join-request.txt")]
    same = peerwatt(*args, "--member-key", str(tmp_path / "meter.key"))
    assert same.returncode == 2 and "are the same key" in same.stderr
    r = peerwatt(*args, "--member-key", str(tmp_path / "member.key"))
    assert r.returncode == 0, r.stderr
    request = read_join_request(tmp_path / "join-request.txt")
    assert (request.community, request.serial, request.profile) == ("oak-street", "SN123", "sdm630")
    assert request.capacity_w == 11000 and request.name == "Household 8"
    assert request.meter_id == key_id(load_private_key(tmp_path / "meter.key").public_key())
    again = peerwatt(*args, "--member-key", str(tmp_path / "member.key"))
    assert again.returncode == 2 and "already exists" in again.stderr
    added = peerwatt("community", "add-meter", "--dir", str(out), str(tmp_path / "join-request.txt"))
    assert added.returncode == 0, added.stderr


def test_setup_asks_for_what_it_lacks_before_it_probes(tmp_path):
    """Found in a QA pass: `agent setup --yes` without --broker said so only after probing the
    meter and three live readings; without the community's files it told a household to write
    its own genesis (`genesis new`)."""
    folder = tmp_path / "h"
    folder.mkdir()
    base = ["agent", "setup", "--dir", str(folder), "--host", "127.0.0.1", "--port", "9", "--yes"]
    r = peerwatt(*base, stdin="")
    assert r.returncode == 2 and "genesis.toml not found" in r.stderr and "genesis new" not in r.stderr
    out = tmp_path / "c"
    assert peerwatt("community", "init", *INIT, "--out", str(out), stdin="").returncode == 0
    r = peerwatt(*base[:3], str(out / "household"), *base[4:], stdin="")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: give --broker") and "looking for the meter" not in r.stdout
    # the community's broker is a TLS one (setup writes its CA into agent.toml)
    r = peerwatt(*base[:3], str(out / "household"), *base[4:], "--broker", "mqtt://10.0.0.10:1883", stdin="")
    assert r.returncode == 2 and "takes TLS connections only" in r.stderr and "mqtts://" in r.stderr


def test_a_join_request_names_its_profile_and_a_missing_genesis_is_one_line(tmp_path):
    """Found in a QA pass: `agent join-request --profile /path/x.toml` signed the local path into
    the request, and a missing --genesis told a household to write one (`genesis new`)."""
    from meter_agent.profile import builtin_profile_dir

    out = tmp_path / "c"
    assert peerwatt("community", "init", *INIT, "--out", str(out), stdin="").returncode == 0
    for name in ("member", "meter"):
        assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", name).returncode == 0
    args = ["agent", "join-request", "--name", "H", "--meter-serial", "SN1", "--no-qr"]
    args += ["--member-key", str(tmp_path / "member.key"), "--meter-key", str(tmp_path / "meter.key")]
    args += ["--out", str(tmp_path / "j.txt"), "--profile", str(builtin_profile_dir() / "sdm630.toml")]
    missing = peerwatt(*args, "--genesis", str(tmp_path / "nowhere.toml"))
    assert missing.returncode == 2 and "not found" in missing.stderr and "genesis new" not in missing.stderr
    r = peerwatt(*args, "--genesis", str(out / "household" / "genesis.toml"))
    assert r.returncode == 0, r.stderr
    assert read_join_request(tmp_path / "j.txt").profile == "sdm630"


def test_agent_setup_finds_a_meter_on_its_profiles_own_unit_id(tmp_path):
    """Found in a QA pass: `agent setup --host` tried unit 1 only, so a Fronius Smart Meter (unit
    240) or a DTSU666-H (unit 11) was never found, although docs/agent.md says setup finds the
    meter as `meter probe` does (which tries each profile's own unit id)."""
    out = tmp_path / "c"
    r = peerwatt("community", "init", *INIT, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    with sim_meter_process("--profile", "fronius-smart-meter") as (_proc, _line, port):  # on unit 240
        r = peerwatt(
            "agent", "setup", "--dir", str(out / "household"), "--host", "127.0.0.1", "--port", str(port),
            "--broker", "mqtts://127.0.0.1:8883", "--name", "Household 8", "--yes", stdin="", timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "fronius-smart-meter at 127.0.0.1" in r.stdout and "unit 240" in r.stdout, r.stdout


def test_a_join_request_proves_it_holds_its_meter_key():
    """Found in a QA pass: only the member key signed a join request, so a household could name
    another household's meter public key in its own; admitted, the meter was enrolled under the
    wrong owner and its earnings credited to them. The meter key now signs the request too."""
    from dataclasses import replace

    from chain.keys import public_key_sec1
    from chain.signature import sign

    member, _meter, request = _request()
    victim = generate_private_key()  # another household's meter: only its public key is known
    claimed = replace(request, meter=public_key_sec1(victim.public_key()).hex(), signature="")
    forged = replace(claimed, signature=sign(member, claimed.signed_bytes()))  # the member's own signature
    with pytest.raises(
        JoinRequestError, match="meter signature does not verify.*not one this household holds"
    ):
        parse_join_request(forged.text())
    old = "\n".join(x for x in request.text().splitlines() if not x.startswith("meter_signature"))
    with pytest.raises(
        JoinRequestError, match="lacks meter_signature .*make it again with `peerwatt agent join-request`"
    ):
        parse_join_request(old)
    assert parse_join_request(request.text()) == request


def test_an_agent_reads_its_own_join_request_made_before_meter_signatures(tmp_path):
    """Found in a QA pass of updates: every agent of a household admitted with a join request made
    before requests carried the meter key's signature refused to start after the update, and its
    advice (`agent setup` again) made new keys, so the household had to be voted in again. The
    agent reads its own request without it (it holds the meter key: what the signature proves to
    the community, whose `member admit` still requires it)."""
    from peerwatt.commands.agent import with_own_enrolment
    from tests.support.localnet import make_community

    member, meter, request = _request()
    old = "\n".join(x for x in request.text().splitlines() if not x.startswith("meter_signature"))
    parsed = parse_join_request(old, own=True)
    assert parsed.meter_signature == "" and parsed.serial == "SDM-1" and parsed.meter == request.meter
    file = tmp_path / "join-request.txt"
    file.write_text(old + "\n")
    genesis = make_community(community="oak-street").genesis
    own = with_own_enrolment(genesis, meter, file).doc["meters"][key_id(meter.public_key())]
    assert (own["serial"], own["owner"], own["capacity_w"]) == ("SDM-1", key_id(member.public_key()), 11000)
    # the member signature still counts, and a meter signature that is there is still checked
    with pytest.raises(JoinRequestError, match="signature does not verify"):
        parse_join_request(old.replace("SDM-1", "SDM-2"), own=True)
    forged = request.text().replace(request.meter_signature, request.signature)
    with pytest.raises(JoinRequestError, match="meter signature does not verify"):
        parse_join_request(forged, own=True)


@pytest.mark.parametrize("field,value", [("capacity_w", 10**30), ("created", int("9" * 20))])
def test_a_join_request_with_a_number_too_large_to_sign_is_refused_naming_it(field, value):
    """Found in a QA pass: `member admit` and `gov vote --request` crashed with a CanonicalError
    traceback ("integer ... is out of range") on a request holding a number the signed canonical
    JSON cannot carry (above 2^53 - 1): only JoinRequestError is caught there. It is refused by
    name, when the request is read and when it is made."""
    _member, _meter, request = _request()
    text = request.text().replace(f"{field}: {getattr(request, field)}\n", f"{field}: {value}\n")
    with pytest.raises(JoinRequestError, match=f"^{field} is out of range"):
        parse_join_request(text)
    with pytest.raises(JoinRequestError, match=f"^{field} is out of range"):
        _request(**{field: value})
    with pytest.raises(JoinRequestError, match="^name: string holds a lone surrogate"):
        _request(name="House\udcff")  # (what click makes of a name's bytes that are not UTF-8)


def test_member_admit_names_a_number_too_large_in_one_line(tmp_path):
    from click.testing import CliRunner

    from chain.keys import save_private_key
    from peerwatt.cli import cli
    from peerwatt.errors import UserError
    from tests.support.market_ledger import build_market

    c = build_market(tmp_path / "ledgers", validators=1)
    for ledger in c.ledgers:
        ledger.close()
    save_private_key(c.validators[0].key, tmp_path / "v.key")
    _member, _meter, request = _request(community=c.community)
    file = tmp_path / "join.txt"
    file.write_text(request.text().replace("capacity_w: 11000", f"capacity_w: {10**30}"))
    args = ["member", "admit", str(file), "--data", str(tmp_path / "ledgers" / "validator-0")]
    res = CliRunner().invoke(cli, [*args, "--key", str(tmp_path / "v.key"), "--wait", "0"])
    assert isinstance(res.exception, UserError), res.exception
    assert str(res.exception) == f"{file}: capacity_w is out of range (at most 9007199254740991)"


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("name", "Household 7 ", "name ends with a space character (U+0020)"),
        ("name", "\tHousehold 7", "name starts with a space character (U+0009)"),
        ("name", "House\u2028hold", "name holds a line break (U+2028)"),
        ("name", "House\rhold", "name holds a line break (U+000D)"),
        ("name", "House\x85hold", "name holds a line break (U+0085)"),
        ("name", "-----END PEERWATT JOIN REQUEST-----", "name holds -----END PEERWATT JOIN REQUEST-----"),
        ("profile", "sdm630\u2029", "profile holds a line break (U+2029)"),
        ("serial", "SN1\x1c", "serial holds a line break (U+001C)"),
        ("community", "oak-street\n", "community holds a line break (U+000A)"),
    ],
)
def test_a_value_its_request_text_cannot_carry_is_refused_when_made(field, value, words):
    """Found in a QA pass: a name with a space at an end, or a Unicode line break in it (U+2028,
    \\r, U+0085), made a request that was written fine and refused when read ("signature does
    not verify ... it was changed", "unexpected line"): the request's text is split at every
    line break and its values stripped. Such a value is refused when the request is made."""
    with pytest.raises(JoinRequestError) as refused:
        _request(**{field: value})
    assert str(refused.value).startswith(words) and "\n" not in str(refused.value)


_MEMBER, _METER = generate_private_key(), generate_private_key()


@given(
    name=st.text(
        st.characters(exclude_categories=("Cs",)) | st.sampled_from([*"\n\r\v\f\x1c\x85\u2028 \t\xa0:"]),
        max_size=70,
    )
)
def test_a_request_make_takes_reads_back_as_made(name):
    try:
        request = make_join_request(
            _MEMBER, _METER, community="oak-street", name=name, serial="SN1", profile="sdm630", capacity_w=1
        )
    except JoinRequestError:
        return
    assert parse_join_request(request.text()) == request
