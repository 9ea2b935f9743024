"""The market's outcome of a study does not depend on its validators: they only re-check what the
sequencer proposes. So `--validators 0` is a faster way to the same report (docs/simulate.md)."""

from __future__ import annotations

from datetime import date

from peerwatt.simulation import SimOptions, run_simulation


def test_the_report_is_the_same_with_and_without_validators(tmp_path):
    outs = {}
    for validators in (0, 1):
        out = tmp_path / f"v{validators}"
        result = run_simulation(
            SimOptions(
                homes=6, days=0.3, start=date(2026, 6, 21), seed=7, validators=validators, workers=1, out=out
            )
        )
        assert result.verify.blocks > 0
        outs[validators] = out
    assert (outs[0] / "trades.csv").read_text().count("\n") > 1  # the sunny morning traded
    for name in ("trades.csv", "settlements.csv", "households.csv", "kpis.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
