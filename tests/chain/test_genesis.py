"""Genesis checks that must agree with the rest of the protocol: meter serials (the reading schema's
LABEL, also for governance's enroll_meter) and the community's time zone (zoneinfo)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.engine import genesis_from_dict_bytes
from chain.genesis import GenesisError, NewerGenesis, genesis_from_dict
from chain.keys import generate_private_key
from chain.kvapp import KeyValueApp
from chain.messages import BODY_SCHEMAS
from chain.schema import SchemaError
from tests.support.localnet import Party, make_community

T0 = 1_764_000_000


def genesis_doc(serial="SN0001", timezone: object = None) -> dict:
    validator, member, meter = (Party(generate_private_key()) for _ in range(3))
    community = {"id": "oak-street", "time": T0}
    if timezone is not None:
        community["timezone"] = timezone
    return {
        "community": community,
        "validators": [{"key": validator.sec1_hex}],
        "members": [{"key": member.sec1_hex}],
        "meters": [{"key": meter.sec1_hex, "serial": serial, "owner": member.id, "capacity_w": 5000}],
    }


def reading_schema_accepts(serial: str) -> bool:
    body = {"interval": 0, "import_wh": 0, "export_wh": 0, "serial": serial, "profile": "sim"}
    try:
        BODY_SCHEMAS["reading"].check(body, "body")
    except SchemaError:
        return False
    return True


@pytest.mark.parametrize("serial", ["SN 1", "", "x" * 65, "Zähler-1", "SN\t1", "SN\n1"])
def test_genesis_refuses_a_serial_no_reading_could_carry(serial):
    with pytest.raises(GenesisError, match=r"meters\[0\]\.serial"):
        genesis_from_dict(genesis_doc(serial))


@given(st.text(max_size=70))
def test_genesis_and_reading_schema_agree_on_every_serial(serial):
    try:
        genesis_from_dict(genesis_doc(serial))
        accepted = True
    except GenesisError:
        accepted = False
    assert accepted == reading_schema_accepts(serial)


def test_enroll_meter_refuses_a_serial_no_reading_could_carry(tmp_path):
    c = make_community(validators=1, members=1)
    c.open_ledgers(tmp_path, KeyValueApp)
    new = Party(generate_private_key())
    proposals = [
        c.validators[0].sign(
            c.community,
            "propose",
            {
                "action": "enroll_meter",
                "args": {"key": new.sec1_hex, "serial": serial, "owner": c.members[0].id, "capacity_w": 5000},
                "deadline": T0 + 3600,
            },
            created=T0,
        )
        for serial in ("SN 9", "SN9")
    ]
    block = c.run_block(proposals, T0 + 1)
    assert [r.get("reason") for r in block.results if r["kind"] == "tx"] == ["bad_value", None]
    assert c.ledgers[0].chain_state["meters"][new.id]["serial"] == "SN9"


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "utc", "", "../../etc/passwd", "/etc/localtime", "localtime", "zone.tab", 5]
)
def test_unknown_timezone_is_one_clear_genesis_error(zone):
    with pytest.raises(GenesisError) as exc:
        genesis_from_dict(genesis_doc(timezone=zone))
    message = str(exc.value)
    assert "community.timezone" in message and "Europe/Vienna" in message and "\n" not in message


@pytest.mark.parametrize("zone", ["Europe/Vienna", "UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_known_timezones_are_kept(zone):
    assert genesis_from_dict(genesis_doc(timezone=zone)).doc["community"]["timezone"] == zone


def test_default_timezone_is_utc():
    assert genesis_from_dict(genesis_doc()).doc["community"]["timezone"] == "UTC"


def test_a_stored_genesis_with_an_unknown_timezone_does_not_load(tmp_path):
    genesis = genesis_from_dict(genesis_doc())
    genesis.doc["community"]["timezone"] = "Mars/Olympus"  # as if written by an older version
    with pytest.raises(GenesisError, match="community.timezone"):
        genesis_from_dict_bytes(genesis.to_bytes())


def test_set_param_timezone_must_be_a_known_zone(tmp_path):
    c = make_community(validators=1, members=1)
    c.open_ledgers(tmp_path, KeyValueApp)
    proposals = [
        c.members[0].sign(
            c.community,
            "propose",
            {"action": "set_param", "args": {"name": "timezone", "value": zone}, "deadline": T0 + 3600},
            created=T0,
        )
        for zone in ("Mars/Olympus", "Europe/Vienna")
    ]
    block = c.run_block(proposals, T0 + 1)
    assert [r.get("reason") for r in block.results if r["kind"] == "tx"] == ["bad_value", None]


def test_local_community_enrols_the_given_serials():
    c = make_community(validators=1, members=2, meters_per_member=1, serials=["70000", "70001"])
    assert [c.genesis.doc["meters"][m.id]["serial"] for m in c.meters] == ["70000", "70001"]


@pytest.mark.parametrize(("validators", "quorum"), [(4, 2), (3, 2), (7, 4), (4, 5)])
def test_a_quorum_outside_two_thirds_to_all_is_refused(validators, quorum):
    """Two quorums below floor(2n/3)+1 need not share an honest validator (docs/ledger.md)."""
    doc = genesis_doc()
    doc["validators"] = [{"key": Party(generate_private_key()).sec1_hex} for _ in range(validators)]
    doc["chain"] = {"quorum": quorum}
    with pytest.raises(GenesisError, match="chain.quorum must be within"):
        genesis_from_dict(doc)
    doc["chain"] = {"quorum": validators}  # all of them: allowed
    assert genesis_from_dict(doc).doc["chain"]["quorum"] == validators


def test_the_ledger_rules_version() -> None:
    """[chain] rules: absent in older genesis files (their ledgers re-execute as they were made),
    5 in every one peerwatt writes now; a version this peerwatt does not know is one line."""
    import copy

    from chain.genesis import RULES_NEW, initial_chain_state

    doc = genesis_doc()
    assert "rules" not in initial_chain_state(genesis_from_dict(doc))
    newer = copy.deepcopy(doc)
    newer["chain"] = {"rules": RULES_NEW}
    assert initial_chain_state(genesis_from_dict(newer))["rules"] == RULES_NEW == 5
    for bad in ("2", True, 0):
        newer["chain"]["rules"] = bad
        with pytest.raises(GenesisError, match="chain.rules must be one of 1, 2, 3, 4, 5"):
            genesis_from_dict(newer)
    # a newer peerwatt's rules: not a damaged file, the fix is an update
    newer["chain"]["rules"] = 6
    with pytest.raises(
        NewerGenesis, match="chain.rules is 6: .* a newer peerwatt wrote this genesis: update peerwatt"
    ):
        genesis_from_dict(newer)


def test_a_store_of_newer_rules_is_not_called_damaged(tmp_path) -> None:
    """Found in a QA pass: an older `verify` on an intact store of newer rules said to restore it
    from a peer (whose copy fails alike); the fix is a newer peerwatt."""
    from chain.canonical import canonical_bytes, loads_strict
    from chain.engine import Ledger, stored_genesis
    from chain.store import Store, StoreError
    from market.app import MarketApp

    doc = genesis_doc()
    Ledger.create(tmp_path, genesis_from_dict(doc), MarketApp()).store.close()
    store = Store.open(tmp_path)
    newer = loads_strict(store.genesis_doc())
    newer["chain"]["rules"] = 6  # as a newer peerwatt would have written it
    with store.conn:
        store.conn.execute("UPDATE genesis SET doc = ? WHERE id = 0", (canonical_bytes(newer),))
    with pytest.raises(StoreError) as raised:
        stored_genesis(store)
    store.close()
    assert "update peerwatt" in str(raised.value) and "restore" not in str(raised.value)
