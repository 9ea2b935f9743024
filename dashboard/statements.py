"""The statements the treasurer issued (issue 20): read-only access to the billing folder's register
``issued.sqlite``, written by `peerwatt statements` (peerwatt/statements.py; layout in
docs/billing.md). The dashboard never writes it and never computes a statement: it lists what was
issued, with its total, the ledger height it was computed from, and whether it was marked paid."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTER = "issued.sqlite"
PERIOD_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
KIND_WORDS = {"statement": "statement", "credit_note": "credit note", "debit_note": "debit note"}


class RegisterError(Exception):
    """The register cannot be read; the message says why in one line."""


@dataclass(frozen=True)
class Issued:
    """One issued document as the list shows it (money in micro-units, shown total in whole cents
    as micro-units)."""

    number: str
    period: str
    kind: str
    member: str
    member_name: str
    issued_at: str
    height: int
    references: str | None
    total: int
    shown_total: int
    currency: str
    final: bool
    paid_on: str | None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RegisterError(f"cannot open {path}: {exc}") from None


def issued(billing_dir: Path, community: str, period: str | None = None) -> list[Issued]:
    """The documents issued for ``community`` (one period, or all), newest period first, in number
    order within a period; an empty list when nothing was issued yet."""
    conn = _connect(billing_dir / REGISTER)
    if conn is None:
        return []
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        paid = "p.paid_on" if "payments" in tables else "NULL"
        join = " LEFT JOIN payments p ON p.number = d.number" if "payments" in tables else ""
        sql = (
            f"SELECT d.number, d.period, d.kind, d.member, d.issued_at, d.height, d.refers_to, d.doc, {paid}"
            f" FROM documents d{join} WHERE d.community = ?"
        )
        args: list[Any] = [community]
        if period is not None:
            sql += " AND d.period = ?"
            args.append(period)
        rows = conn.execute(sql + " ORDER BY d.period DESC, d.seq", args).fetchall()
    except sqlite3.Error as exc:
        raise RegisterError(f"cannot read {billing_dir / REGISTER}: {exc}") from None
    finally:
        conn.close()
    out = []
    for number, per, kind, member, issued_at, height, refers_to, doc, paid_on in rows:
        try:
            d = json.loads(bytes(doc))
            figures = d if kind == "statement" else d["corrected"]
            shown_total = d["shown"]["total"] if kind == "statement" else d["shown_total"]
            total = d["total"]
        except (ValueError, TypeError, KeyError) as exc:
            raise RegisterError(
                f"cannot read {billing_dir / REGISTER}: document {number} is damaged ({exc!r})"
            ) from None
        out.append(
            Issued(
                number=number,
                period=per,
                kind=kind,
                member=member,
                member_name=figures.get("member_name", ""),
                issued_at=issued_at,
                height=height,
                references=refers_to,
                total=total,
                shown_total=shown_total,
                currency=figures.get("currency", "EUR"),
                final=bool(figures.get("final", False)),
                paid_on=paid_on,
            )
        )
    return out


def periods(docs: list[Issued]) -> list[dict[str, Any]]:
    """Per period: how many documents, the sums to collect and to pay out (shown cents), and how
    many are still unpaid."""
    by: dict[str, dict[str, Any]] = {}
    for d in docs:
        p = by.setdefault(
            d.period, {"period": d.period, "documents": 0, "collect": 0, "pay_out": 0, "unpaid": 0}
        )
        p["documents"] += 1
        if d.shown_total < 0:
            p["collect"] += -d.shown_total
        else:
            p["pay_out"] += d.shown_total
        p["unpaid"] += d.paid_on is None and d.shown_total != 0
    return [by[k] for k in sorted(by, reverse=True)]
