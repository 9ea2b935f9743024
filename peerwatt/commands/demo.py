"""`peerwatt demo`: the live community on embedded defaults, with a live status in the terminal."""

from __future__ import annotations

import logging
import signal
import sys
import time
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import click

from peerwatt.errors import UserError


def _price(micro_per_kwh: int | None) -> str:
    return "—" if micro_per_kwh is None else f"{micro_per_kwh / 10_000:.1f} ct/kWh"


@click.command()
@click.option("--homes", default=12, show_default=True, type=click.IntRange(2, 200))
@click.option(
    "--speed",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Simulated seconds per real second (300: a 15-minute interval every 3 s; 12 homes keep up "
    "to about 900 on 2 cores).",
)
@click.option(
    "--hours", type=click.FloatRange(0.25, 24 * 14), help="Run this much simulated time, then exit."
)
@click.option("--headless", is_flag=True, help="No dashboard.")
@click.option("--data", type=click.Path(path_type=Path), help="Keep the stores here (an empty folder).")
@click.option(
    "--broker",
    help="Use this MQTT broker (mqtt://host:port; one set of credentials for every process) "
    "instead of the embedded one.",
)
@click.option(
    "--mosquitto",
    is_flag=True,
    help="Run a real Mosquitto from the community's generated config: one certificate account per "
    "node and meter (files in DATA/broker).",
)
@click.option(
    "--port", default=8050, show_default=True, type=click.IntRange(1, 65535), help="Dashboard port."
)
@click.option("--seed", default=1, show_default=True, type=int)
def demo(homes, speed, hours, headless, data, broker, mosquitto, port, seed) -> None:
    """Run a live demo community: broker, simulated meters and agents, ledger nodes, dashboard."""
    from peerwatt.demo_community import Demo, DemoOptions, Stats

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    for noisy in ("pymodbus", "amqtt", "transitions", "waitress"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    the_demo = Demo(
        DemoOptions(
            homes=homes,
            speed=speed,
            hours=hours,
            headless=headless,
            data=data,
            broker=broker,
            mosquitto=mosquitto,
            port=port,
            seed=seed,
        )
    )
    started = False
    held = _stop_on_signals()
    try:
        try:
            the_demo.setup()
            the_demo.start()
            started = True
            _intro(the_demo)
            _watch(the_demo)
        except KeyboardInterrupt:
            with suppress(OSError):  # after SIGHUP the terminal may be gone: stop cleanly all the same
                click.echo("\nstopping…", err=True)
        except UserError:
            if started or the_demo.nodes or the_demo.mosquitto is not None:
                the_demo.stop()
            the_demo.cleanup()
            raise
        if not started:
            _stop_interrupted_startup(the_demo)
        the_demo.stop()
        _report(the_demo, the_demo.stats(Stats()))  # with what the last blocks brought
    finally:
        # whatever ended the demo (an exception, a second Ctrl-C while stopping), its Mosquitto
        # does not outlive it; a further Ctrl-C now waits until the broker is stopped
        with _signals_held():
            the_demo.stop_broker()
        _restore(held)
    if the_demo.broker_gone is not None:
        sys.exit(UserError.exit_code)  # its line came when it happened (_watch)


# Ctrl-C, SIGTERM (systemd, timeout, kill) and SIGHUP (the terminal closed): a clean stop
_STOPPING = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


def _stop_on_signals() -> dict:
    """SIGTERM and SIGHUP stop the demo as cleanly as Ctrl-C: each raises KeyboardInterrupt (as
    Python's SIGINT handler does), unless ignored (nohup: SIGHUP). Returns the handlers they had."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    return {
        signum: signal.signal(signum, stop)
        for signum in _STOPPING
        if signum != signal.SIGINT and signal.getsignal(signum) is not signal.SIG_IGN
    }


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        if handler is not None:  # None: not set from Python, and cannot be set back
            signal.signal(signum, handler)


@contextmanager
def _signals_held():
    """While the broker stops: Ctrl-C, SIGTERM and SIGHUP do nothing more (the stop is bounded:
    SIGTERM, then SIGKILL after 10 s), so that a further one cannot leave it running."""
    held = {signum: signal.signal(signum, lambda *_: None) for signum in _STOPPING}
    try:
        yield
    finally:
        _restore(held)


def _stop_interrupted_startup(the_demo) -> None:
    """A startup interrupted: stop what it had started, say that the demo did not run, exit 130."""
    the_demo.stop()
    if the_demo.temporary:
        the_demo.cleanup()
        where = ""
    else:
        where = f"; {the_demo.data} holds what it had set up (pass an empty --data folder next time)"
    click.echo(f"interrupted during startup: the demo did not run{where}", err=True)
    sys.exit(130)


def _report(the_demo, stats) -> None:
    """After a run: the summary, what the sequencer rejected, every store verified, where they are."""
    _summary(the_demo, stats)
    rejected = the_demo.nodes[0].metrics.rejected if the_demo.nodes else {}
    if rejected:
        click.echo("rejected by the sequencer: " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())))
        behind = falling_behind(
            the_demo.o.speed,
            rejected,
            the_demo.nodes[0].metrics.accepted,
            broker_down_s=the_demo.connections.down_s(),
        )
        if behind:
            click.echo(behind)
    for line in the_demo.verify():
        click.echo(f"verify {line}")
    if the_demo.temporary:
        the_demo.cleanup()
    else:
        click.echo(f"stores kept in {the_demo.data}: try `peerwatt verify --data {the_demo.data}/sequencer`")


def falling_behind(
    speed: float, rejected: dict[str, int], accepted: int, broker_down_s: float = 0.0
) -> str | None:
    """A line when messages expired before a block took them in numbers that mean this machine
    did not keep up with ``speed`` (measured on 2 cores: 12 homes keep up at 900, not at 1200;
    at 3600 nearly everything expires, since a tenth of a second is six minutes of ledger time),
    unless a node or agent was without the MQTT broker for ``broker_down_s`` seconds of the run:
    what waits for the broker expires whatever the speed (a QA pass's killed Mosquitto was
    blamed on the CPU)."""
    expired = rejected.get("expired", 0)
    if expired <= 0.05 * max(accepted, 1):
        return None
    if broker_down_s > 0:
        return (
            f"{expired} messages expired before a block took them: the MQTT broker was out of reach "
            f"for {broker_down_s:.0f} s of this run, and messages waiting for it expire whatever "
            "the speed"
        )
    return (
        f"this machine did not keep up with --speed {speed:g}: {expired} messages expired before a "
        "block took them, so few intervals cleared and settled; try a lower --speed (12 homes keep "
        "up at about 900 on 2 cores)"
    )


def _intro(the_demo) -> None:
    o = the_demo.o
    start = datetime.fromtimestamp(o.start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    mosquitto = the_demo.mosquitto
    broker = the_demo.broker_cfg.address if mosquitto is None else mosquitto.url
    click.echo(
        f"peerwatt demo: {o.homes} households, 1 sequencer + {o.validators} validators, "
        f"broker {broker}, clock x{o.speed:g} from {start}"
    )
    if mosquitto is not None:
        click.echo(
            f"Mosquitto: one account per node and meter, client certificates in {mosquitto.certs}, "
            f"ACL and log in {mosquitto.folder}"
        )
    if the_demo.dashboard_server is not None:
        click.echo(f"dashboard: http://127.0.0.1:{o.port}/   logins:")
        for name, password, note in the_demo.logins[:4]:
            click.echo(f"  {name:<9} {password}   ({note})")
        if len(the_demo.logins) > 4:
            click.echo(
                f"  … {len(the_demo.logins) - 4} more household logins in "
                f"{the_demo.data / 'dashboard' / 'demo-logins.txt'}"
            )
        (the_demo.data / "dashboard" / "demo-logins.txt").write_text(
            "".join(f"{n} {p} ({note})\n" for n, p, note in the_demo.logins)
        )
    click.echo(
        "Ctrl-C stops everything cleanly." if o.hours is None else f"running {o.hours:g} simulated hours…"
    )


def _table(the_demo, stats):
    from rich.table import Table

    now = datetime.fromtimestamp(the_demo.clock.now(), UTC).strftime("%a %H:%M UTC")
    table = Table(title=f"demo-street · simulated {now}", show_header=False, expand=False)
    online = sum(1 for h in the_demo.homes if h.agent is not None and h.agent.fault is None)
    rows = [
        ("intervals cleared", str(stats.intervals)),
        ("trades", str(stats.trades)),
        ("energy traded", f"{stats.volume_wh / 1000:.1f} kWh"),
        ("last clearing price", _price(stats.last_price)),
        ("settled trades", str(stats.settled)),
        ("chain height", str(stats.height)),
        ("seals on last block", f"{stats.seals} of {len(the_demo.nodes)}"),
        ("meters answering", f"{online} of {len(the_demo.homes)}"),
        ("MQTT broker", the_demo.broker_status() or "connected"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _watch(the_demo):
    from rich.console import Console
    from rich.live import Live

    from peerwatt.demo_community import Stats

    stats = Stats()
    console = Console(stderr=False)
    interactive = sys.stdout.isatty()
    last_print = 0.0
    with (
        Live(_table(the_demo, stats), console=console, refresh_per_second=4, transient=False)
        if interactive
        else _NoLive() as live
    ):
        while not the_demo.finished():
            time.sleep(0.25)
            gone = the_demo.broker_ended()
            if gone is not None:
                click.echo(f"error: {gone}", err=True)
                break
            the_demo.stats(stats)
            if interactive:
                live.update(_table(the_demo, stats))
            elif time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                click.echo(status_line(stats, the_demo.broker_status()))
    return stats


def status_line(stats, broker: str | None) -> str:
    """The headless status line; ``broker``: the demo's broker_status (None: all connected)."""
    line = f"height {stats.height}, {stats.intervals} intervals, {stats.trades} trades"
    return line if broker is None else f"{line}; {broker}"


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _summary(the_demo, stats) -> None:
    o = the_demo.o
    hours = (the_demo.clock.now() - o.start) / 3600
    click.echo(
        f"summary: {hours:.1f} simulated hours, {stats.intervals} intervals, {stats.trades} trades, "
        f"{stats.volume_wh / 1000:.1f} kWh traded, average price {_price(stats.average_price)}, "
        f"{stats.settled} settled, chain height {stats.height}"
    )
