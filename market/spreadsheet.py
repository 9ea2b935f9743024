"""Text written into CSV files that people open in a spreadsheet (trades, reports, statements).

A member chooses its own name, and names reach other households' CSV files: a cell that starts
like a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return) would run in Excel or
LibreOffice (OWASP "CSV injection"), quoting or not. Such a cell is written with a leading
apostrophe, which spreadsheets show as text. Numbers, negative ones written as text included,
stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def text_cell(value: Any) -> Any:
    """``value`` with a leading apostrophe if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
