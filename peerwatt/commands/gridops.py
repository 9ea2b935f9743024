"""`peerwatt gridops import`: the grid operator's validated data onto the ledger as `gridops`
transactions signed by the importing operator (docs/billing.md, "The grid operator's data").

The file is read and checked (peerwatt/gridops.py), the rows the ledger does not already hold are
signed with the operator's key (node.toml's, or --key) and published on the community's gov topic
with the operator's broker account (operator.toml), as `peerwatt member` does; the command then
waits, bounded, until the node's store shows each transaction accepted or refused. Rows the ledger
would refuse for their time (not ended by this machine's clock; out of its gridops window at its
last block's time, or within an hour of it) or take without recording (an estimate over a measured
or replaced value) are left out, one warning line per reason naming their lines: one such row
would otherwise have the whole transaction of its meter refused, or be sent again on every run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from peerwatt.errors import UserError


def _head(data_dir: Path) -> tuple[Any, dict[str, Any], int, int]:
    """(genesis, state after the last final block, height, that block's time) of a node's store."""
    from chain.engine import genesis_from_dict_bytes, head_state
    from chain.store import Store, StoreError
    from market.apps import load_app

    try:
        store = Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        genesis = genesis_from_dict_bytes(store.genesis_doc())
        height = store.height()
        header = store.header(height)
        head_time = genesis.time if header is None else header["time"]
        return genesis, head_state(store, load_app(genesis.app_name), genesis), height, head_time
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def _outcomes(data_dir: Path, after: int, wanted: set[str]) -> dict[str, str]:
    """tx hash -> "ok" or the refusal reason, for the wanted transactions in blocks after ``after``."""
    from chain.store import Store, StoreError

    try:
        store = Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        found: dict[str, str] = {}
        for height in range(after + 1, store.height() + 1):
            for r in store.results(height):
                if r["kind"] == "tx" and r["tx"] in wanted:
                    found[r["tx"]] = r["status"] if r["status"] == "ok" else r["reason"]
        return found
    finally:
        store.close()


def _metering_points(billing_dir: Path) -> dict[str, str]:
    from peerwatt.gridops import GridopsError, metering_points

    path = billing_dir / "billing.toml"
    if not path.exists():
        return {}
    from peerwatt.statements import BillingError, read_billing_toml

    try:
        return metering_points(read_billing_toml(path), str(path))
    except BillingError as exc:
        raise UserError(str(exc)) from None
    except GridopsError as exc:
        raise UserError(str(exc)) from None


@click.group()
def gridops() -> None:
    """The grid operator's validated metering data (docs/billing.md)."""


@gridops.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="A node's data folder.")
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="This node's node.toml: its store, key and operator.toml (publishes the data).",
)
@click.option(
    "--key", "key_file", type=click.Path(path_type=Path), help="Signing key (default: node.toml's)."
)
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--operator-config",
    "operator_file",
    type=click.Path(path_type=Path),
    help="The broker account to publish with (default: operator.toml beside node.toml).",
)
@click.option(
    "--billing",
    "billing_dir",
    type=click.Path(path_type=Path),
    help="The billing folder whose billing.toml maps metering points to meters (default: NODE_DIR/billing).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 600),
    default=60,
    show_default=True,
    help="Seconds to wait for the data to be in a final block.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write the signed transactions (one per line) instead of publishing.",
)
def import_(
    file, data_dir, config_file, key_file, passphrase_file, operator_file, billing_dir, wait_s, out
) -> None:
    """Put the grid operator's data in FILE (CSV, docs/billing.md) on the ledger."""
    from market.params import gridops_operators, with_defaults
    from peerwatt.commands.member import node_side, publish_gov
    from peerwatt.gridops import (
        GridopsError,
        assign_meters,
        bodies,
        left_out_lines,
        parse_csv,
        select,
        sign_bodies,
    )
    from peerwatt.onboarding import next_seq

    side = node_side(config_file, data_dir, key_file, operator_file, passphrase_file)
    genesis, state, height, head_time = _head(side.data)
    params = state["chain"]["params"]
    if params.get("settlement_source", "meter") == "meter":
        raise UserError(
            f'{genesis.community} settles on its meters\' readings (settlement_source = "meter"): '
            "the grid operator's data is not used; a vote can set settlement_source (docs/market.md)"
        )
    if side.signer not in gridops_operators(params):
        raise UserError(
            f"key {side.signer} is not one of the community's gridops_operators: sign with an operator's "
            "key (--key), or have the community add it by a vote (set_param gridops_operators)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from None
    points = _metering_points(billing_dir or side.data / "billing")
    p = with_defaults(params)
    try:
        rows = parse_csv(text, file.name, p["interval_s"])
        by_meter = assign_meters(rows, points, set(state["chain"]["meters"]), file.name)
    except GridopsError as exc:
        raise UserError(str(exc)) from None
    now = int(time.time())
    recorded = state["app"].get("gridops", {})
    send, left_out = select(
        by_meter, recorded, p["interval_s"], p["gridops_window_s"], now=now, ledger_time=head_time
    )
    for line in left_out_lines(left_out, file.name, p["gridops_window_s"]):
        click.echo(f"warning: {line}", err=True)
    todo = bodies(send, recorded)
    if not todo:
        if left_out:
            click.echo(
                f"nothing to import from {file.name}: {sum(len(r) for r in left_out.values())} row(s) "
                "left out (above), the ledger already holds every other value"
            )
        else:
            click.echo(f"nothing to import: the ledger already holds every value in {file.name}")
        return
    envelopes = sign_bodies(side.key, genesis.community, todo, next_seq(state["chain"], side.signer), now)
    n_rows = sum(len(b["rows"]) for b in todo)
    if out is not None:
        out.write_bytes(b"".join(env.to_bytes() + b"\n" for env in envelopes))
        click.echo(
            f"wrote {out}: {len(envelopes)} gridops transaction(s), {n_rows} rows; "
            "publish them on the gov topic"
        )
        return
    publish_gov(side, genesis.community, envelopes)
    wanted = {env.tx_hash.hex() for env in envelopes}
    deadline = time.monotonic() + wait_s
    while True:
        found = _outcomes(side.data, height, wanted)
        if len(found) == len(wanted):
            break
        if time.monotonic() > deadline:
            raise UserError(
                f"published, but {len(wanted) - len(found)} of {len(wanted)} gridops transactions are not "
                f"in a final block of {side.data} after {wait_s:g} s: are the node and the sequencer running?"
            )
        time.sleep(0.5)
    refused = sorted({reason for reason in found.values() if reason != "ok"})
    taken = [body for env, body in zip(envelopes, todo, strict=True) if found[env.tx_hash.hex()] == "ok"]
    click.echo(
        f"imported {sum(len(b['rows']) for b in taken)} rows of {len({b['meter'] for b in taken})} "
        f"meter(s) in {len(taken)} of {len(envelopes)} transaction(s)"
    )
    if refused:
        raise UserError(
            f"{len(envelopes) - len(taken)} transaction(s) refused by the ledger: {', '.join(refused)}"
        )
