"""Names from the ledger (a genesis or a vote: any string of up to 64 characters, line breaks and
control characters too) print safely on a statement: escaped, never a line break, cut to their
place with "...", the key id beside them.

Found in a QA pass: the member's own "Member:" line broke into a new line reading "Total to be paid
to you: 999.00"; a neighbour's "sold to" cell printed \\n\\r\\x07 raw; a right-to-left override
(U+202E) reversed a name; a long name printed over the kWh column (the cells are 80 mm wide and
were not clipped)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfReader

import tests.peerwatt.test_statements_month as M
from chain.canonical import loads_strict
from chain.genesis import genesis_from_dict
from market.billing import MeterInfo, VatSetting, member_statement, with_number
from peerwatt.statements import render_pdf
from tests.market.test_billing import DAY, T, view
from tests.peerwatt.test_payments import SEPA_TOML
from tests.peerwatt.test_statements_month import Month
from tests.support.cli import peerwatt

EVE = "Eve\nTotal to be paid to you: 999.00\r\x07"
LONG = "W" * 60 + "-end"  # 64 characters, the most a name holds
BIDI = "\u202eLIAM\u202c Huber\u200b"


def statement(member: str, names: dict[str, str], meter_name: str = "roof") -> dict:
    meters = dict(view().meters, s=MeterInfo("s", "alice", meter_name, "S1", 10_000, T - DAY))
    v = view(members=names, meters=meters)
    doc = member_statement(
        v, member, period="2026-06", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")
    )
    return with_number(doc, "c-2026-06-0001", "2026-07-01")


def printed(doc: dict) -> list[str]:
    return PdfReader(io.BytesIO(render_pdf(doc))).pages[0].extract_text().splitlines()


def width_mm(text: str, size: int = 9) -> float:
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", "", size)
    return pdf.get_string_width(text)


def test_a_name_with_a_line_break_prints_on_one_line_escaped() -> None:
    # alice's own name, and bob's (her buyer) on her "sold to" row
    lines = printed(statement("alice", {"alice": EVE, "bob": EVE}))
    assert not any(line.lstrip().startswith("Total to be paid") for line in lines), lines
    (member,) = [line for line in lines if line.startswith("Member: ")]
    assert member == "Member: Eve\\u000aTotal to be paid to you: 999.00\\u000d\\u0007 (alice)"
    (sold,) = [line for line in lines if line.lstrip().startswith("sold to")]
    # (cut to its cell, never inside an escape)
    assert sold.lstrip().startswith("sold to Eve\\u000aTotal to be paid to you: 999.00... 0.900 kWh"), sold
    assert "key id bob" in lines[lines.index(sold) + 1]
    assert all(c.isprintable() for line in lines for c in line)


def test_a_bidi_override_is_shown_escaped() -> None:
    lines = printed(statement("bob", {"alice": BIDI, "bob": "Bob"}))
    (bought,) = [line.lstrip() for line in lines if line.lstrip().startswith("bought from")]
    assert bought.startswith("bought from \\u202eLIAM\\u202c Huber\\u200b "), bought
    assert "\u202e" not in "".join(lines)


def test_a_decomposed_accent_prints_composed_and_other_scripts_as_question_marks() -> None:
    """The PDF's font is Latin-1: "José Muñoz" written decomposed (NFD) printed "Jose? Mu?oz" (a QA
    pass); it is composed first. A letter Latin-1 lacks prints as "?" (docs/billing.md, Names)."""
    nfd = "Jose\u0301 Mun\u0303oz"
    lines = printed(statement("alice", {"alice": nfd, "bob": "\u738b\u5c0f\u660e"}))
    (member,) = [line for line in lines if line.startswith("Member: ")]
    assert member == "Member: Jos\u00e9 Mu\u00f1oz (alice)", member
    (sold,) = [line.lstrip() for line in lines if line.lstrip().startswith("sold to")]
    assert sold.startswith("sold to ??? "), sold


def test_a_long_name_is_cut_to_its_cell_with_its_key_id_beside_it() -> None:
    lines = printed(statement("bob", {"alice": LONG, "bob": LONG}, meter_name=LONG))
    (bought,) = [line for line in lines if line.lstrip().startswith("bought from")]
    name_cell = bought.split("...")[0] + "..."
    assert name_cell.lstrip().startswith("bought from WWWW") and "-end" not in bought
    assert width_mm(name_cell) <= 78  # the 80 mm cell less its margins: not over the kWh column
    assert bought.endswith("0.900 kWh 10.00 ct/kWh")
    assert lines[lines.index(bought) + 1].strip() == "key id alice"
    (member,) = [line for line in lines if line.startswith("Member: ")]
    assert member.endswith("... (bob)") and width_mm(member, 10) <= 188
    lines = printed(statement("alice", {"alice": "Alice", "bob": "Bob"}, meter_name=LONG))
    (meter,) = [line for line in lines if line.startswith("Meter ")]
    assert meter.startswith("Meter WWW") and "-end" not in meter and "..." in meter


NAMES = [EVE, BIDI, '<Ann & "Bob"> ]]></Nm><Nm>Mallory</Nm>&amp;', LONG]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Month:
    """The simulated June of test_statements_month with these member names in its genesis."""
    made = M.make_community

    def named(**kw):
        c = made(**kw)
        d = c.genesis.doc
        members = list(d["members"].values())
        for m, name in zip(members, NAMES, strict=True):
            m["name"] = name
        c.genesis = genesis_from_dict(
            {
                "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
                "chain": {"sequencer": d["chain"]["sequencer"]},
                "app": d["app"],
                "validators": list(d["validators"].values()),
                "members": members,
                "meters": list(d["meters"].values()),
            }
        )
        return c

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(M, "make_community", named)
        return M.build_month(tmp_path_factory.mktemp("hostile"))


def test_the_cli_prints_ledger_names_on_one_line(hostile: Month, tmp_path: Path) -> None:
    billing, out = tmp_path / "billing", tmp_path / "out"
    billing.mkdir()
    (billing / "billing.toml").write_text(SEPA_TOML)
    args = ["statements", "--data", str(hostile.node), "--period", "2026-06", "--out", str(out)]
    res = peerwatt(
        *args, "--billing", str(billing), "--height", str(hostile.issue_height), "--issued-on", "2026-07-01"
    )
    assert res.returncode == 0, res.stderr
    docs = [loads_strict(p.read_bytes()) for p in sorted(out.glob("*.json"))]
    assert {d["member_name"] for d in docs} >= set(NAMES)
    for doc in docs:  # every PDF: the member's line is one line, its name escaped
        lines = PdfReader(out / f"{doc['number']}.pdf").pages[0].extract_text().splitlines()
        assert [line for line in lines if line.startswith("Member: ")] != []
        assert not any(line.lstrip().startswith("Total to be paid") for line in lines)
    # no household has bank details: each one named in a warning of one line, escaped
    res = peerwatt("statements", "pay", "--billing", str(billing), "--period", "2026-06", "--out", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    warnings = res.stderr.splitlines()
    dues = [d for d in docs if d["shown"]["total"]]
    assert len(warnings) == len(dues) + 1 and all(w.isprintable() for w in warnings), warnings
    eve = next(d for d in dues if d["member_name"] == EVE)
    assert f"warning: Eve\\u000aTotal to be paid to you: 999.00\\u000d\\u0007 ({eve['member']}) left out" in (
        res.stderr
    )
    res = peerwatt("statements", "mark-paid", "--billing", str(billing), "--on", "2026-07-09", eve["number"])
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    assert line.endswith("Eve\\u000aTotal to be paid to you: 999.00\\u000d\\u0007, on 2026-07-09")
