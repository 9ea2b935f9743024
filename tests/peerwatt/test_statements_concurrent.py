"""Two `peerwatt statements --corrections` runs at the same time issue each correction note once.

Found in a QA pass: two runs started together both issued a note for every household whose figures
changed (0006 and 0009 the same note correcting 0001, ...), and `statements pay` then paid both:
each run read the register's latest documents before it took the write lock, so the second one
decided on what it read before the first one's notes were kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chain.store import Store
from peerwatt import statements
from peerwatt.statements import issue_corrections
from tests.peerwatt.test_statements_month import Month, build_month, issue
from tests.support.cli import peerwatt


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


def issue_june(month: Month, billing: Path) -> list[dict]:
    store = Store.open(month.node, readonly=True)
    try:
        return issue(store, month, billing)
    finally:
        store.close()


def test_two_correction_runs_at_once_issue_each_note_once(
    month: Month, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing = tmp_path / "billing"
    june = issue_june(month, billing)
    # the first run holds the register while it writes its files; the second one starts then
    writing, second_read = threading.Event(), threading.Event()
    read = statements.IssuedStore.documents

    def documents(self, community, period):
        if threading.current_thread().name == "second":
            second_read.set()
        return read(self, community, period)

    monkeypatch.setattr(statements.IssuedStore, "documents", documents)

    def slow_write(docs: list[dict]) -> None:
        writing.set()
        second_read.wait(1.5)  # the old code read the register meanwhile; the new one waits for it

    results: dict[str, list[dict]] = {}
    errors: list[BaseException] = []

    def run(name: str, write) -> None:
        store = Store.open(month.node, readonly=True)
        try:
            results[name] = issue_corrections(store, billing, "2026-06", issued_at="2026-07-02", write=write)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    first = threading.Thread(target=run, args=("first", slow_write), name="first")
    first.start()
    assert writing.wait(30)
    second = threading.Thread(target=run, args=("second", None), name="second")
    second.start()
    first.join(60)
    second.join(60)
    assert not errors, errors
    assert results["first"], "the first run issues the notes"
    assert results["second"] == []  # it finds them issued
    notes = [*results["first"], *results["second"]]
    assert len({n["references"] for n in notes}) == len(notes)  # one note per corrected statement
    assert {n["references"] for n in notes} <= {d["number"] for d in june}


def test_two_cli_runs_at_once_issue_each_note_once(month: Month, tmp_path: Path) -> None:
    """The same with two processes, as the QA pass ran them (racing for real: not forced)."""
    billing = tmp_path / "billing"
    issue_june(month, billing)
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--corrections"]
    args += ["--billing", str(billing), "--issued-on", "2026-07-02"]
    outs: list = []

    def run(i: int) -> None:
        outs.append(peerwatt(*args, "--out", str(tmp_path / f"out-{i}")))

    runs = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(120)
    assert sorted(r.returncode for r in outs) == [0, 0], [r.stderr for r in outs]
    said = sorted(r.stdout.splitlines()[0] for r in outs)
    assert said[0].startswith("issued ")
    assert said[1] == "no correction notes and late statements to issue for 2026-06"
