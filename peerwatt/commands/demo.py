"""`peerwatt demo`: the one-command live community (not built yet; see issue #9)."""

import click

from peerwatt.errors import UserError


@click.command()
def demo() -> None:
    """Run the live demo community (not built yet)."""
    raise UserError(
        "the demo is not built yet (issue #9: embedded broker + simulated meters + nodes + "
        "dashboard); for now run `make test` or the commands in docs/",
        exit_code=3,
    )
