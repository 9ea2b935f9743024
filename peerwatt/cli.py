"""The `peerwatt` command: one click group whose subcommands are imported lazily.

Lazy import keeps `peerwatt agent` light (it must not pull in pandas, Flask or the ledger store)
and keeps each area's commands in its own module under ``peerwatt/commands``.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
import threading

import click

from peerwatt.errors import UserError

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "keys": "peerwatt.commands.keys:keys",
    "msg": "peerwatt.commands.msg:msg",
    "clear": "peerwatt.commands.clear:clear",
    "meter": "peerwatt.commands.meter:meter",
    "sim-meter": "peerwatt.commands.sim_meter:sim_meter",
    "genesis": "peerwatt.commands.genesis:genesis",
    "node": "peerwatt.commands.node:node",
    "gov": "peerwatt.commands.gov:gov",
    "verify": "peerwatt.commands.verify:verify",
    "agent": "peerwatt.commands.agent:agent",
    "dashboard": "peerwatt.commands.dashboard:dashboard",
    "report": "peerwatt.commands.report:report",
    "simulate": "peerwatt.commands.simulate:simulate",
    "broker": "peerwatt.commands.broker:broker",
    "demo": "peerwatt.commands.demo:demo",
    "community": "peerwatt.commands.community:community",
    "member": "peerwatt.commands.member:member",
    "statements": "peerwatt.commands.statements:statements",
    "gridops": "peerwatt.commands.gridops:gridops",
}

# Top-level modules that only an extra installs (pyproject.toml), and the extra that does: a
# command that needs one on a lean install says which extra to install, in one line
# (tests/peerwatt/test_cli_extras.py keeps this in step with pyproject.toml).
EXTRA_OF_MODULE: dict[str, str] = {
    "numpy": "node",
    "rich": "node",
    "zstandard": "node",
    "ecdsa": "node",
    "rfc8785": "node",
    "flask": "dashboard",
    "flask_login": "dashboard",
    "flask_wtf": "dashboard",
    "waitress": "dashboard",
    "pandas": "reports",
    "matplotlib": "reports",
    "mpl_toolkits": "reports",
    "pylab": "reports",
    "fpdf": "reports",
    "pypdf": "reports",
    "sepaxml": "reports",
    "sepadd": "reports",
    "schwifty": "reports",
    "amqtt": "demo",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # A command whose module is not part of this install is not listed.
        return sorted(n for n, t in COMMANDS.items() if importlib.util.find_spec(t.split(":")[0]))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="peerwatt")
def cli() -> None:
    """peerwatt: a peer-to-peer solar energy marketplace for smart meters."""


class Terminated(BaseException):
    """SIGTERM (kill, timeout, systemd) in a command that has no handler of its own: raised like
    Ctrl-C's KeyboardInterrupt, so cleanups (temporary files, half-made folders) still run."""


def _terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning a UserError into one line on stderr and an exit code."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)  # long-running commands set their own
    try:
        rv = cli.main(args=argv, prog_name="peerwatt", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(143)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # a file-system refusal no command turned into its own line: still one line, never a traceback
        where = f" {exc.filename}" if exc.filename else ""
        click.echo(f"error: cannot use{where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        click.echo(
            f"error: this command needs {exc.name}, which peerwatt's [{extra}] extra installs: "
            f"pip install 'peerwatt[{extra}]'",
            err=True,
        )
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
