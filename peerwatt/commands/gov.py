"""`peerwatt gov propose|vote|list`: build and sign governance transactions, list open proposals."""

from __future__ import annotations

import time
from pathlib import Path

import click

from chain.envelope import Rejected, sign_envelope
from chain.governance import ARGS
from chain.messages import GOV_ACTIONS
from peerwatt.commands.keys import load_key
from peerwatt.errors import UserError


def _arg_value(text: str) -> int | str:
    """Integers stay integers (no floats on the wire); everything else is a string."""
    try:
        return int(text)
    except ValueError:
        return text


def _write(envelope_bytes: bytes, out: Path | None) -> None:
    if out is None:
        click.echo(envelope_bytes.decode("utf-8"))
        return
    out.write_bytes(envelope_bytes + b"\n")
    click.echo(f"wrote {out}: publish it to peerwatt/<community>/gov or hand it to the sequencer")


@click.group()
def gov() -> None:
    """Community votes: proposals and votes are signed transactions on the ledger."""


@gov.command("propose")
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--community", required=True)
@click.option("--seq", required=True, type=click.IntRange(0))
@click.option("--action", required=True, type=click.Choice(GOV_ACTIONS))
@click.option("--arg", "args", multiple=True, help="name=value (repeat); integers stay integers.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 30), help="Voting period.")
@click.option("--note", default=None)
@click.option("--out", type=click.Path(path_type=Path))
def propose(key_file, passphrase_file, community, seq, action, args, days, note, out) -> None:
    """Sign a proposal (its id is printed by `gov list` and is its transaction hash)."""
    parsed = {}
    for item in args:
        name, sep, value = item.partition("=")
        if not sep or name not in ARGS[action]:
            raise UserError(f"--arg {item!r}: expected one of {', '.join(ARGS[action])} as name=value")
        parsed[name] = value if name in ("key", "serial", "name", "owner") else _arg_value(value)
    now = int(time.time())
    body = {"action": action, "args": parsed, "deadline": now + days * 86400}
    if note:
        body["note"] = note
    try:
        env = sign_envelope(
            load_key(key_file, passphrase_file),
            type="propose",
            community=community,
            seq=seq,
            body=body,
            created=now,
            ttl_s=days * 86400,
        )
    except Rejected as exc:
        raise UserError(f"cannot sign proposal: {exc}") from None
    click.echo(f"proposal id {env.tx_hash.hex()}", err=True)
    _write(env.to_bytes(), out)


@gov.command("vote")
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--community", required=True)
@click.option("--seq", required=True, type=click.IntRange(0))
@click.option("--proposal", required=True, help="Proposal id (64 hex).")
@click.option("--yes/--no", "approve", required=True)
@click.option("--out", type=click.Path(path_type=Path))
def vote(key_file, passphrase_file, community, seq, proposal, approve, out) -> None:
    """Sign a vote on a proposal."""
    try:
        env = sign_envelope(
            load_key(key_file, passphrase_file),
            type="vote",
            community=community,
            seq=seq,
            body={"proposal": proposal, "vote": "yes" if approve else "no"},
            created=int(time.time()),
        )
    except Rejected as exc:
        raise UserError(f"cannot sign vote: {exc}") from None
    _write(env.to_bytes(), out)


@gov.command("list")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
def list_(data_dir: Path) -> None:
    """Open proposals in a node's store, with their votes and threshold."""
    from chain.engine import genesis_from_dict_bytes, head_state
    from chain.governance import electorate
    from chain.store import Store, StoreError
    from peerwatt.apps import load_app

    try:
        store = Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        genesis = genesis_from_dict_bytes(store.genesis_doc())
        chain = head_state(store, load_app(genesis.app_name), genesis)["chain"]
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    if not chain["proposals"]:
        click.echo("no open proposals")
    for pid, proposal in sorted(chain["proposals"].items()):
        _, needed = electorate(chain, proposal["action"])
        click.echo(
            f"{pid} {proposal['action']} {proposal['args']} yes={len(proposal['yes'])} "
            f"no={len(proposal['no'])} needed={needed} deadline={proposal['deadline']}"
        )
