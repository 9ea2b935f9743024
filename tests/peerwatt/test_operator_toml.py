"""operator.toml (the validator's broker account for governance) is read strictly: an unknown key
is refused in one line naming it and the file, before the broker is contacted (found in a QA pass:
`colour = 1` was accepted)."""

from __future__ import annotations

import pytest

from chain.keys import generate_private_key
from peerwatt.commands.member import NodeSide, publish_gov
from peerwatt.errors import UserError

OPERATOR = 'client_id = "operator-x"\n{extra}[broker]\nurl = "mqtt://127.0.0.1:9"\n'


def test_an_unknown_key_in_operator_toml_is_named(tmp_path):
    path = tmp_path / "operator.toml"
    path.write_text(OPERATOR.format(extra="colour = 1\n"))
    side = NodeSide(tmp_path, generate_private_key(), path)
    with pytest.raises(UserError) as info:
        publish_gov(side, "oak-street", [], timeout_s=0.5)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "colour" in message, message
    assert "unknown key" in message, message


def test_the_known_keys_pass_the_check(tmp_path):
    """client_id and [broker] are read: the command goes on to the broker (here: nobody listens)."""
    path = tmp_path / "operator.toml"
    path.write_text(OPERATOR.format(extra=""))
    side = NodeSide(tmp_path, generate_private_key(), path)
    with pytest.raises(UserError) as info:
        publish_gov(side, "oak-street", [], timeout_s=0.5)
    assert "unknown key" not in str(info.value) and "127.0.0.1" in str(info.value), info.value
