"""Every reason a settlement can flag a trade is named and explained in docs/market.md."""

from __future__ import annotations

from pathlib import Path

from market.settlement import FLAGS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "market.md"


def test_every_settlement_flag_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    assert [flag for flag in FLAGS if f"`{flag}`" not in text] == []
