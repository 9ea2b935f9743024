"""Full verification of the ledger (chain.verify.verify_store) on demand, in a background thread.

The run opens its own read-only store, re-checks every block from genesis with the app the
genesis names, and records the outcome with its timestamps in the accounts database, so the
explorer can show the last result to everyone. One run at a time, and a rest after each: a run
that took d seconds is followed by at least max(MIN_REST_S, REST_FACTOR * d) without one, so
whoever may start runs (every logged-in household) keeps the machine busy at most a tenth of the
time (found in a QA pass: back-to-back runs could keep a core busy all along on a large ledger).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from chain.engine import genesis_from_dict_bytes
from chain.store import Store, StoreError
from chain.verify import VerifyError, verify_store
from dashboard.accounts import Accounts
from market.apps import load_app

log = logging.getLogger(__name__)

REST_FACTOR = 9
MIN_REST_S = 10


class VerifyRunner:
    def __init__(self, data_dir: str | Path, accounts: Accounts) -> None:
        self.data_dir = Path(data_dir)
        self.accounts = accounts
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # (run id, its result) when the result could not be written to the accounts file
        self._unrecorded: tuple[int, dict[str, Any]] | None = None
        with accounts.lock:
            accounts.conn.execute(
                "UPDATE verify_runs SET status = 'interrupted', finished = ? WHERE status = 'running'",
                (int(time.time()),),
            )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def rest_s(self, now: float | None = None) -> int:
        """Seconds until a new run may start after the last one (0: now)."""
        latest = self.latest()
        if latest is None or latest["finished"] is None:
            return 0
        rest = max(MIN_REST_S, REST_FACTOR * (latest["finished"] - latest["started"]))
        return max(0, int(latest["finished"] + rest - (time.time() if now is None else now) + 0.999))

    def start(self, requested_by: str) -> bool:
        """Start a run; False if one is already running, or the last one ended too recently."""
        with self._lock:
            if self.running or self.rest_s() > 0:
                return False
            with self.accounts.lock:
                cur = self.accounts.conn.execute(
                    "INSERT INTO verify_runs (started, status, requested_by) VALUES (?, 'running', ?)",
                    (int(time.time()), requested_by),
                )
            run_id = cur.lastrowid
            self._thread = threading.Thread(target=self._run, args=(run_id,), name="verify", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, run_id: int) -> None:
        status, summary, bad_height, height = "error", "", None, None
        try:
            store = Store.open(self.data_dir, readonly=True)
            try:
                height = store.height()
                app = load_app(genesis_from_dict_bytes(store.genesis_doc()).app_name)
                report = verify_store(store, app)
                status, summary = "ok", report.summary()
            finally:
                store.close()
        except VerifyError as exc:
            status, summary, bad_height = (
                "failed",
                f"FAILED at height {exc.height}: {exc.problem}",
                exc.height,
            )
        except (StoreError, ValueError, ImportError) as exc:
            status, summary = "error", f"could not run: {exc}"
        finished = int(time.time())
        try:
            with self.accounts.lock:
                self.accounts.conn.execute(
                    "UPDATE verify_runs SET finished = ?, status = ?, summary = ?, bad_height = ?, height = ?"
                    " WHERE id = ?",
                    (finished, status, summary, bad_height, height, run_id),
                )
        except sqlite3.Error as exc:
            # found in a review: a full disk under dashboard.sqlite ended this thread with a
            # traceback and the run was shown as running until the next start; kept in memory
            result = {"finished": finished, "status": status, "height": height, "summary": summary}
            self._unrecorded = (run_id, {**result, "bad_height": bad_height})
            log.error(
                "the verify run's result could not be written to the accounts file (%s): %s", exc, summary
            )

    def latest(self) -> dict[str, Any] | None:
        with self.accounts.lock:
            row = self.accounts.conn.execute(
                "SELECT id, started, finished, status, height, summary, bad_height FROM verify_runs"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        keys = ("started", "finished", "status", "height", "summary", "bad_height")
        latest = dict(zip(keys, row[1:], strict=True))
        unrecorded = self._unrecorded
        if unrecorded is not None and unrecorded[0] == row[0] and latest["status"] == "running":
            latest |= unrecorded[1]  # its result, which the accounts file could not take
        return latest
