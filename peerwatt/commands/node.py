"""`peerwatt node init`: create a node's ledger store from a genesis file."""

from __future__ import annotations

from pathlib import Path

import click

from chain.engine import Ledger
from chain.genesis import GenesisError, load_genesis
from chain.store import StoreError
from peerwatt.apps import load_app
from peerwatt.errors import UserError


@click.group()
def node() -> None:
    """Run and manage ledger nodes."""


@node.command("init")
@click.option("--genesis", "genesis_file", required=True, type=click.Path(path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
def init(genesis_file: Path, data_dir: Path) -> None:
    """Create the node's store in --data from --genesis."""
    try:
        genesis = load_genesis(genesis_file)
        ledger = Ledger.create(data_dir, genesis, load_app(genesis.app_name))
    except (GenesisError, StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"created {data_dir} for community {genesis.community}")
    click.echo(f"genesis hash {genesis.hash.hex()} (every node must show the same)")
    ledger.close()
