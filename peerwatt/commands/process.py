"""What the long-running commands (`node run`, `agent`) share: log set-up and stopping on signals."""

from __future__ import annotations

import logging
import signal
import threading


def setup_logging(verbose: bool, quiet: dict[str, int]) -> None:
    """Timestamped logs at INFO (DEBUG with --verbose); ``quiet`` lowers chatty libraries' levels."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM (systemd), for a clean shutdown."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop
