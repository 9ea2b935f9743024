"""Interactive `peerwatt community init` (a QA pass): an empty answer to a question without a
default (the community id, the broker's address) asked the same question again without a word of
why. It now says what is needed, then asks again."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import peerwatt.commands.community as community_command
from peerwatt.cli import cli


def test_an_empty_answer_is_told_why_it_is_asked_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(community_command, "_interactive", lambda: True)
    out = tmp_path / "oak"
    flags = [
        "community", "init", "--name", "Oak Street", "--validators", "1", "--validator-host", "127.0.0.1",
        "--interval", "300", "--feed-in-price", "0.08", "--retail-price", "0.30", "--timezone", "UTC",
        "--out", str(out),
    ]  # fmt: skip
    # the community id: empty, then spaces, then an answer; the broker's address: empty, then one
    result = CliRunner().invoke(cli, flags, input="\n  \noak-street\n\n127.0.0.1\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    asked = [i for i, line in enumerate(lines) if line.startswith("Community id (e.g. oak-street):")]
    assert len(asked) == 3, result.output
    why = "a community id is needed (lowercase letters, digits and '-', e.g. oak-street): it has no default"
    assert why in lines[asked[0]] + lines[asked[0] + 1]
    assert why in lines[asked[1]] + lines[asked[1] + 1]
    host = [i for i, line in enumerate(lines) if line.startswith("Broker host name or IP")]
    assert len(host) == 2, result.output
    assert "the broker's address is needed" in lines[host[0]] + lines[host[0] + 1]
    assert (out / "genesis.toml").exists()
    assert 'id = "oak-street"' in (out / "genesis.toml").read_text()
