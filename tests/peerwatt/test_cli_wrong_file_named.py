"""Errors that name the wrong thing (a QA pass that followed the docs to set up a community):
`node init --genesis validator-1/node.toml` said "unknown section(s): broker, client_id, ..." (as if
the genesis had extra sections); `member admit join-1.txt -c agent.toml` said "unknown key(s)
community, heartbeat_s, ..." without saying the file is an agent.toml, not a node.toml; `node init`
run again on its folder said "ledger.sqlite already exists; use another --data folder" (for the
same genesis there is nothing to do)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peerwatt.test_cli_community import FLAGS
from tests.support.cli import peerwatt


@pytest.fixture(scope="module")
def community(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c") / "oak"
    r = peerwatt("community", "init", *FLAGS, "--validators", "1", "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    return out


def one_line(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_node_init_given_another_file_than_a_genesis_says_what_it_is(community, tmp_path):
    node_toml = community / "validator-1" / "node.toml"
    line = one_line(peerwatt("node", "init", "--genesis", str(node_toml), "--data", str(tmp_path / "d")))
    assert line == (
        f"error: --genesis {node_toml} is a node.toml (a node's settings), not a genesis file: give the "
        "community's genesis.toml"
    )
    assert "unknown section" not in line
    assert not (tmp_path / "d").exists()
    other = tmp_path / "other.toml"
    other.write_text('colour = "blue"\n')
    line = one_line(peerwatt("node", "init", "--genesis", str(other), "--data", str(tmp_path / "d")))
    assert line.startswith(f"error: --genesis {other} is not a genesis file (")
    assert line.endswith("): give the community's genesis.toml")


def test_a_node_config_that_is_another_file_says_what_it_is(community, tmp_path):
    agent = tmp_path / "agent.toml"
    agent.write_text(
        'community = "oak-street"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        'heartbeat_s = 60\n\n[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n\n[broker]\n'
        'url = "mqtts://127.0.0.1:8883"\n'
    )
    request = tmp_path / "join-1.txt"
    request.write_text("x")
    for args in (["member", "admit", str(request), "-c", str(agent)], ["node", "status", "-c", str(agent)]):
        line = one_line(peerwatt(*args))
        assert line.startswith(
            f"error: {agent} is an agent.toml (a household agent's settings), not a node.toml:"
        )
        assert "unknown key" not in line
        assert "the node.toml of a validator" in line
    operator = community / "validator-1" / "operator.toml"
    line = one_line(peerwatt("node", "status", "-c", str(operator)))
    assert line.startswith(f"error: {operator} is an operator.toml (a validator's governance broker account)")
    genesis = community / "genesis.toml"
    line = one_line(peerwatt("node", "status", "-c", str(genesis)))
    assert line.startswith(f"error: {genesis} is a genesis file, not a node.toml:")


def test_node_init_again_is_nothing_to_do_for_the_same_genesis(community, tmp_path):
    genesis = community / "genesis.toml"
    data = tmp_path / "node-data"
    first = peerwatt("node", "init", "--genesis", str(genesis), "--data", str(data))
    assert first.returncode == 0, first.stderr
    digest = first.stdout.splitlines()[1].split()[2]
    again = peerwatt("node", "init", "--genesis", str(genesis), "--data", str(data))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{data} is already initialised for community oak-street (genesis hash {digest}, height 0): "
        "nothing to do"
    ]
    # another community's genesis: refused, and the advice names both
    other = tmp_path / "elm"
    made = peerwatt(
        "community", "init", *[f if f != "oak-street" else "elm-court" for f in FLAGS], "--validators", "1",
        "--out", str(other), stdin="",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    line = one_line(peerwatt("node", "init", "--genesis", str(other / "genesis.toml"), "--data", str(data)))
    assert line.startswith(
        f"error: {data} holds the ledger of community oak-street (genesis {digest[:16]}...)"
    )
    assert f"not of {other / 'genesis.toml'} (community elm-court, genesis " in line
    assert line.endswith("give this node another --data folder (or move that one away to start it afresh)")
