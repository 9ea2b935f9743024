"""`peerwatt genesis new`: write a commented genesis file to start a community from."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import click

from chain.genesis import RULES_NEW, GenesisError, genesis_from_dict
from chain.keys import KeyFileError, load_public_key, public_key_sec1
from peerwatt.errors import UserError

TEMPLATE = """# peerwatt genesis: height 0 of a community's ledger. Every node of the community must start
# from byte-for-byte the same file (compare `peerwatt node init` output: it prints its hash).

[community]
id = "{community}"          # lowercase letters, digits, '-'
name = "{name}"
time = {now}                 # genesis time, Unix seconds (UTC)
app = "{app}"{pad}# the application the ledger runs
timezone = "Europe/Vienna"   # shown on the dashboard

[chain]
# quorum = 3                 # seals needed for finality; default floor(2n/3)+1 of n validators
sequencer = "{sequencer}"    # key id of the validator that cuts blocks
block_s = 2                  # cut a block every block_s seconds while transactions wait
max_open_proposals = 32      # open proposals one key may have; bounds their args too (docs/governance.md)
rules = {rules}                    # ledger rules (docs/ledger.md, "Rules")

[app]                        # community parameters, handed to the app (integers only)
interval_s = 900             # delivery interval in seconds (900 = 15 minutes; must divide a day)
gate_s = 300                 # gate closure: orders close this long before an interval starts
horizon_s = 86400            # orders accepted at most this far ahead
settle_after_intervals = 2   # settlement deadline, in intervals after the interval's end
feed_in_price = 80000        # micro-units per kWh (0.08 per kWh): price floor
retail_price = 300000        # micro-units per kWh (0.30 per kWh): price cap
grid_fee_per_kwh = 20000     # charged to the buyer of locally traded energy, shown separately
levies_per_kwh = 5000        # idem
mechanism = "uniform"        # uniform | pay-as-bid | community
community_price = 150000     # used by the "community" mechanism
fee_rates_at = "clearing"    # trades settle at the fee rates of their gate closure (docs/billing.md)
max_reading_corrections = 3  # how often a meter may correct one interval's reading (docs/market.md)
max_orders_per_interval = 12 # orders a meter may place for one interval, replacements included (idem)

# One [[validators]] entry per validator key (public key: compressed SEC1 hex or PEM).
{validators}
# Members: households and the cooperative; they vote on membership and parameters.
# [[members]]
# key = "02..."
# name = "Household 1"

# Enrolled meters: key, serial, owner (a member's key id) and capacity (max power, W).
# [[meters]]
# key = "03..."
# serial = "SDM630-123456"
# owner = "<member key id>"
# capacity_w = 11000
"""


@click.group()
def genesis() -> None:
    """Write genesis files."""


@genesis.command("new")
@click.option("--community", required=True, help="Community id, e.g. oak-street.")
@click.option("--name", default="", help="Human-readable name.")
@click.option(
    "--validator",
    "validator_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A validator's public key file (repeat); the first is the sequencer.",
)
@click.option(
    "--app",
    default="market",
    show_default=True,
    type=click.Choice(["market", "kv"]),
    help="The application the ledger runs (kv: the engine's test app).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def new(community: str, name: str, validator_keys: tuple[Path, ...], app: str, out: Path) -> None:
    """Write a commented genesis TOML to --out."""
    from chain.keys import key_id

    entries, ids = [], []
    for path in validator_keys:
        try:
            public = load_public_key(path.read_bytes())
        except KeyFileError as exc:
            raise UserError(f"{path}: {exc}") from None
        if key_id(public) in ids:
            raise UserError(f"--validator {path}: the same key as an earlier --validator (each one once)")
        ids.append(key_id(public))
        entries.append(f'[[validators]]\nkey = "{public_key_sec1(public).hex()}"\nname = "{path.stem}"\n')
    if out.exists():
        raise UserError(f"{out} already exists; refusing to overwrite")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist: create it, or choose another --out")
    text = TEMPLATE.format(
        community=community,
        name=name or community,
        now=int(time.time()),
        app=app,
        pad=" " * (15 - len(app)),
        sequencer=ids[0],
        rules=RULES_NEW,
        validators="\n".join(entries),
    )
    try:  # the rules `node init` applies, before anything is written
        genesis_from_dict(tomllib.loads(text))
    except (GenesisError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"not a valid genesis: {exc} (check --community and --name)") from None
    out.write_text(text)
    click.echo(f"wrote {out}: add members and meters, then run `peerwatt node init --genesis {out}`")
