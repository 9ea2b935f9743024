"""Suite-wide test rules: in CI (CI=true) a test may not skip for a missing tool — it fails."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# Timing-based health checks fail spuriously on a loaded 2-core CI machine: correctness, not speed,
# is what property tests check here (speed lives in benchmarks/).
settings.register_profile(
    "peerwatt", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("peerwatt")

pytest_plugins = ["tests.support.mosquitto"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, path: str | None = None) -> str:
    """Return the path of an external tool; skip locally, fail in CI, when it is missing."""
    found = path if (path and os.path.exists(path)) else shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (CI must install it: see scripts/ensure-system-deps.sh)")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true, turn every skip into a failure so a missing tool cannot hide a test."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (not allowed): {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    """Modules holding a test marked ``paced`` (waiting on wall-clock market intervals or process
    restarts) are collected first, the rest in their order. ``make test`` hands each module to one
    of pytest-xdist's workers (``--dist loadfile``) in this order, so each paced module starts at
    once on a worker of its own and the rest of the suite runs beside them."""
    paced = {item.path for item in items if item.get_closest_marker("paced")}
    items.sort(key=lambda item: item.path not in paced)
